package config

import (
	"math"
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

func tinyYAML(t testing.TB) string {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "configs", "tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBadConfigs: each broken value is an input error naming the file, the
// line of the key and the key.
func TestBadConfigs(t *testing.T) {
	base := tinyYAML(t)
	lineOfKey := func(text, key string) int {
		for i, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), key+":") {
				return i + 1
			}
		}
		return 0
	}
	for _, c := range []struct{ old, edit, want, key string }{
		{"  dim: 256\n", "  dim: 256\n  dmi: 3\n", `unknown field "dmi"`, "dmi"},
		{"  layers: 4\n", "  layers: four\n", "layers", "layers"},
		{"  heads: 4\n", "  heads: 3\n", "model.dim", ""},
		{"  batch: 8\n", "  batch: -1\n", "train.batch", "batch"},
		{"  seq: 128\n", "  seq: 4096\n", "train.seq", "seq"},
		{"  norm_eps: 1.0e-5\n", "  norm_eps: 0\n", "model.norm_eps", "norm_eps"},
		{"  lr: 3.0e-3\n", "  lr: -1\n", "train.lr", "lr"},
		{"  beta2: 0.95\n", "  beta2: 1.5\n", "optimizer.beta2", "beta2"},
		{"  keep_ckpts: 2\n", "  keep_ckpts: 0\n", "train.keep_ckpts", "keep_ckpts"},
		{"  beta2: 0.95\n", "  beta2: 0.95\n  state: int4\n", "optimizer.state", "state"},
		{"  beta2: 0.95\n", "  beta2: 0.95\n  state: int8\n  block: 9000\n", "optimizer.block", "block"},
		{"  beta2: 0.95\n", "  beta2: 0.95\n  fp32_states: [\"[\"]\n", "optimizer.fp32_states", "fp32_states"},
		{"out_dir: runs/tiny\n", "quant:\n  kurtosis:\n    on: sideways\nout_dir: runs/tiny\n", "quant.kurtosis.on", "on"},
	} {
		b := strings.Replace(base, c.old, c.edit, 1)
		if b == base {
			t.Fatalf("edit %q did not apply", c.edit)
		}
		_, err := Parse("bad.yaml", []byte(b))
		if err == nil || !IsInput(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.yaml") {
			t.Errorf("edit %q: error %v, want an input error naming bad.yaml and %q", c.edit, err, c.want)
			continue
		}
		if c.key != "" {
			if line := lineOfKey(b, c.key); !strings.Contains(err.Error(), "bad.yaml:"+itoa(line)) && !strings.Contains(err.Error(), "["+itoa(line)+":") {
				t.Errorf("edit %q: error %q does not give line %d", c.edit, err, line)
			}
		}
	}
}

func itoa(i int) string {
	s := ""
	for {
		s = string(rune('0'+i%10)) + s
		i /= 10
		if i == 0 {
			return s
		}
	}
}

func TestOverrides(t *testing.T) {
	c, err := Parse("tiny.yaml", []byte(tinyYAML(t)), "train.lr=1e-3", "train.steps=7", "out_dir=/tmp/x", "model.tied_embeddings=false", "train.seed=9")
	if err != nil {
		t.Fatal(err)
	}
	if c.Train.LR != 1e-3 || c.Train.Steps != 7 || c.OutDir != "/tmp/x" || c.Model.Tied || c.Train.Seed != 9 {
		t.Errorf("overrides not applied: %+v", c)
	}
	c, err = Parse("tiny.yaml", []byte(tinyYAML(t)), "optimizer.state=fp8", "optimizer.block=64")
	if err != nil || c.Optimizer.Kind != "fp8" || c.Optimizer.Block != 64 || c.Optimizer.MinSize != 4096 {
		t.Errorf("optimizer.state override: %v %+v", err, c.Optimizer)
	}
	for _, o := range []string{"optimizer.state=int4", "train.lrate=1", "train.lr=fast", "train=1", "model.dim", "train.min_lr=1"} {
		if _, err := Parse("tiny.yaml", []byte(tinyYAML(t)), o); err == nil || !IsInput(err) {
			t.Errorf("--set %s: %v", o, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("..", "..", "..", "configs", "tiny.yaml"))
	f.Add(b)
	f.Add([]byte("model: {vocab: 1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if err == nil && (c.Model.Validate() != nil || c.Train.Batch <= 0 || !(c.Train.LR > 0)) {
			t.Fatal("accepted an invalid config")
		}
	})
}

// TestMinLRDefault: min_lr left out is a tenth of lr (a fine-tune at
// lr 1e-5 is valid without it); given, it is kept and checked.
func TestMinLRDefault(t *testing.T) {
	var lines []string
	for _, l := range strings.Split(tinyYAML(t), "\n") {
		if !strings.Contains(l, "min_lr:") {
			lines = append(lines, l)
		}
	}
	base := strings.Join(lines, "\n")
	for _, c := range []struct {
		set  []string
		want float64
	}{{[]string{"train.lr=2e-3"}, 2e-4}, {[]string{"train.lr=1e-5"}, 1e-6}, {[]string{"train.lr=1e-5", "train.min_lr=0"}, 0}} {
		cfg, err := Parse("t.yaml", []byte(base), c.set...)
		if err != nil {
			t.Fatalf("%v: %v", c.set, err)
		}
		if math.Abs(cfg.Train.MinLR-c.want) > 1e-12*c.want {
			t.Errorf("%v: min_lr %g, want %g", c.set, cfg.Train.MinLR, c.want)
		}
	}
	if cfg, err := Parse("t.yaml", []byte(tinyYAML(t)), "train.lr=1e-2"); err != nil || cfg.Train.MinLR == 1e-3 {
		t.Errorf("tiny.yaml's own min_lr replaced: %v %v", cfg, err)
	}
	if _, err := Parse("t.yaml", []byte(base), "train.lr=1e-5", "train.min_lr=1e-4"); err == nil || !strings.Contains(err.Error(), "train.min_lr") {
		t.Errorf("min_lr above lr: %v", err)
	}
}

// TestActRegConfigs: the activation-regularization recipe's configs
// (arXiv 2404.03605) parse to what they say: from scratch, learned clip
// values on every block linear's input, no weight quantizers, and the
// kurtosis penalty on the outputs. Configs without quant.kurtosis.on keep
// the taps on the inputs.
func TestActRegConfigs(t *testing.T) {
	for _, name := range []string{"tiny-w4a4-actreg", "small-w4a4-actreg"} {
		c, err := Load(filepath.Join("..", "..", "..", "configs", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		rules := c.QuantRules()
		k := c.Quant.Kurtosis
		if c.InitFrom != "" || len(rules) != 1 || rules[0].Match != "model.layers.*" || rules[0].Weights != nil ||
			rules[0].Activations == nil || rules[0].Activations.Scale != "clip" || rules[0].Activations.Bits != 4 {
			t.Errorf("%s: init_from %q, rules %+v: want learned clip values on every block linear's input from scratch, weights unquantized", name, c.InitFrom, rules)
		}
		if !k.Output() || !(k.Coef > 0) || k.Match != "model.layers.*" {
			t.Errorf("%s: kurtosis %+v, want a penalty on every block linear's output", name, k)
		}
	}
	// its init_from (runs/tiny) need not exist here: the file is parsed
	// for its quant section only
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "configs", "llama-w4a4-kurtosis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := Unmarshal("llama-w4a4-kurtosis.yaml", b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Quant.Kurtosis.Output() || c.Quant.Kurtosis.On != "" {
		t.Errorf("llama-w4a4-kurtosis.yaml: on %q, want the input taps it had", c.Quant.Kurtosis.On)
	}
}
