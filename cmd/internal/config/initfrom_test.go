package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/layers"
)

// hfDir writes a config.json of c, as a Hugging Face model directory has.
func hfDir(t *testing.T, c layers.Config) string {
	dir := t.TempDir()
	b, err := c.HFConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const fineTune = `
data:
  dir: runs/data/x
train:
  batch: 2
  seq: 64
  steps: 10
  lr: 1e-4
  min_lr: 1e-5
out_dir: runs/ft
init_from: %s
`

// TestModelFromInit: init_from's config.json gives the model; a model
// section that disagrees is refused naming the key; max_seq may be lower.
func TestModelFromInit(t *testing.T) {
	hf := layers.Config{Vocab: 512, Dim: 96, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 160, RopeTheta: 500000,
		NormEps: 1e-5, Tied: true, MaxSeq: 256, HeadDimension: 32}
	dir := hfDir(t, hf)
	yml := strings.Replace(fineTune, "%s", dir, 1)
	c, err := Parse("ft.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if c.Model != hf {
		t.Fatalf("model %+v, config.json says %+v", c.Model, hf)
	}
	// agreeing keys, and a shorter context
	c, err = Parse("ft.yaml", []byte(yml+"model:\n  dim: 96\n  max_seq: 128\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := hf; c.Model.MaxSeq != 128 || func() bool { want.MaxSeq = 128; return c.Model != want }() {
		t.Fatalf("model %+v", c.Model)
	}
	for _, tc := range []struct{ yaml, set, key string }{
		{"model:\n  dim: 128\n", "", "model.dim"},
		{"model:\n  max_seq: 512\n", "", "model.max_seq"},
		{"model:\n  tied_embeddings: false\n", "", "model.tied_embeddings"},
		{"", "model.kv_heads=4", "model.kv_heads"},
	} {
		var sets []string
		if tc.set != "" {
			sets = append(sets, tc.set)
		}
		_, err := Parse("ft.yaml", []byte(yml+tc.yaml), sets...)
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.key+":") || !strings.Contains(err.Error(), "config.json") {
			t.Errorf("%q %q: %v, want an input error naming %s and config.json", tc.yaml, tc.set, err, tc.key)
		}
	}
	// init_from that is not a model
	_, err = Parse("ft.yaml", []byte(strings.Replace(fineTune, "%s", t.TempDir(), 1)))
	if err == nil || !strings.Contains(err.Error(), "init_from") {
		t.Errorf("init_from of an empty directory: %v", err)
	}
	// a saved run config resumes without init_from's directory
	saved := yml + "model:\n  vocab: 512\n  dim: 96\n  layers: 2\n  heads: 4\n  kv_heads: 2\n  ffn_hidden: 160\n  rope_theta: 500000\n  norm_eps: 1e-5\n  tied_embeddings: true\n  max_seq: 256\n  head_dim: 32\n"
	os.Remove(filepath.Join(dir, "config.json"))
	p := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(p, []byte(saved), 0o644)
	if c, err = LoadSaved(p); err != nil || c.Model != hf {
		t.Fatalf("LoadSaved: %v %+v", err, c)
	}
	if _, err := Load(p); err == nil {
		t.Fatal("Load of a config whose init_from is gone: no error")
	}
}
