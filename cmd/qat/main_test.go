package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qat/data/safetensors"
)

var qatBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qat-cli-test")
	if err != nil {
		panic(err)
	}
	qatBin = filepath.Join(dir, "qat")
	if out, err := exec.Command("go", "build", "-o", qatBin, ".").CombinedOutput(); err != nil {
		panic("building qat: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func qat(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(qatBin, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// smallData prepares a dataset of a few SOTU addresses with a 512-token
// tokenizer, once per test binary.
var smallDataDir string

func smallData(t *testing.T) string {
	t.Helper()
	if smallDataDir != "" {
		return smallDataDir
	}
	sotu := filepath.Join("..", "..", "..", "shared", "data", "sotu")
	files, _ := filepath.Glob(filepath.Join(sotu, "18[0-2]*.txt"))
	if len(files) < 10 {
		// make test (CI) sets QAT_REQUIRE_DATA: there a missing corpus is
		// a failure, not a reason to test nothing
		if os.Getenv("QAT_REQUIRE_DATA") == "1" {
			t.Fatalf("QAT_REQUIRE_DATA=1 but %s holds no addresses 1800-1829", sotu)
		}
		t.Skip("../shared/data/sotu not found")
	}
	out := filepath.Join(os.TempDir(), "qat-test-data-"+time.Now().Format("150405.000000"))
	args := []string{"data", "prepare", "--vocab", "512", "--out", out}
	for _, f := range files {
		args = append(args, "--input", f)
	}
	if msg, code := qat(t, args...); code != 0 {
		t.Fatalf("data prepare: %d\n%s", code, msg)
	}
	smallDataDir = out
	return out
}

const tinyRun = `model:
  vocab: 512
  dim: 64
  layers: 2
  heads: 4
  kv_heads: 2
  ffn_hidden: 128
  rope_theta: 10000
  norm_eps: 1.0e-5
  tied_embeddings: true
  max_seq: 32
data:
  dir: DATA
train:
  steps: 40
  batch: 4
  seq: 32
  lr: 3.0e-3
  warmup: 5
  eval_every: 0
  ckpt_every: 5
  keep_ckpts: 2
  threads: 2
  log_every: 1
out_dir: OUT
`

func writeConfig(t *testing.T, text, dataDir, out string) string {
	p := filepath.Join(t.TempDir(), "run.yaml")
	text = strings.ReplaceAll(strings.ReplaceAll(text, "DATA", dataDir), "OUT", out)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// lossIn returns the loss of the last "loss X" a command printed (the
// validation line of ptq and eval).
func lossIn(t *testing.T, s string) string {
	i := strings.LastIndex(s, "loss ")
	if i < 0 {
		t.Fatalf("no loss in %q", s)
	}
	return strings.Fields(s[i:])[1]
}

// losses reads the per-step training losses of a run's metrics.jsonl.
func losses(t *testing.T, out string) map[int]string {
	f, err := os.Open(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[int]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p struct {
			Step int              `json:"step"`
			Loss *json.RawMessage `json:"loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("metrics line %q: %v", sc.Text(), err)
		}
		if p.Loss != nil {
			if _, dup := m[p.Step]; dup {
				t.Fatalf("step %d logged twice", p.Step)
			}
			m[p.Step] = string(*p.Loss)
		}
	}
	return m
}

// TestResumeAfterKillIsExact: a run killed with SIGKILL at a random moment
// and resumed logs, from every step on, exactly the losses of a run that
// was never interrupted.
func TestResumeAfterKillIsExact(t *testing.T) {
	data := smallData(t)
	t.Run("lr-qat", func(t *testing.T) {
		resumeAfterKill(t, data, tinyRun+lrqatRun, true)
	})
	for _, state := range []string{"fp32", "int8", "fp8"} {
		t.Run(state, func(t *testing.T) {
			// small blocks and threshold: every matrix of the test model
			// gets 8-bit moments
			run := tinyRun + "optimizer:\n  state: " + state + "\n  block: 64\n  min_8bit_size: 1000\n"
			resumeAfterKill(t, data, run, state == "fp32")
		})
	}
}

func resumeAfterKill(t *testing.T, data, tinyRun string, full bool) {
	ref := filepath.Join(t.TempDir(), "ref")
	if msg, code := qat(t, "train", "--config", writeConfig(t, tinyRun, data, ref)); code != 0 {
		t.Fatalf("reference run: %d\n%s", code, msg)
	}
	want := losses(t, ref)
	if len(want) != 40 {
		t.Fatalf("reference run logged %d steps", len(want))
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	out := filepath.Join(t.TempDir(), "killed")
	cmd := exec.Command(qatBin, "train", "--config", writeConfig(t, tinyRun, data, out))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killedAt := stopAfterCheckpoint(t, cmd, out, syscall.SIGKILL, rng)
	if msg, code := qat(t, "train", "--resume", out); code != 0 {
		t.Fatalf("resume: %d\n%s", code, msg)
	}
	got := losses(t, out)
	t.Logf("killed after %d logged steps; resumed and finished with %d", killedAt, len(got))
	for step := 1; step <= 40; step++ {
		if got[step] != want[step] {
			t.Errorf("step %d: loss %s after kill and resume, %s uninterrupted", step, got[step], want[step])
		}
	}
	if !full {
		return
	}
	// The finished run evaluates and generates.
	msg, code := qat(t, "eval", "--model", out, "--data", data, "--seq", "32")
	if code != 0 || !strings.Contains(msg, "bits per byte") {
		t.Errorf("eval: %d\n%s", code, msg)
	}
	msg, code = qat(t, "generate", "--model", out, "--prompt", "The", "--max-tokens", "10")
	if code != 0 || !strings.HasPrefix(msg, "The") {
		t.Errorf("generate: %d\n%s", code, msg)
	}
	// A finished run resumed again does nothing and changes nothing.
	if msg, code := qat(t, "train", "--resume", out); code != 0 || len(losses(t, out)) != 40 {
		t.Errorf("resuming a finished run: %d\n%s", code, msg)
	}
}

// stopAfterCheckpoint waits for the run's first checkpoint, sends sig at
// a random moment after it, and returns how many steps the run had
// logged. It fails the test if no checkpoint appears, if the run ended
// before the signal landed, or if it did not die of (SIGKILL) or exit on
// (SIGTERM, SIGINT: status 128+n) the signal.
func stopAfterCheckpoint(t *testing.T, cmd *exec.Cmd, out string, sig syscall.Signal, rng *rand.Rand) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "latest")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no checkpoint in %s after 60 s", out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v (the run ended first)", sig, err)
	}
	cmd.Wait()
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case sig == syscall.SIGKILL && !(ws.Signaled() && ws.Signal() == syscall.SIGKILL):
		t.Fatalf("the run was not killed (%v): it finished before the signal", cmd.ProcessState)
	case sig != syscall.SIGKILL && ws.ExitStatus() != 128+int(sig):
		t.Fatalf("after %v the run exited %v, want %d", sig, cmd.ProcessState, 128+int(sig))
	}
	n := len(losses(t, out))
	if n >= 40 {
		t.Fatalf("the run had logged all %d steps when stopped", n)
	}
	return n
}

// TestNonFiniteLossStops: a model whose weights hold a NaN stops at the
// first step with a clear message, and leaves no checkpoint.
func TestNonFiniteLossStops(t *testing.T) {
	data := smallData(t)
	good := filepath.Join(t.TempDir(), "good")
	cfg := strings.Replace(tinyRun, "steps: 40", "steps: 5", 1)
	if msg, code := qat(t, "train", "--config", writeConfig(t, cfg, data, good)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	ck := filepath.Join(good, "ckpt-0000005", "model.safetensors")
	f, err := safetensors.Read(ck)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range f.Tensors {
		if tt.Name == "model.norm.weight" {
			v, _ := tt.F32()
			v[3] = float32(math.NaN())
			f.Tensors[i] = safetensors.FromF32(tt.Name, tt.Shape, v)
		}
	}
	if err := safetensors.Write(ck, f.Tensors, nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "nan")
	msg, code := qat(t, "train", "--config", writeConfig(t, cfg, data, out), "--set", "init_from="+filepath.Join(good, "ckpt-0000005"))
	if code == 0 || !strings.Contains(msg, "not finite") {
		t.Errorf("NaN weights: exit %d\n%s", code, msg)
	}
	if _, err := os.Stat(filepath.Join(out, "latest")); err == nil {
		t.Error("a checkpoint was written after a NaN loss")
	}
}

// TestBadInputs: every malformed config in testdata/bad, and malformed
// files made from good ones, give exit status 2 and name the problem.
func TestBadInputs(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	expect := map[string]string{
		"unknown-key.yaml": `unknown field "learning_rate"`, "negative-lr.yaml": "train.lr", "wrong-type.yaml": "layers",
		"duplicate-key.yaml": "already defined", "seq-too-long.yaml": "train.seq", "heads-dim.yaml": "model.dim",
		"kv-heads.yaml": "model.kv_heads", "optimizer-name.yaml": "optimizer.name", "min-lr.yaml": "train.min_lr",
		"vocab-mismatch.yaml": "model.vocab 1024 does not match", "missing-data.yaml": "/nonexistent/qat-data",
		"no-data-section.yaml": "data.dir", "not-yaml.yaml": "not-yaml.yaml", "zero-batch.yaml": "train.batch",
		"nan-eps.yaml":    "model.norm_eps",
		"quant-bits.yaml": "quant.rules[0].weights.bits", "quant-group.yaml": "group_size 48 does not divide",
		"quant-fp-asym.yaml": "quant.rules[0].activations.symmetric", "quant-no-match.yaml": "matches no linear layer",
		"quant-preset.yaml": "quant.preset", "quant-act-mse-token.yaml": "quant.rules[0].activations.scale",
		"quant-kv-group.yaml": "quant.rules[0].kv_cache on model.layers.0.self_attn", "quant-calib-batches.yaml": "quant.calib_batches",
		"engine.yaml": "train.engine", "device.yaml": "train.device", "device-lora.yaml": "train.device",
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if len(files) != len(expect) {
		t.Fatalf("%d files in testdata/bad, %d expectations", len(files), len(expect))
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		p := filepath.Join(tmp, filepath.Base(f))
		os.WriteFile(p, []byte(strings.ReplaceAll(strings.ReplaceAll(string(b), "DATA", data), "OUT", filepath.Join(tmp, "out-"+filepath.Base(f)))), 0o644)
		msg, code := qat(t, "train", "--config", p)
		if code != 2 || !strings.Contains(msg, expect[filepath.Base(f)]) || strings.Contains(msg, "panic") {
			t.Errorf("%s: exit %d, want 2 and a message with %q:\n%s", filepath.Base(f), code, expect[filepath.Base(f)], msg)
		}
	}

	// A finished tiny run to break files of.
	good := filepath.Join(tmp, "good")
	if msg, code := qat(t, "train", "--config", writeConfig(t, strings.Replace(tinyRun, "steps: 40", "steps: 5", 1), data, good)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	ck := filepath.Join(good, "ckpt-0000005")
	copyDir := func(src string) string {
		dst := filepath.Join(tmp, "copy", filepath.Base(src)+time.Now().Format("150405.000000000"))
		os.MkdirAll(dst, 0o755)
		ents, _ := os.ReadDir(src)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(src, e.Name()))
			os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
		}
		return dst
	}
	truncated := copyDir(ck)
	st, _ := os.ReadFile(filepath.Join(truncated, "model.safetensors"))
	os.WriteFile(filepath.Join(truncated, "model.safetensors"), st[:len(st)/2], 0o644)
	badTok := copyDir(data)
	os.WriteFile(filepath.Join(badTok, "tokenizer.json"), []byte(`{"model": {"type": "Unigram"}}`), 0o644)
	corrupt := copyDir(data)
	sh, _ := filepath.Glob(filepath.Join(corrupt, "train-*.parquet"))
	b, _ := os.ReadFile(sh[0])
	b[len(b)/3] ^= 0x55
	os.WriteFile(sh[0], b, 0o644)
	emptyDir := filepath.Join(tmp, "empty")
	os.MkdirAll(emptyDir, 0o755)
	os.WriteFile(filepath.Join(emptyDir, "a.txt"), nil, 0o644)
	latin1 := filepath.Join(tmp, "latin1.txt")
	os.WriteFile(latin1, []byte("caf\xe9 au lait"), 0o644)
	cfg := writeConfig(t, tinyRun, data, filepath.Join(tmp, "o2"))
	lsqAct := filepath.Join(tmp, "lsq-act.json")
	os.WriteFile(lsqAct, []byte(`[{"match": "model.layers.*", "activations": {"format": "int", "bits": 8, "granularity": "tensor", "scale": "lsq"}}]`), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"eval", "--model", truncated, "--data", data, "--seq", "32"}, "model.safetensors"},
		{[]string{"eval", "--model", filepath.Join(tmp, "nowhere"), "--data", data}, "nowhere"},
		{[]string{"eval", "--model", ck, "--data", filepath.Join(tmp, "nodata")}, "manifest.json"},
		{[]string{"eval", "--model", ck, "--data", corrupt, "--split", "train", "--seq", "32"}, "checksum"},
		{[]string{"train", "--config", cfg, "--set", "data.dir=" + badTok}, "Unigram"},
		{[]string{"train", "--config", cfg, "--set", "train.lrate=1"}, "unknown key"},
		{[]string{"train", "--config", cfg, "--set", "train.lr=fast"}, "train.lr"},
		{[]string{"train", "--config", filepath.Join(tmp, "missing.yaml")}, "missing.yaml"},
		{[]string{"train"}, "--config"},
		{[]string{"train", "--config", cfg, "--bogus"}, "unknown flag"},
		{[]string{"data", "prepare", "--input", emptyDir, "--out", filepath.Join(tmp, "d1")}, "empty"},
		{[]string{"data", "prepare", "--input", latin1, "--out", filepath.Join(tmp, "d2")}, "not UTF-8"},
		{[]string{"data", "prepare", "--input", filepath.Join(tmp, "none"), "--out", filepath.Join(tmp, "d3")}, "none"},
		{[]string{"data", "prepare", "--vocab", "100", "--out", filepath.Join(tmp, "d4"), "--input", latin1 + "x"}, "latin1.txtx"},
		{[]string{"generate", "--model", ck, "--prompt", strings.Repeat("word ", 100)}, "context"},
		{[]string{"ptq", "--method", "awq", "--preset", "w4a8", "--model", ck, "--out", filepath.Join(tmp, "p1")}, "--method"},
		{[]string{"ptq", "--preset", "w4a5", "--model", ck, "--out", filepath.Join(tmp, "p2")}, "w4a5"},
		{[]string{"ptq", "--preset", "w4a8", "--scale", "percentile", "--model", ck, "--out", filepath.Join(tmp, "p3")}, "--scale"},
		{[]string{"ptq", "--rules", filepath.Join(tmp, "norules.json"), "--model", ck, "--out", filepath.Join(tmp, "p4")}, "norules.json"},
		{[]string{"ptq", "--rules", cfg, "--model", ck, "--out", filepath.Join(tmp, "p5")}, cfg},
		{[]string{"ptq", "--rules", lsqAct, "--model", ck, "--out", filepath.Join(tmp, "p6")}, "--data is required"},
		// this binary has no device code (the gpu tag): a clear refusal
		{[]string{"train", "--config", cfg, "--device", "cuda"}, "without GPU support"},
		{[]string{"eval", "--model", ck, "--data", data, "--device", "cuda"}, "without GPU support"},
		{[]string{"generate", "--model", ck, "--device", "cuda"}, "without GPU support"},
		{[]string{"bench", "--device", "cuda"}, "without GPU support"},
		{[]string{"train", "--config", cfg, "--device", "tpu"}, "want cpu or cuda"},
	} {
		msg, code := qat(t, c.args...)
		if code != 2 || !strings.Contains(msg, c.want) || strings.Contains(msg, "panic") {
			t.Errorf("qat %s: exit %d, want 2 and a message with %q:\n%s", strings.Join(c.args, " "), code, c.want, msg)
		}
	}
}

// TestPTQThenQAT: qat ptq writes a checkpoint (calibrated LSQ+ activation
// steps, mse weight steps, a quantized KV cache) that qat eval scores as
// ptq did, and that a QAT run starts from (init_from) with its quantizer
// state, calibrating afresh only what the checkpoint lacks.
func TestPTQThenQAT(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	fp := filepath.Join(tmp, "fp")
	if msg, code := qat(t, "train", "--config", writeConfig(t, strings.Replace(tinyRun, "steps: 40", "steps: 10", 1), data, fp)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	rules := filepath.Join(tmp, "rules.json")
	os.WriteFile(rules, []byte(`[
  {"match": "model.layers.*.self_attn", "kv_cache": {"format": "int", "bits": 8, "symmetric": true, "granularity": "group", "group_size": 16, "scale": "minmax"}},
  {"match": "model.layers.*", "weights": {"format": "int", "bits": 4, "symmetric": true, "granularity": "channel", "scale": "minmax"},
   "activations": {"format": "int", "bits": 8, "symmetric": false, "granularity": "tensor", "scale": "lsq"}}]`), 0o644)
	out := filepath.Join(tmp, "ptq")
	msg, code := qat(t, "ptq", "--rules", rules, "--scale", "mse", "--model", fp, "--out", out, "--data", data, "--calib-batches", "2", "--batch", "4")
	if code != 0 || !strings.Contains(msg, "calibrated 14 activation quantizers") {
		t.Fatalf("ptq: %d\n%s", code, msg)
	}
	ptqLoss := lossIn(t, msg)
	q, err := os.ReadFile(filepath.Join(out, "quant.json"))
	if err != nil || !strings.Contains(string(q), `"scale": "mse"`) {
		t.Fatalf("quant.json: %v\n%s", err, q)
	}
	msg, code = qat(t, "eval", "--model", out, "--data", data, "--seq", "32", "--batch", "8")
	if code != 0 || lossIn(t, msg) != ptqLoss {
		t.Fatalf("eval of the ptq checkpoint: %d, loss %s, ptq printed %s\n%s", code, lossIn(t, msg), ptqLoss, msg)
	}
	msg, code = qat(t, "eval", "--model", fp, "--data", data, "--seq", "32", "--batch", "8")
	if code != 0 || lossIn(t, msg) == ptqLoss {
		t.Fatalf("full-precision eval: %d, loss %s, the same as ptq's\n%s", code, lossIn(t, msg), msg)
	}
	if msg, code := qat(t, "generate", "--model", out, "--prompt", "The", "--max-tokens", "5"); code != 0 {
		t.Fatalf("generate from the ptq checkpoint: %d\n%s", code, msg)
	}
	cfg := strings.Replace(tinyRun, "steps: 40", "steps: 3", 1) + "init_from: " + fp + "\nquant:\n  calib_batches: 1\n  rules:\n" +
		"    - match: \"model.layers.*\"\n      activations: {format: int, bits: 8, symmetric: false, granularity: tensor, scale: lsq}\n"
	msg, code = qat(t, "train", "--config", writeConfig(t, cfg, data, filepath.Join(tmp, "qat")))
	if code != 0 || !strings.Contains(msg, "calibrated 14 activation quantizers on 1 batches") {
		t.Fatalf("QAT with calibrated LSQ+ activations: %d\n%s", code, msg)
	}
}

// TestPackedW4A8: a w4a8 checkpoint exported as packed safetensors runs
// through the per-channel integer kernels (qat eval --packed, qat
// generate) with the perplexity of its fake-quant weights; a model
// without such a scheme is refused with exit status 2.
func TestPackedW4A8(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	fp := filepath.Join(tmp, "fp")
	if msg, code := qat(t, "train", "--config", writeConfig(t, strings.Replace(tinyRun, "steps: 40", "steps: 5", 1), data, fp)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	ptq, packed := filepath.Join(tmp, "ptq"), filepath.Join(tmp, "packed")
	if msg, code := qat(t, "ptq", "--preset", "w4a8", "--model", fp, "--out", ptq, "--data", data, "--batch", "4", "--calib-batches", "1"); code != 0 {
		t.Fatalf("ptq: %d\n%s", code, msg)
	}
	if msg, code := qat(t, "export", "--model", ptq, "--format", "safetensors-packed", "--out", packed); code != 0 {
		t.Fatalf("export: %d\n%s", code, msg)
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
	a, b := ppl(), ppl("--packed")
	if math.Abs(b/a-1) > 1e-3 {
		t.Fatalf("perplexity %g with the integer kernels, %g with the fake-quant weights", b, a)
	}
	msg, code := qat(t, "generate", "--model", packed, "--prompt", "The", "--max-tokens", "5", "--temperature", "0")
	if code != 0 || !strings.Contains(msg, "packed kernels") {
		t.Fatalf("generate: %d\n%s", code, msg)
	}
	if msg, code := qat(t, "eval", "--model", fp, "--text", text, "--ctx", "32", "--packed"); code != 2 || !strings.Contains(msg, "packed kernel") {
		t.Fatalf("eval --packed of a float checkpoint: %d\n%s", code, msg)
	}
}

const lrqatRun = `quant:
  rules:
    - match: "model.layers.*"
      weights: {format: int, bits: 4, symmetric: true, granularity: channel, scale: minmax}
      activations: {format: int, bits: 8, symmetric: false, granularity: token, scale: minmax}
lora:
  method: lr-qat
  rank: 8
  alpha: 8
`

// TestLRQATMerge: an LR-QAT run reports its trainable and frozen
// parameters; qat merge folds its adapters into a checkpoint that scores
// exactly the same, and that exports to packed safetensors losslessly;
// LoRA-QAT merges likewise; bad lora sections exit 2 naming the field.
func TestLRQATMerge(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	for _, method := range []string{"lr-qat", "lora-qat"} {
		out := filepath.Join(tmp, method)
		run := strings.Replace(tinyRun, "steps: 40", "steps: 6", 1) + strings.Replace(lrqatRun, "lr-qat", method, 1)
		msg, code := qat(t, "train", "--config", writeConfig(t, run, data, out))
		if code != 0 || !strings.Contains(msg, "trainable") {
			t.Fatalf("%s train: %d\n%s", method, code, msg)
		}
		loss := func(model string) string {
			msg, code := qat(t, "eval", "--model", model, "--data", data, "--seq", "32", "--batches", "4")
			if code != 0 {
				t.Fatalf("eval %s: %d\n%s", model, code, msg)
			}
			return lossIn(t, msg)
		}
		before := loss(out)
		merged := filepath.Join(tmp, method+"-merged")
		if msg, code := qat(t, "merge", "--model", out, "--out", merged); code != 0 {
			t.Fatalf("merge: %d\n%s", code, msg)
		}
		if _, err := os.Stat(filepath.Join(merged, "lora.json")); err == nil {
			t.Fatal("the merged checkpoint still has lora.json")
		}
		if after := loss(merged); after != before {
			t.Fatalf("%s: loss %s merged, %s with adapters", method, after, before)
		}
		if method == "lr-qat" {
			packed := filepath.Join(tmp, "packed")
			if msg, code := qat(t, "export", "--model", merged, "--format", "safetensors-packed", "--out", packed); code != 0 {
				t.Fatalf("export: %d\n%s", code, msg)
			}
			if got := loss(packed); got != before {
				t.Fatalf("packed export of the merged model: loss %s, want %s", got, before)
			}
		}
	}
	for _, c := range []struct{ run, want string }{
		{tinyRun + strings.Replace(lrqatRun, "lr-qat", "dora", 1), "lora.method"},
		{tinyRun + strings.Replace(lrqatRun, "rank: 8", "rank: -1", 1), "lora.rank"},
		{tinyRun + lrqatRun[strings.Index(lrqatRun, "lora:"):], "lora.method"},
	} {
		msg, code := qat(t, "train", "--config", writeConfig(t, c.run, data, filepath.Join(tmp, "bad")))
		if code != 2 || !strings.Contains(msg, c.want) {
			t.Fatalf("want exit 2 naming %s, got %d\n%s", c.want, code, msg)
		}
	}
	if msg, code := qat(t, "merge", "--model", filepath.Join(tmp, "lr-qat-merged"), "--out", filepath.Join(tmp, "m2")); code != 2 {
		t.Fatalf("merging a checkpoint without adapters: %d\n%s", code, msg)
	}
}

// TestGPTQCheckpoint: qat ptq --method gptq writes a checkpoint whose
// weights are on the grid of fixed steps (eval scores what ptq printed,
// and the packed export scores the same), with a line per block.
func TestGPTQCheckpoint(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	fp := filepath.Join(tmp, "fp")
	if msg, code := qat(t, "train", "--config", writeConfig(t, strings.Replace(tinyRun, "steps: 40", "steps: 10", 1), data, fp)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	rules := filepath.Join(tmp, "rules.json")
	os.WriteFile(rules, []byte(`[{"match": "model.layers.*", "weights": {"format": "int", "bits": 4, "symmetric": true, "granularity": "group", "group_size": 32, "scale": "minmax"}}]`), 0o644)
	for _, method := range []string{"gptq", "qqq", "gwq", "gwq-gptq"} {
		gptqCheckpoint(t, tmp, fp, data, method, rules)
	}
	// GGUF cannot hold GWQ's outliers
	msg, code := qat(t, "export", "--model", filepath.Join(tmp, "gwq"), "--quant", "q4_0", "--out", filepath.Join(tmp, "gwq.gguf"))
	if code == 0 || !strings.Contains(msg, "GGUF's block formats cannot hold them") {
		t.Fatalf("gguf export of a gwq model: %d\n%s", code, msg)
	}
	// QAT from a GPTQ start: the run quantizes, then trains its steps
	run := strings.Replace(tinyRun, "steps: 40", "steps: 3", 1) + "init_from: " + fp + "\nquant:\n  preset: w4a8-qqq\n  calib_batches: 1\n"
	msg, code = qat(t, "train", "--config", writeConfig(t, run, data, filepath.Join(tmp, "qat-qqq")), "--init-quant", "qqq")
	if code != 0 || !strings.Contains(msg, "qqq: quantized 14 linear layers on 1 batches; QAT starts from them") {
		t.Fatalf("train --init-quant qqq: %d\n%s", code, msg)
	}
	gw := strings.Replace(run, "preset: w4a8-qqq", "preset: w4a8", 1)
	msg, code = qat(t, "train", "--config", writeConfig(t, gw, data, filepath.Join(tmp, "qat-gwq")), "--init-quant", "gwq")
	if code != 0 || !strings.Contains(msg, "weights of 14 linear layers in fp16 (the largest |dL/dW|); QAT starts from them") {
		t.Fatalf("train --init-quant gwq: %d\n%s", code, msg)
	}
	if msg, code := qat(t, "train", "--resume", filepath.Join(tmp, "qat-gwq")); code != 0 {
		t.Fatalf("resume a gwq-started run: %d\n%s", code, msg)
	}
	msg, code = qat(t, "train", "--config", writeConfig(t, run, data, filepath.Join(tmp, "qat-bad")), "--init-quant", "awq")
	if code != 2 || !strings.Contains(msg, "quant.init") {
		t.Fatalf("train --init-quant awq: %d\n%s", code, msg)
	}
}

func gptqCheckpoint(t *testing.T, tmp, fp, data, method, rules string) {
	out := filepath.Join(tmp, method)
	args := []string{"ptq", "--method", method, "--rules", rules, "--model", fp, "--out", out, "--data", data, "--calib-batches", "2", "--batch", "4", "--batches", "4"}
	if method == "gwq-gptq" {
		args = append(args[:2:2], append([]string{"gwq", "--gwq-base", "gptq"}, args[3:]...)...)
	}
	if method == "qqq" {
		args = []string{"ptq", "--method", method, "--preset", "w4a8-qqq", "--model", fp, "--out", out, "--data", data, "--calib-batches", "2", "--batch", "4", "--batches", "4"}
	}
	msg, code := qat(t, args...)
	ok := strings.Contains(msg, "gptq: quantized 14 linear layers") && strings.Contains(msg, "gptq: block 2/2")
	switch method {
	case "qqq":
		ok = ok && strings.Contains(msg, "qqq: smoothed the inputs of 6 linear groups")
	case "gwq":
		ok = strings.Contains(msg, "gwq: kept ") && strings.Contains(msg, " weights of 14 linear layers in fp16")
	case "gwq-gptq":
		ok = ok && strings.Contains(msg, "gwq: kept ")
	}
	if code != 0 || !ok {
		t.Fatalf("ptq %s: %d\n%s", method, code, msg)
	}
	want := lossIn(t, msg)
	for _, model := range []string{out, filepath.Join(tmp, method+"-packed")} {
		if model != out {
			if msg, code := qat(t, "export", "--model", out, "--format", "safetensors-packed", "--out", model); code != 0 {
				t.Fatalf("export: %d\n%s", code, msg)
			}
		}
		msg, code = qat(t, "eval", "--model", model, "--data", data, "--seq", "32", "--batch", "4", "--batches", "4")
		if code != 0 || lossIn(t, msg) != want {
			t.Fatalf("eval %s: %d, loss %s, ptq printed %s\n%s", model, code, lossIn(t, msg), want, msg)
		}
	}
}

// TestGorgoniaEngine: `qat train --engine gorgonia` trains the w4a8 tiny
// run (grouped-query heads) to the tape engine's losses within 1e-3
// relative, writes checkpoints the tape resumes from (and the other way
// round), and refuses what the graph cannot run with exit status 2.
func TestGorgoniaEngine(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	run := strings.Replace(strings.Replace(tinyRun, "steps: 40", "steps: 10", 1), "threads: 2", "threads: 1", 1) +
		"quant:\n  preset: w4a8\n"
	curves := map[string]map[int]string{}
	for _, engine := range []string{"tape", "gorgonia"} {
		out := filepath.Join(tmp, engine)
		if msg, code := qat(t, "train", "--config", writeConfig(t, run, data, out), "--engine", engine); code != 0 {
			t.Fatalf("%s: exit %d\n%s", engine, code, msg)
		}
		curves[engine] = losses(t, out)
	}
	for step := 1; step <= 10; step++ {
		a, _ := strconv.ParseFloat(curves["tape"][step], 64)
		b, _ := strconv.ParseFloat(curves["gorgonia"][step], 64)
		if a == 0 || math.Abs(a-b) > 1e-3*a {
			t.Errorf("step %d: loss %s on the tape, %s on gorgonia", step, curves["tape"][step], curves["gorgonia"][step])
		}
	}
	// Either engine resumes the other's checkpoints.
	for _, c := range [][2]string{{"tape", "gorgonia"}, {"gorgonia", "tape"}} {
		out := filepath.Join(tmp, c[0])
		if msg, code := qat(t, "train", "--resume", out, "--set", "train.steps=12", "--engine", c[1]); code != 0 || !strings.Contains(msg, "resuming from") {
			t.Errorf("%s run resumed on %s: exit %d\n%s", c[0], c[1], code, msg)
		}
		if l := losses(t, out); l[12] == "" {
			t.Errorf("%s run resumed on %s logged no step 12", c[0], c[1])
		}
	}
	// LoRA adapters are not graph ops.
	lr := run + "lora:\n  method: lora-qat\n  rank: 4\n"
	msg, code := qat(t, "train", "--config", writeConfig(t, lr, data, filepath.Join(tmp, "lora")), "--engine", "gorgonia")
	if code != 2 || !strings.Contains(msg, "train.engine gorgonia") {
		t.Errorf("lora on gorgonia: exit %d, want 2 and a train.engine message:\n%s", code, msg)
	}
}
