package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/layers"
)

func TestReferenceConfigs(t *testing.T) {
	for name, want := range map[string]layers.Config{"tiny": layers.Tiny, "small": layers.Small} {
		c, err := Load(filepath.Join("..", "..", "..", "configs", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if c.Model != want {
			t.Errorf("configs/%s.yaml: %+v, layers.%s is %+v", name, c.Model, name, want)
		}
	}
}

func TestBadConfigs(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("..", "..", "..", "configs", "tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ edit, old, want string }{
		{"  dim: 256\n  dmi: 3\n", "  dim: 256\n", "unknown field \"dmi\""},
		{"  layers: four\n", "  layers: 4\n", "layers"},
		{"  heads: 3\n", "  heads: 4\n", "model.dim"},
		{"  batch: -1\n", "  batch: 8\n", "train.batch"},
		{"  seq: 4096\n", "  seq: 128\n", "train.seq"},
		{"  norm_eps: 0\n", "  norm_eps: 1.0e-5\n", "model.norm_eps"},
	} {
		b := strings.Replace(string(base), c.old, c.edit, 1)
		_, err := Parse("bad.yaml", []byte(b))
		if err == nil || !IsInput(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.yaml") {
			t.Errorf("edit %q: error %v, want an input error naming bad.yaml and %q", c.edit, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("..", "..", "..", "configs", "tiny.yaml"))
	f.Add(b)
	f.Add([]byte("model: {vocab: 1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if err == nil && (c.Model.Validate() != nil || c.Train.Batch <= 0) {
			t.Fatal("accepted an invalid config")
		}
	})
}
