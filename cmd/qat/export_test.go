package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/checkpoint"
	"qat/data/bpe"
	"qat/layers"
	qq "qat/qat"
)

// exportCheckpoint writes a small checkpoint prepared with preset ("" for
// full precision) and returns its directory.
func exportCheckpoint(t *testing.T, preset string) string {
	t.Helper()
	text := strings.Repeat("We the people of the United States, in order to form a more perfect Union. ", 20)
	tok, err := bpe.Train([]string{text}, 288)
	if err != nil {
		t.Fatal(err)
	}
	m := layers.New(layers.Config{Vocab: tok.VocabSize(), Dim: 64, Layers: 1, Heads: 2, KVHeads: 1, FFNHidden: 128, RopeTheta: 10000,
		NormEps: 1e-5, Tied: true, MaxSeq: 32})
	m.Init(5)
	var rules []qq.Rule
	if preset != "" {
		rules = qq.Presets[preset]
		if err := qq.Prepare(m, rules); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "ckpt-"+preset)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Write(dir, m, tok, rules); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestExportFlags: bad flags are exit 2 naming the flag, before the model
// is read (the model path does not exist); good ones write the directory.
func TestExportFlags(t *testing.T) {
	tmp := t.TempDir()
	missing := filepath.Join(tmp, "no-such-model")
	out := filepath.Join(tmp, "out")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "onnx"}, "--format"},
		{[]string{"--format", "hf", "--dtype", "fp16"}, "--dtype"},
		{[]string{"--format", "hf", "--max-shard-size", "5XB"}, "--max-shard-size"},
		{[]string{"--format", "hf", "--max-shard-size", "0"}, "--max-shard-size"},
		{[]string{"--format", "hf", "--quant", "q8_0"}, "--quant"},
		{[]string{"--format", "compressed-tensors", "--dtype", "int8"}, "--dtype"},
		{[]string{"--format", "gguf", "--max-shard-size", "1GB"}, "--max-shard-size"},
	} {
		msg, code := qat(t, append([]string{"export", "--model", missing, "--out", out}, c.args...)...)
		if code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, want 2 naming %s\n%s", c.args, code, c.want, msg)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a refused export wrote %s", out)
	}
	ck := exportCheckpoint(t, "w4a16-g32")
	msg, code := qat(t, "export", "--model", ck, "--format", "hf", "--out", out, "--max-shard-size", "20KB")
	if code != 0 {
		t.Fatalf("hf export: %d\n%s", code, msg)
	}
	for _, f := range []string{"config.json", "generation_config.json", "tokenizer.json", "model.safetensors.index.json", "model-00006-of-00006.safetensors"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s: %v\n%s", f, err, msg)
		}
	}
	// its own output is replaced
	if msg, code := qat(t, "export", "--model", ck, "--format", "hf", "--out", out, "--dtype", "f32"); code != 0 {
		t.Fatalf("hf export again: %d\n%s", code, msg)
	}
	if _, err := os.Stat(filepath.Join(out, "model.safetensors")); err != nil {
		t.Errorf("the second export did not replace the first: %v", err)
	}
	// a directory qat did not write, and the input itself, are refused
	// (exit 2 naming the path) and left as they were
	user := filepath.Join(tmp, "mine")
	os.MkdirAll(user, 0o755)
	os.WriteFile(filepath.Join(user, "notes.txt"), []byte("mine"), 0o644)
	for _, args := range [][]string{{"--out", user}, {"--out", ck, "--force"}, {"--out", filepath.Dir(ck), "--force"}} {
		for _, f := range []string{"hf", "compressed-tensors"} {
			msg, code := qat(t, append([]string{"export", "--model", ck, "--format", f}, args...)...)
			if code != 2 || !strings.Contains(msg, filepath.Clean(args[1])) {
				t.Errorf("%s %v: exit %d, want 2 naming %s\n%s", f, args, code, args[1], msg)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(user, "notes.txt")); string(b) != "mine" {
		t.Errorf("the user's directory changed")
	}
	if _, err := os.Stat(filepath.Join(ck, "model.safetensors")); err != nil {
		t.Errorf("the input changed: %v", err)
	}
	// compressed-tensors: a preset vLLM runs, and one it does not (exit 2
	// naming the nearest it runs)
	ct := filepath.Join(tmp, "ct")
	if msg, code := qat(t, "export", "--model", exportCheckpoint(t, "w8a8"), "--format", "compressed-tensors", "--out", ct); code != 0 ||
		!strings.Contains(msg, "int-quantized") {
		t.Fatalf("compressed-tensors export: %d\n%s", code, msg)
	}
	msg, code = qat(t, "export", "--model", exportCheckpoint(t, "w4a4"), "--format", "compressed-tensors", "--out", filepath.Join(tmp, "ct4"))
	if code != 2 || !strings.Contains(msg, "nearest is w8a8") {
		t.Errorf("w4a4 to compressed-tensors: exit %d, want 2 naming w8a8\n%s", code, msg)
	}
	if _, err := os.Stat(filepath.Join(tmp, "ct4")); err == nil {
		t.Errorf("a refused export left its directory")
	}
}

// TestExportEval: the checkpoint and its exports score the same text alike:
// weight-only w4a16-g32 through --format hf and compressed-tensors (f32:
// the fake-quant weights exactly); w8a8 through compressed-tensors,
// read back with its activation quantizers (and on the integer kernels,
// --packed), as the checkpoint and safetensors-packed.
func TestExportEval(t *testing.T) {
	tmp := t.TempDir()
	text := filepath.Join(tmp, "text.txt")
	os.WriteFile(text, []byte(strings.Repeat("We the people of the United States, in order to form a more perfect Union. ", 12)), 0o644)
	ppl := func(model string, args ...string) string {
		msg, code := qat(t, append([]string{"eval", "--model", model, "--text", text, "--ctx", "32"}, args...)...)
		i := strings.Index(msg, "perplexity ")
		if code != 0 || i < 0 {
			t.Fatalf("eval %s %v: %d\n%s", model, args, code, msg)
		}
		return strings.Fields(msg[i:])[1]
	}
	for _, c := range []struct {
		preset  string
		formats []string
	}{{"w4a16-g32", []string{"hf", "compressed-tensors"}}, {"w8a8", []string{"compressed-tensors", "safetensors-packed"}}} {
		ck := exportCheckpoint(t, c.preset)
		want := ppl(ck)
		for _, f := range c.formats {
			out := filepath.Join(tmp, c.preset+"-"+f)
			args := []string{"export", "--model", ck, "--format", f, "--out", out}
			if f != "safetensors-packed" {
				args = append(args, "--dtype", "f32")
			}
			if msg, code := qat(t, args...); code != 0 {
				t.Fatalf("%v: %d\n%s", args, code, msg)
			}
			if got := ppl(out); got != want {
				t.Errorf("%s as %s: perplexity %s, the checkpoint's %s", c.preset, f, got, want)
			}
			if c.preset == "w8a8" {
				if got := ppl(out, "--packed"); got != want {
					t.Errorf("%s as %s on the integer kernels: perplexity %s, the checkpoint's %s", c.preset, f, got, want)
				}
			}
		}
	}
}
