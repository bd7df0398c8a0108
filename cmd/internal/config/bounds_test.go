package config

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"qat/layers"
)

// TestModelSizeBounds: model sizes over the limits, from the file or from
// --set, are input errors naming the file, the line and the field,
// answered at once; a config within the limits but far too large to build
// has its quant rules checked without building the model.
func TestModelSizeBounds(t *testing.T) {
	base := tinyYAML(t)
	for _, c := range []struct {
		old, edit string
		sets      []string
		want      string
	}{
		{"  dim: 256\n", "  dim: 100000000\n", nil, "model.dim: 100000000 exceeds the limit 65536"},
		{"  dim: 256\n", "  dim: 1099511627776\n", nil, "model.dim: 1099511627776 exceeds the limit"},
		{"  vocab: 4096\n", "  vocab: 4294967296\n", nil, "model.vocab: 4294967296 exceeds the limit"},
		{"  layers: 4\n", "  layers: 100000\n", nil, "model.layers: 100000 exceeds the limit 1024"},
		{"  max_seq: 128\n", "  max_seq: 9223372036854775807\n", nil, "model.max_seq"},
		{"", "", []string{"model.ffn_hidden=1000000000"}, "model.ffn_hidden: 1000000000 exceeds the limit"},
		{"", "", []string{"model.dim=65536", "model.heads=512", "model.kv_heads=512", "model.layers=1024", "model.ffn_hidden=262144"}, "parameters"},
	} {
		b := strings.Replace(base, c.old, c.edit, 1)
		start := time.Now()
		_, err := Parse("big.yaml", []byte(b), c.sets...)
		d := time.Since(start)
		if err == nil || !IsInput(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "big.yaml") {
			t.Errorf("%q %v: error %v, want an input error naming big.yaml and %q", c.edit, c.sets, err, c.want)
		}
		if c.edit != "" && !strings.Contains(err.Error(), "big.yaml:6:") && !strings.Contains(err.Error(), "big.yaml:5:") &&
			!strings.Contains(err.Error(), "big.yaml:7:") && !strings.Contains(err.Error(), "big.yaml:14:") {
			t.Errorf("%q: error %v gives no line of the model section", c.edit, err)
		}
		if d > 200*time.Millisecond {
			t.Errorf("%q %v: %v to refuse", c.edit, c.sets, d)
		}
	}
	// a 16384-wide, 80-layer model (about 250G parameters, within the
	// limits) with a preset: validated in milliseconds without building it
	big := []string{"model.dim=16384", "model.heads=128", "model.kv_heads=8", "model.layers=80", "model.ffn_hidden=53248",
		"model.vocab=128256", "quant.preset=w4a8"}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	c, err := Parse("tiny.yaml", []byte(base), big...)
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil || c.Model.Dim != 16384 {
		t.Fatalf("the large config: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; d > time.Second || alloc > 64<<20 {
		t.Errorf("the large config: %v and %d bytes to validate", d, alloc)
	}
	// and its rules are still checked against its shapes
	bad := strings.Replace(base, "out_dir: runs/tiny", `quant:
  rules:
    - match: "model.layers.79.mlp.down_proj"
      weights: {format: int, bits: 4, symmetric: true, granularity: group, group_size: 1000, scale: minmax}
out_dir: runs/tiny`, 1)
	if _, err := Parse("q.yaml", []byte(bad), big[:6]...); err == nil || !IsInput(err) || !strings.Contains(err.Error(), "model.layers.79.mlp.down_proj") {
		t.Errorf("group 1000 on rows of 53248: %v", err)
	}
	// the limits are the process's: a lower one refuses the reference config
	l, _ := layers.ParseLimits("layers=2")
	prev := layers.SetLimits(l)
	defer layers.SetLimits(prev)
	if _, err := Parse("tiny.yaml", []byte(base)); err == nil || !strings.Contains(err.Error(), "tiny.yaml:7: model.layers: 4 exceeds the limit 2") {
		t.Errorf("layers 4 under --limits layers=2: %v", err)
	}
}

// FuzzSet: any --set overrides on the reference config are refused as
// input errors or give a config that validates; never a panic or a model
// built to check them.
func FuzzSet(f *testing.F) {
	b := []byte(tinyYAML(f))
	for _, s := range [][2]string{{"train.lr=1e-3", "model.dim=512"}, {"model.dim=100000000", ""}, {"quant.preset=w4a8", "model.heads=8"},
		{"optimizer.state=int8", "optimizer.block=64"}, {"quant.init=gwq", "quant.preset=w4a8"}, {"model.tied_embeddings=false", "train.seed=3"},
		{"quant.preset=w4a16-g32", "model.ffn_hidden=700"}, {"lora.rank=4", "train=1"},
		{"=false", "model.=1"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b2 string) {
		c, err := Parse("fuzz.yaml", b, a, b2)
		if err != nil {
			if !IsInput(err) {
				t.Fatalf("--set %q %q: %v is not an input error", a, b2, err)
			}
			return
		}
		if err := c.Model.Validate(); err != nil {
			t.Fatalf("--set %q %q accepted: %v", a, b2, err)
		}
	})
}
