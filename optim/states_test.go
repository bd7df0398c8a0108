package optim

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/autograd"
	"qat/data/safetensors"
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
		// the bytes the state of ps[1] takes on disk, from the saved file:
		// independent of Bytes() and of the table's formula
		n := ps[1].Var.Size()
		path := filepath.Join(t.TempDir(), "opt.safetensors")
		if err := o.Save(path); err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		saved := 0
		for _, ts := range f.Tensors {
			if strings.HasSuffix(ts.Name, "."+ps[1].Name) {
				saved += len(ts.Data)
			}
		}
		perSaved := float64(saved) / float64(n)
		if got := float64(o.State[1].Bytes()) / float64(n); math.Abs(got-perSaved) > 1e-9 || math.Abs(got-c.perByte) > 1e-9 {
			t.Errorf("%+v: Bytes() gives %.4f bytes per parameter, the saved state %.4f, the formula %.4f", c.s, got, perSaved, c.perByte)
		}
		if c.s.Kind != "fp32" && perSaved > 2.1 && c.s.Block == 0 {
			t.Errorf("%s with default blocks: %.3f bytes per parameter saved, over 2.1", c.s.Kind, perSaved)
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

// tinyStates is a small optimizer of kind for the loading tests: two
// tensors, the second in blocks of 16.
func tinyStates(kind string) *AdamW {
	w, norm := autograd.NewParam(4, 12), autograd.NewParam(6)
	s := States{Kind: kind, MinSize: 8, Block: 16}
	return NewAdamW(DefaultAdamW, []Param{{Name: "w", Var: w, Decay: true}, {Name: "norm", Var: norm}}, s.Factory())
}

// savedStates is the file of tinyStates(kind) after two steps.
func savedStates(t testing.TB, kind string) []byte {
	o := tinyStates(kind)
	rng := rand.New(rand.NewPCG(5, 6))
	for st := 0; st < 2; st++ {
		for _, p := range o.Params {
			for i := range p.Var.GradData() {
				p.Var.GradData()[i] = float32(rng.NormFloat64())
			}
		}
		o.Update(0.01)
	}
	path := filepath.Join(t.TempDir(), "opt.safetensors")
	if err := o.Save(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLoadStateRanges: a state whose values are out of range (a negative
// or NaN second moment, an infinite block maximum, a negative fp8 range,
// a negative step) is an error naming the tensor, and the optimizer is
// not changed by a refused step count.
func TestLoadStateRanges(t *testing.T) {
	for _, c := range []struct {
		kind, tensor string
		bits         []byte // little-endian value written over the tensor's first element
		want         string
	}{
		{"fp32", "v.w", f32le(-1), "v.w"},
		{"fp32", "m.w", f32le(float32(math.NaN())), "m.w"},
		{"int8", "v_absmax.w", f32le(float32(math.Inf(1))), "v_absmax.w"},
		{"fp8", "m_range.w", []byte{0x80, 0xbf}, "m_range.w"}, // bf16 -1
		{"fp8", "v_range.w", []byte{0xc0, 0x7f}, "v_range.w"}, // bf16 NaN
	} {
		f, err := safetensors.Parse(savedStates(t, c.kind))
		if err != nil {
			t.Fatal(err)
		}
		for i := range f.Tensors {
			if f.Tensors[i].Name == c.tensor {
				f.Tensors[i].Data = append(append([]byte(nil), c.bits...), f.Tensors[i].Data[len(c.bits):]...)
			}
		}
		if err := tinyStates(c.kind).load("opt.safetensors", f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s = %x: error %v, want one naming %s", c.kind, c.tensor, c.bits, err, c.want)
		}
	}
	f, err := safetensors.Parse(savedStates(t, "fp32"))
	if err != nil {
		t.Fatal(err)
	}
	o := tinyStates("fp32")
	if err := o.load("x", f); err != nil || o.Step != 2 {
		t.Fatalf("the saved state: %v, step %d, want step 2", err, o.Step)
	}
	f.Metadata["step"] = "-3"
	if err := o.load("x", f); err == nil || o.Step != 2 {
		t.Errorf("step -3: error %v, step %d after it", err, o.Step)
	}
}

func f32le(v float32) []byte {
	b := math.Float32bits(v)
	return []byte{byte(b), byte(b >> 8), byte(b >> 16), byte(b >> 24)}
}

// FuzzLoadState: optimizer state files of every kind, mutated, load or are
// refused with an error; never a panic. A state that loads has only
// in-range values.
func FuzzLoadState(f *testing.F) {
	kinds := []string{"fp32", "int8", "fp8"}
	for i, k := range kinds {
		f.Add(uint8(i), savedStates(f, k))
	}
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		sf, err := safetensors.Parse(b)
		if err != nil {
			return
		}
		o := tinyStates(kinds[int(kind)%len(kinds)])
		if err := o.load("fuzz.safetensors", sf); err != nil {
			return
		}
		for i, st := range o.State {
			switch s := st.(type) {
			case *FP32Moments:
				for j := range s.V {
					if !finite(s.M[j]) || !finiteNonNeg(s.V[j]) {
						t.Fatalf("%s[%d]: m %g, v %g loaded", o.Params[i].Name, j, s.M[j], s.V[j])
					}
				}
			case *Int8Moments:
				for j := range s.MAbs {
					if !finiteNonNeg(s.MAbs[j]) || !finiteNonNeg(s.VAbs[j]) {
						t.Fatalf("%s block %d: absmax %g, %g loaded", o.Params[i].Name, j, s.MAbs[j], s.VAbs[j])
					}
				}
			}
		}
		if o.Step < 0 {
			t.Fatalf("step %d loaded", o.Step)
		}
	})
}
