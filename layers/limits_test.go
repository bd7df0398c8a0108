package layers

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"qat/data/safetensors"
)

var smallCfgs = []Config{Tiny, Small,
	{Vocab: 64, Dim: 32, Layers: 3, Heads: 4, KVHeads: 1, FFNHidden: 48, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8},
	{Vocab: 10, Dim: 8, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 4, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 3, Tied: true}}

// TestShapesMatchNew: Shapes lists exactly the parameters New allocates,
// in order, with their shapes.
func TestShapesMatchNew(t *testing.T) {
	for _, c := range smallCfgs {
		ps, ss := New(c).Params(), c.Shapes()
		if len(ps) != len(ss) {
			t.Fatalf("%+v: %d parameters, Shapes lists %d", c, len(ps), len(ss))
		}
		for i := range ps {
			if ps[i].Name != ss[i].Name || !slices.Equal(ps[i].Var.Shape(), ss[i].Shape) {
				t.Errorf("%+v: parameter %d is %s %v, Shapes says %s %v", c, i, ps[i].Name, ps[i].Var.Shape(), ss[i].Name, ss[i].Shape)
			}
		}
	}
}

// bigParams counts a config's parameters in arbitrary precision from the
// shapes Shapes lists (itself checked against New) for one and two layers:
// the rest plus layers times one layer's.
func bigParams(c Config) *big.Int {
	sum := func(layers int) *big.Int {
		c := c
		c.Layers = layers
		n := new(big.Int)
		for _, s := range c.Shapes() {
			p := big.NewInt(1)
			for _, d := range s.Shape {
				p.Mul(p, big.NewInt(int64(d)))
			}
			n.Add(n, p)
		}
		return n
	}
	one, two := sum(1), sum(2)
	per := new(big.Int).Sub(two, one)
	return one.Add(one, per.Mul(per, big.NewInt(int64(c.Layers-1))))
}

// TestCheckedParams: the checked count equals the values New allocates
// and an arbitrary-precision count of Shapes; products that overflow 64
// bits are reported, never wrapped.
func TestCheckedParams(t *testing.T) {
	for _, c := range smallCfgs {
		n, ok := c.checkedParams()
		alloc := 0
		for _, p := range New(c).Params() {
			alloc += p.Var.Size()
		}
		if !ok || n != uint64(alloc) || bigParams(c).Cmp(new(big.Int).SetUint64(n)) != 0 {
			t.Errorf("%+v: checked count %d (ok %v), New allocates %d, big count %v", c, n, ok, alloc, bigParams(c))
		}
	}
	huge := Config{Vocab: 1 << 20, Dim: 1 << 30, Layers: 1 << 20, Heads: 1 << 10, KVHeads: 1 << 10, FFNHidden: 1 << 30, MaxSeq: 1, Tied: true}
	for _, c := range []Config{huge, {Vocab: 1 << 40, Dim: 1 << 30, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 1, MaxSeq: 1}} {
		n, ok := c.checkedParams()
		// the product layers x 3 x dim x ffn alone needs more than 64 bits
		if fits := bigParams(c).IsUint64(); ok != fits || (ok && bigParams(c).Uint64() != n) {
			t.Errorf("%+v: checked %d ok %v, big count %v", c, n, ok, bigParams(c))
		}
	}
	if _, ok := huge.checkedParams(); ok {
		t.Errorf("%+v: 2^81 parameters counted without overflow", huge)
	}
}

// TestLimits: each size over its limit is a *FieldError naming the field
// and the value, answered at once; products over the limits (head
// dimension, RoPE table, parameters) are refused even when every field is
// within its own.
func TestLimits(t *testing.T) {
	base := Config{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 48, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8}
	l := DefaultLimits
	for _, c := range []struct {
		edit  func(c *Config)
		field string
		value int64
	}{
		{func(c *Config) { c.Vocab = 1 << 40 }, "vocab", 1 << 40},
		{func(c *Config) { c.Dim = 1 << 40 }, "dim", 1 << 40},
		{func(c *Config) { c.Dim = 100000000 }, "dim", 100000000},
		{func(c *Config) { c.Layers = 1025 }, "layers", 1025},
		{func(c *Config) { c.Heads = 1<<12 + 4 }, "heads", 1<<12 + 4},
		{func(c *Config) { c.KVHeads = 1 << 13 }, "kv_heads", 1 << 13},
		{func(c *Config) { c.FFNHidden = 1<<18 + 1 }, "ffn_hidden", 1<<18 + 1},
		{func(c *Config) { c.MaxSeq = 1<<20 + 1 }, "max_seq", 1<<20 + 1},
		{func(c *Config) { c.MaxSeq = math.MaxInt64 }, "max_seq", math.MaxInt64},
		// head dim 1<<13 > 1<<12, each field within its limit
		{func(c *Config) { c.Dim, c.Heads, c.KVHeads = 1<<14, 2, 2 }, "heads", 2},
		// RoPE: 1<<20 positions x head dim 1<<9 = 1<<29 > 1<<28
		{func(c *Config) { c.Dim, c.Heads, c.KVHeads, c.MaxSeq = 1<<10, 2, 2, 1<<20 }, "max_seq", 1 << 20},
		// parameters: 1024 layers of 3 x 65536 x 262144 > 1<<38
		{func(c *Config) { c.Dim, c.FFNHidden, c.Layers, c.Heads, c.KVHeads = 1<<16, 1<<18, 1024, 512, 512 }, "dim", 1 << 16},
	} {
		cfg := base
		c.edit(&cfg)
		start := time.Now()
		err := cfg.ValidateLimits(l)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || fe.Value != c.value || !strings.HasPrefix(err.Error(), "model."+c.field+": ") {
			t.Errorf("%+v: error %v, want a FieldError model.%s with value %d", cfg, err, c.field, c.value)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("%+v: %v to refuse", cfg, d)
		}
	}
	// the largest config within every limit passes
	edge := Config{Vocab: 1 << 20, Dim: 1 << 14, Layers: 8, Heads: 128, KVHeads: 8, FFNHidden: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 1 << 20}
	if err := edge.ValidateLimits(l); err != nil {
		t.Errorf("%+v: %v", edge, err)
	}
	if err := base.ValidateLimits(Limits{Vocab: 63, Dim: 1 << 10, Layers: 8, Heads: 8, KVHeads: 8, FFN: 64, Seq: 8, HeadDim: 8, Params: 1 << 20, Rope: 64}); err == nil ||
		!strings.Contains(err.Error(), "model.vocab: 64 exceeds the limit 63") {
		t.Errorf("vocab 64 under a limit of 63: %v", err)
	}
}

// TestParseLimits: the flag's syntax, its errors, and SetLimits' effect on
// Validate.
func TestParseLimits(t *testing.T) {
	if l, err := ParseLimits(""); err != nil || l != DefaultLimits {
		t.Errorf("empty: %+v %v", l, err)
	}
	if l, err := ParseLimits(DefaultLimits.String()); err != nil || l != DefaultLimits {
		t.Errorf("%s: %+v %v", DefaultLimits, l, err)
	}
	l, err := ParseLimits("dim=2^17, params=5e11,vocab=0x200000,max_seq=4096")
	want := DefaultLimits
	want.Dim, want.Params, want.Vocab, want.Seq = 1<<17, 500000000000, 1<<21, 4096
	if err != nil || l != want {
		t.Errorf("got %+v %v, want %+v", l, err, want)
	}
	for _, bad := range []string{"dim", "dims=3", "dim=0", "dim=-4", "dim=1.5", "dim=2^63", "dim=1e30", "dim=x", "params=NaN", "vocab=1,"} {
		if _, err := ParseLimits(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	small, err := ParseLimits("dim=16")
	if err != nil {
		t.Fatal(err)
	}
	prev := SetLimits(small)
	defer SetLimits(prev)
	if err := Tiny.Validate(); err == nil || !strings.Contains(err.Error(), "model.dim: 256 exceeds the limit 16") {
		t.Errorf("tiny under dim=16: %v", err)
	}
	SetLimits(prev)
	if err := Tiny.Validate(); err != nil {
		t.Errorf("tiny after restoring: %v", err)
	}
}

// hfJSON is config.json of c with edits applied to its keys.
func hfJSON(t testing.TB, c Config, edits map[string]any) []byte {
	b, err := c.HFConfig()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range edits {
		m[k] = v
	}
	b, _ = json.Marshal(m)
	return b
}

// TestParseHFConfig: a config.json round-trips; sizes over the limits are
// refused at once naming the JSON key and the field.
func TestParseHFConfig(t *testing.T) {
	for _, c := range smallCfgs {
		got, err := ParseHFConfig(hfJSON(t, c, nil))
		if err != nil || got != c {
			t.Errorf("%+v: read back %+v, %v", c, got, err)
		}
	}
	for _, c := range []struct {
		key   string
		value any
		want  string
	}{
		{"hidden_size", int64(1) << 40, "hidden_size (model.dim): 1099511627776 exceeds the limit"},
		{"vocab_size", int64(1) << 40, "vocab_size (model.vocab): 1099511627776 exceeds the limit"},
		{"num_hidden_layers", 1 << 30, "num_hidden_layers (model.layers)"},
		{"max_position_embeddings", int64(1) << 62, "max_position_embeddings (model.max_seq)"},
		{"intermediate_size", -5, "intermediate_size (model.ffn_hidden): -5, must be positive"},
		{"hidden_size", 1e30, "hidden_size"},
		{"model_type", "gpt2", "model_type"},
	} {
		start := time.Now()
		_, err := ParseHFConfig(hfJSON(t, Tiny, map[string]any{c.key: c.value}))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s = %v: error %v, want %q", c.key, c.value, err, c.want)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("%s = %v: %v to refuse", c.key, c.value, d)
		}
	}
}

// TestLoadChecks: Load and CheckFile refuse a tensor of another dtype or
// shape, or a missing one, naming it; CheckFile accepts what Save wrote.
func TestLoadChecks(t *testing.T) {
	c := smallCfgs[2]
	m := New(c)
	m.Init(1)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	if err := m.Save(good); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Read(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckFile(f); err != nil {
		t.Errorf("CheckFile of a saved model: %v", err)
	}
	const victim = "model.layers.1.mlp.up_proj.weight"
	for _, c2 := range []struct {
		edit func(ts *safetensors.Tensor) bool // false: drop the tensor
		want string
	}{
		{func(ts *safetensors.Tensor) bool { ts.Shape = []int{ts.Shape[1], ts.Shape[0]}; return true }, "shape [32 48], model wants [48 32]"},
		{func(ts *safetensors.Tensor) bool { ts.DType = "I32"; return true }, "dtype I32, model wants F32"},
		{func(ts *safetensors.Tensor) bool { return false }, "missing"},
	} {
		var ts []safetensors.Tensor
		for _, x := range f.Tensors {
			x.Data = append([]byte(nil), x.Data...)
			if x.Name == victim && !c2.edit(&x) {
				continue
			}
			ts = append(ts, x)
		}
		path := filepath.Join(dir, "bad.safetensors")
		if err := safetensors.Write(path, ts, nil); err != nil {
			t.Fatal(err)
		}
		bad, err := safetensors.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		for what, err := range map[string]error{"Load": New(c).Load(path), "CheckFile": c.CheckFile(bad)} {
			if err == nil || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), c2.want) {
				t.Errorf("%s: error %v, want one naming %s: %s", what, err, victim, c2.want)
			}
		}
	}
}

// FuzzParseHFConfig: any config.json is refused or gives a config that
// validates under the limits, whose parameter count fits them, and that
// New builds (under small limits, so the fuzzer's models stay small).
func FuzzParseHFConfig(f *testing.F) {
	for _, c := range smallCfgs {
		f.Add(hfJSON(f, c, nil))
	}
	f.Add(hfJSON(f, Tiny, map[string]any{"hidden_size": int64(1) << 40}))
	f.Add([]byte(`{"model_type": "llama", "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 2, "max_position_embeddings": 2}`))
	small := Limits{Vocab: 1 << 10, Dim: 64, Layers: 4, Heads: 16, KVHeads: 16, FFN: 128, Seq: 256, HeadDim: 64, Params: 1 << 18, Rope: 1 << 12}
	f.Fuzz(func(t *testing.T, b []byte) {
		prev := SetLimits(small)
		defer SetLimits(prev)
		c, err := ParseHFConfig(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%+v accepted but %v", c, err)
		}
		if n, ok := c.checkedParams(); !ok || n > uint64(small.Params) {
			t.Fatalf("%+v accepted with %d parameters", c, n)
		}
		m := New(c)
		if got := len(m.Params()); got != len(c.Shapes()) {
			t.Fatalf("%+v: %d parameters, Shapes has %d", c, got, len(c.Shapes()))
		}
	})
}
