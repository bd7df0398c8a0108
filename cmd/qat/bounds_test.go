package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qat/data/bpe"
	"qat/data/gguf"
	"qat/export"
	"qat/layers"
)

// runBounded runs the qat binary and returns its output, exit status,
// wall time and peak resident memory (bytes).
func runBounded(t *testing.T, args ...string) (string, int, time.Duration, int64) {
	t.Helper()
	cmd := exec.Command(qatBin, args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10 // kilobytes on Linux
	}
	return string(out), code, d, rss
}

// TestHugeModelSizesRefused: a run config with a huge dim, a checkpoint
// whose config.json claims a 2^40 dim, and GGUF files with a 2^40 dim or
// vocabulary are bad input: exit 2 within 2 s, naming the field, with the
// memory of a process that allocated nothing for the model.
func TestHugeModelSizesRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, strings.Replace(tinyRun, "  dim: 64\n", "  dim: 100000000\n", 1), filepath.Join(dir, "data"), filepath.Join(dir, "out"))

	// a checkpoint directory whose config.json says hidden_size 2^40
	ckpt := filepath.Join(dir, "ckpt")
	if err := os.MkdirAll(ckpt, 0o755); err != nil {
		t.Fatal(err)
	}
	c := layers.Config{Vocab: 288, Dim: 32, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 16}
	hf, err := c.HFConfig()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(hf, &m); err != nil {
		t.Fatal(err)
	}
	m["hidden_size"] = int64(1) << 40
	hf, _ = json.Marshal(m)
	for name, b := range map[string][]byte{"config.json": hf, "model.safetensors": {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '}} {
		if err := os.WriteFile(filepath.Join(ckpt, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// GGUFs of a small model with the embedding's dims or the width edited
	tok, err := bpe.Train([]string{strings.Repeat("The state of the Union is strong. We the people. ", 30)}, 288)
	if err != nil {
		t.Fatal(err)
	}
	c.Vocab = tok.VocabSize()
	model := layers.New(c)
	model.Init(1)
	ggufWith := func(name string, edit func(f *gguf.File), patch func(b []byte)) string {
		f, err := export.GGUF(model, tok, "f32", "bounds")
		if err != nil {
			t.Fatal(err)
		}
		edit(f)
		b, err := gguf.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		patch(b)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	none := func(b []byte) {}
	emb := func(f *gguf.File) *gguf.Tensor { t, _ := f.Tensor("token_embd.weight"); return t }
	vocab40 := ggufWith("vocab40.gguf", func(f *gguf.File) { e := emb(f); e.Dims, e.Data = []uint64{0, 1 << 40}, nil }, none)
	// token_embd.weight's ne[0] (the model's dim) set to 2^40 in the
	// tensor info: name, u32 n_dims, then the u64 dims
	dim40 := ggufWith("dim40.gguf", func(f *gguf.File) {}, func(b []byte) {
		name := []byte("token_embd.weight")
		i := strings.Index(string(b), string(name))
		if i < 0 {
			t.Fatal("no token_embd.weight in the encoded file")
		}
		binary.LittleEndian.PutUint64(b[i+len(name)+4:], 1<<40)
	})
	width := ggufWith("width.gguf", func(f *gguf.File) {
		for i := range f.KVs {
			if f.KVs[i].Key == "llama.embedding_length" {
				f.KVs[i].Value = uint32(1<<32 - 1)
			}
		}
	}, none)

	data := filepath.Join(dir, "nodata")
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"train --config with dim 1e8", []string{"train", "--config", cfg}, []string{"model.dim: 100000000 exceeds the limit 65536"}},
		{"train --set model.dim=2^40", []string{"train", "--config", writeConfig(t, tinyRun, data, filepath.Join(dir, "out2")), "--set", "model.dim=1099511627776"},
			[]string{"model.dim: 1099511627776 exceeds the limit"}},
		{"eval a config.json with dim 2^40", []string{"eval", "--model", ckpt, "--data", data}, []string{"hidden_size (model.dim): 1099511627776 exceeds the limit 65536"}},
		{"eval a GGUF with vocab 2^40", []string{"eval", "--model", vocab40, "--data", data}, []string{"token_embd.weight", "1099511627776", "more values than"}},
		{"eval a GGUF with dim 2^40", []string{"eval", "--model", dim40, "--data", data}, []string{"token_embd.weight", "1099511627776", "more values than"}},
		{"export a GGUF with embedding_length 2^32-1", []string{"export", "--model", width, "--out", filepath.Join(dir, "x.gguf")},
			[]string{"llama.embedding_length (model.dim): 4294967295 exceeds the limit 65536"}},
	} {
		out, code, d, rss := runBounded(t, c.args...)
		if code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s", c.name, code, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output does not name %q:\n%s", c.name, w, out)
			}
		}
		if d > 2*time.Second || rss > 200<<20 {
			t.Errorf("%s: %v, peak RSS %d MB", c.name, d, rss>>20)
		}
		t.Logf("%s: exit %d in %v, peak RSS %d MB: %s", c.name, code, d.Round(time.Millisecond), rss>>20, strings.TrimSpace(out))
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("a refused config created its out_dir")
	}
}
