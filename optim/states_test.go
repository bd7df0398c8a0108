package optim

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"qat/autograd"
)

func statesParams(rng *rand.Rand) []Param {
	emb, w, norm := autograd.NewParam(300, 40), autograd.NewParam(96, 64), autograd.NewParam(64)
	for _, v := range []*autograd.Var{emb, w, norm} {
		for i := range v.Data() {
			v.Data()[i] = float32(rng.NormFloat64())
		}
	}
	return []Param{{Name: "model.embed_tokens.weight", Var: emb, Decay: true}, {Name: "model.layers.0.mlp.up_proj.weight", Var: w, Decay: true}, {Name: "model.norm.weight", Var: norm}}
}

// TestStatesFactory: which tensors get 8-bit moments, and the bytes each
// kind stores per parameter (goal: at most 2.1 with the scales).
func TestStatesFactory(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ps := statesParams(rng)
	for _, c := range []struct {
		s       States
		kinds   [3]string
		perByte float64 // bytes per parameter of the 8-bit tensor
	}{
		{States{Kind: "fp32", MinSize: 4096}, [3]string{"*optim.FP32Moments", "*optim.FP32Moments", "*optim.FP32Moments"}, 8},
		{States{Kind: "int8", MinSize: 4096}, [3]string{"*optim.Int8Moments", "*optim.Int8Moments", "*optim.FP32Moments"}, 2 + 8.0/256},
		{States{Kind: "int8", MinSize: 4096, FP32Match: []string{"model.embed_tokens.*"}}, [3]string{"*optim.FP32Moments", "*optim.Int8Moments", "*optim.FP32Moments"}, 2 + 8.0/256},
		{States{Kind: "fp8", MinSize: 4096}, [3]string{"*optim.FP8Moments", "*optim.FP8Moments", "*optim.FP32Moments"}, 2 + 8.0/128},
		{States{Kind: "fp8", MinSize: 10, Block: 64}, [3]string{"*optim.FP8Moments", "*optim.FP8Moments", "*optim.FP8Moments"}, 2 + 8.0/64},
	} {
		o := NewAdamW(DefaultAdamW, ps, c.s.Factory())
		for i, st := range o.State {
			if got := typeName(st); got != c.kinds[i] {
				t.Errorf("%+v: %s gets %s, want %s", c.s, ps[i].Name, got, c.kinds[i])
			}
		}
		n := ps[1].Var.Size()
		if got := float64(o.State[1].Bytes()) / float64(n); math.Abs(got-c.perByte) > 1e-9 {
			t.Errorf("%+v: %.4f bytes per parameter, want %.4f", c.s, got, c.perByte)
		}
		if c.s.Kind != "fp32" && c.perByte > 2.1 && c.s.Block == 0 {
			t.Errorf("%s with default blocks: %.3f bytes per parameter, over 2.1", c.s.Kind, c.perByte)
		}
	}
	for _, bad := range []States{{Kind: "int4"}, {Kind: "int8", Block: -1}, {Kind: "fp8", Block: 5000}, {Kind: "int8", FP32Match: []string{"["}}} {
		if bad.Validate("optimizer") == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

func typeName(m Moments) string {
	switch m.(type) {
	case *FP32Moments:
		return "*optim.FP32Moments"
	case *Int8Moments:
		return "*optim.Int8Moments"
	case *FP8Moments:
		return "*optim.FP8Moments"
	}
	return "?"
}

// TestStatesSaveLoadExact: for every kind, an optimizer saved after some
// steps and loaded into a fresh one continues exactly as the original.
func TestStatesSaveLoadExact(t *testing.T) {
	for _, kind := range []string{"fp32", "int8", "fp8"} {
		s := States{Kind: kind, MinSize: 100}
		mk := func() (*AdamW, []Param) {
			ps := statesParams(rand.New(rand.NewPCG(3, 3)))
			return NewAdamW(DefaultAdamW, ps, s.Factory()), ps
		}
		a, pa := mk()
		rng := rand.New(rand.NewPCG(4, 4))
		grads := func(ps []Param, r *rand.Rand) {
			for _, p := range ps {
				for i := range p.Var.GradData() {
					p.Var.GradData()[i] = float32(r.NormFloat64())
				}
			}
		}
		for st := 0; st < 3; st++ {
			grads(pa, rng)
			a.Update(0.01)
		}
		path := filepath.Join(t.TempDir(), "opt.safetensors")
		if err := a.Save(path); err != nil {
			t.Fatal(err)
		}
		b, pb := mk()
		for i := range pa {
			copy(pb[i].Var.Data(), pa[i].Var.Data())
		}
		if err := b.Load(path); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		seed := rng.Uint64()
		grads(pa, rand.New(rand.NewPCG(seed, 1)))
		grads(pb, rand.New(rand.NewPCG(seed, 1)))
		a.Update(0.01)
		b.Update(0.01)
		for i := range pa {
			for j, v := range pa[i].Var.Data() {
				if pb[i].Var.Data()[j] != v {
					t.Fatalf("%s: %s[%d] %g after loading, %g without", kind, pa[i].Name, j, pb[i].Var.Data()[j], v)
				}
			}
		}
		// a checkpoint of another kind is an error naming the tensor
		other := States{Kind: map[string]string{"fp32": "int8", "int8": "fp8", "fp8": "fp32"}[kind], MinSize: 100}
		c := NewAdamW(DefaultAdamW, statesParams(rand.New(rand.NewPCG(3, 3))), other.Factory())
		if err := c.Load(path); err == nil {
			t.Errorf("%s checkpoint loaded into %s states", kind, other.Kind)
		}
	}
}
