package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRotate: `qat ptq --rotate hadamard` writes a rotated checkpoint
// (untied, qat_down_hadamard in config.json) that qat eval scores as ptq
// did; its packed export keeps the transform, and the integer kernels
// (eval --packed) give the fake-quant perplexity; GGUF and
// compressed-tensors refuse it with exit 2 saying why, --format hf folds
// it away. A QAT run with quant.rotate rotates init_from once: resumed
// from a checkpoint it is not rotated again and logs the losses the run
// logged the first time. Bad flags are exit 2 naming them.
func TestRotate(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	fp := filepath.Join(tmp, "fp")
	if msg, code := qat(t, "train", "--config", writeConfig(t, strings.Replace(tinyRun, "steps: 40", "steps: 10", 1), data, fp)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--rotate", "spin"}, "--rotate"},
		{[]string{"--rotate", "hadamard", "--method", "qqq", "--preset", "w4a8-qqq"}, "--method qqq"},
		{[]string{"--rotate-seed", "3"}, "--rotate-seed"},
	} {
		args := append([]string{"ptq", "--model", fp, "--out", filepath.Join(tmp, "bad"), "--data", data, "--preset", "w4a8"}, c.args...)
		if msg, code := qat(t, args...); code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, want 2 naming %s\n%s", c.args, code, c.want, msg)
		}
	}

	rot := filepath.Join(tmp, "rot")
	msg, code := qat(t, "ptq", "--rotate", "hadamard", "--rotate-seed", "4", "--method", "gptq", "--preset", "w4a8", "--model", fp, "--out", rot,
		"--data", data, "--batch", "4", "--calib-batches", "2")
	if code != 0 || !strings.Contains(msg, "rotated: residual stream by Hadamard 64") || !strings.Contains(msg, "the tied head was untied") {
		t.Fatalf("ptq --rotate: %d\n%s", code, msg)
	}
	ptqLoss := lossIn(t, msg)
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(rot, "config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil || cfg["qat_down_hadamard"] != "full" || cfg["tie_word_embeddings"] != false {
		t.Fatalf("config.json of the rotated checkpoint: %v\n%s", err, b)
	}
	msg, code = qat(t, "eval", "--model", rot, "--data", data, "--seq", "32", "--batch", "8")
	if code != 0 || lossIn(t, msg) != ptqLoss {
		t.Fatalf("eval of the rotated checkpoint: %d, loss %s, ptq printed %s\n%s", code, lossIn(t, msg), ptqLoss, msg)
	}

	packed := filepath.Join(tmp, "packed")
	if msg, code := qat(t, "export", "--model", rot, "--format", "safetensors-packed", "--out", packed); code != 0 {
		t.Fatalf("export packed: %d\n%s", code, msg)
	}
	text := filepath.Join(tmp, "text.txt")
	os.WriteFile(text, []byte(strings.Repeat("The state of the Union is strong, and the people of the United States are at peace. ", 12)), 0o644)
	ppl := func(args ...string) float64 {
		msg, code := qat(t, append([]string{"eval", "--model", packed, "--text", text, "--ctx", "32"}, args...)...)
		i := strings.Index(msg, "perplexity ")
		if code != 0 || i < 0 {
			t.Fatalf("eval %v: %d\n%s", args, code, msg)
		}
		v, _ := strconv.ParseFloat(strings.Fields(msg[i:])[1], 64)
		return v
	}
	if a, b := ppl(), ppl("--packed"); math.Abs(b/a-1) > 1e-3 {
		t.Errorf("perplexity %g with the integer kernels, %g with the fake-quant weights", b, a)
	}
	if msg, code := qat(t, "generate", "--model", packed, "--prompt", "The", "--max-tokens", "5", "--temperature", "0"); code != 0 {
		t.Errorf("generate: %d\n%s", code, msg)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "gguf", "--quant", "q8_0", "--out", filepath.Join(tmp, "rot.gguf")}, "llama.cpp has no online Hadamard transform"},
		{[]string{"--format", "compressed-tensors", "--out", filepath.Join(tmp, "ct")}, "vLLM has no online Hadamard transform"},
	} {
		if msg, code := qat(t, append([]string{"export", "--model", rot}, c.args...)...); code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("export %v: exit %d, want 2 saying %q\n%s", c.args, code, c.want, msg)
		}
	}
	hf := filepath.Join(tmp, "hf")
	if msg, code := qat(t, "export", "--model", rot, "--format", "hf", "--dtype", "f32", "--out", hf); code != 0 {
		t.Fatalf("export hf: %d\n%s", code, msg)
	}
	if b, _ := os.ReadFile(filepath.Join(hf, "config.json")); strings.Contains(string(b), "qat_down_hadamard") {
		t.Errorf("the hf export keeps qat_down_hadamard:\n%s", b)
	}

	// QAT from init_from with quant.rotate, 6 steps with checkpoints at 3
	// and 6; then resumed from step 3
	run := filepath.Join(tmp, "qat")
	qcfg := strings.NewReplacer("steps: 40", "steps: 6", "ckpt_every: 5", "ckpt_every: 3", "keep_ckpts: 2", "keep_ckpts: 3").Replace(tinyRun) +
		"init_from: " + fp + "\nquant:\n  rotate: hadamard\n  preset: w4a8\n  calib_batches: 1\n"
	msg, code = qat(t, "train", "--config", writeConfig(t, qcfg, data, run))
	if code != 0 || strings.Count(msg, "rotated: residual stream") != 1 {
		t.Fatalf("train with quant.rotate: %d\n%s", code, msg)
	}
	first := losses(t, run)
	if b, _ := os.ReadFile(filepath.Join(run, "config.yaml")); !strings.Contains(string(b), "down_hadamard: full") || !strings.Contains(string(b), "tied_embeddings: false") {
		t.Fatalf("config.yaml does not record the rotated model:\n%s", b)
	}
	os.RemoveAll(filepath.Join(run, "ckpt-0000006"))
	os.WriteFile(filepath.Join(run, "latest"), []byte("ckpt-0000003\n"), 0o644)
	msg, code = qat(t, "train", "--resume", run)
	if code != 0 || strings.Contains(msg, "rotated") || !strings.Contains(msg, "resuming from") {
		t.Fatalf("resume: %d (a resumed run must not rotate)\n%s", code, msg)
	}
	again := losses(t, run)
	for s := 1; s <= 6; s++ {
		if first[s] == "" || again[s] != first[s] {
			t.Errorf("step %d: loss %s resumed, %s the first time", s, again[s], first[s])
		}
	}
}
