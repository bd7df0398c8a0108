package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/layers"
)

// TestRotateConfig: quant.rotate takes hadamard from init_from: another
// value, a run from scratch, an init_from that is rotated already and
// QQQ's smoothing are refused, each an input error naming the field; the
// rotated model's down_hadamard is read from init_from's config.json, and
// a saved config (config.yaml of a rotated run) resumes with both.
func TestRotateConfig(t *testing.T) {
	hf := layers.Config{Vocab: 512, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 128, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 64}
	plain := strings.Replace(fineTune, "%s", hfDir(t, hf), 1)
	c, err := Parse("ft.yaml", []byte(plain+"quant:\n  rotate: hadamard\n  preset: w4a8\n"))
	if err != nil || c.Quant.Rotate != "hadamard" {
		t.Fatalf("quant.rotate hadamard: %v", err)
	}
	rot := hf
	rot.Tied, rot.DownHadamard = false, layers.DownFull
	rotated := strings.Replace(fineTune, "%s", hfDir(t, rot), 1)
	c, err = Parse("ft.yaml", []byte(rotated+"quant:\n  preset: w4a8\n"))
	if err != nil || c.Model.DownHadamard != layers.DownFull {
		t.Fatalf("init_from a rotated model: %v, down_hadamard %q", err, c.Model.DownHadamard)
	}
	scratch := tinyYAML(t)
	for _, tc := range []struct{ yaml, want string }{
		{plain + "quant:\n  rotate: spin\n", "quant.rotate"},
		{strings.Replace(scratch, "out_dir:", "quant:\n  rotate: hadamard\nout_dir:", 1), "quant.rotate: rotates a trained model: set init_from"},
		{rotated + "quant:\n  rotate: hadamard\n", "is rotated already"},
		{plain + "quant:\n  rotate: hadamard\n  preset: w4a8-qqq\n  init: qqq\n", "quant.init"},
		{strings.Replace(scratch, "  max_seq: 128\n", "  max_seq: 128\n  down_hadamard: full\n", 1), "model.down_hadamard"},
		{plain + "model:\n  down_hadamard: full\n", "model.down_hadamard"},
	} {
		_, err := Parse("bad.yaml", []byte(tc.yaml))
		if err == nil || !IsInput(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bad.yaml") {
			t.Errorf("%q: %v, want an input error naming bad.yaml and %q", tc.yaml, err, tc.want)
		}
	}
	// config.yaml of a rotated run: the rotated model with quant.rotate
	// resumes (the checkpoint is rotated; train.Open does not rotate it
	// again)
	saved := rotated + "quant:\n  rotate: hadamard\nmodel:\n  vocab: 512\n  dim: 64\n  layers: 2\n  heads: 4\n  kv_heads: 2\n  ffn_hidden: 128\n  rope_theta: 10000\n  norm_eps: 1e-5\n  tied_embeddings: false\n  max_seq: 64\n  down_hadamard: full\n"
	p := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(p, []byte(saved), 0o644)
	if c, err = LoadSaved(p); err != nil || c.Model != rot {
		t.Fatalf("LoadSaved: %v %+v", err, c)
	}
}
