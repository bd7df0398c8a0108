package optim

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"qat/autograd"
	"qat/kernels"
)

// TestAdamWAgainstFloat64: several steps with changing gradients and
// learning rates, decayed and non-decayed tensors, every kernel set,
// against the update formulas in float64.
func TestAdamWAgainstFloat64(t *testing.T) {
	saved := kernels.Active
	defer kernels.Use(saved)
	for _, set := range kernels.Variants() {
		kernels.Use(set)
		rng := rand.New(rand.NewPCG(5, 6))
		c := AdamWConfig{Beta1: 0.9, Beta2: 0.99, Eps: 1e-6, WeightDecay: 0.2}
		a, b := autograd.NewParam(37), autograd.NewParam(5, 3)
		ps := []Param{{"a", a, true, 0}, {"b", b, false, 0}}
		ref := [][]float64{make([]float64, 37), make([]float64, 15)}
		m := [][]float64{make([]float64, 37), make([]float64, 15)}
		v := [][]float64{make([]float64, 37), make([]float64, 15)}
		for i, p := range ps {
			for j := range p.Var.Data() {
				p.Var.Data()[j] = float32(rng.NormFloat64())
				ref[i][j] = float64(p.Var.Data()[j])
			}
		}
		o := NewAdamW(c, ps, nil)
		for step := 1; step <= 6; step++ {
			lr := 0.01 * float64(step)
			for i, p := range ps {
				wd := 0.0
				if p.Decay {
					wd = c.WeightDecay
				}
				for j := range p.Var.GradData() {
					g := rng.NormFloat64() * math.Pow(10, float64(j%5-2))
					p.Var.GradData()[j] = float32(g)
					g = float64(float32(g))
					m[i][j] = c.Beta1*m[i][j] + (1-c.Beta1)*g
					v[i][j] = c.Beta2*v[i][j] + (1-c.Beta2)*g*g
					mh := m[i][j] / (1 - math.Pow(c.Beta1, float64(step)))
					vh := v[i][j] / (1 - math.Pow(c.Beta2, float64(step)))
					ref[i][j] = ref[i][j]*(1-lr*wd) - lr*mh/(math.Sqrt(vh)+c.Eps)
				}
			}
			o.Update(lr)
		}
		for i, p := range ps {
			for j, x := range p.Var.Data() {
				if d := math.Abs(float64(x) - ref[i][j]); d > 1e-5*(1+math.Abs(ref[i][j])) {
					t.Errorf("%s: param %d[%d] = %.7g, reference %.7g", set.Name, i, j, x, ref[i][j])
				}
			}
		}
	}
}

func TestClipGradNorm(t *testing.T) {
	a, b := autograd.NewParam(2), autograd.NewParam(1)
	copy(a.GradData(), []float32{3, 0})
	copy(b.GradData(), []float32{4})
	if n := ClipGradNorm([]*autograd.Var{a, b}, 1); math.Abs(n-5) > 1e-6 {
		t.Fatalf("norm %g, want 5", n)
	}
	if g := a.GradData()[0]; math.Abs(float64(g)-0.6) > 1e-5 {
		t.Errorf("clipped gradient %g, want 0.6", g)
	}
	if n := ClipGradNorm([]*autograd.Var{a, b}, 10); math.Abs(n-1) > 1e-5 {
		t.Errorf("norm after clipping %g, want 1", n)
	}
}

// TestSaveLoad: moments and step survive a checkpoint exactly, and the next
// update after loading equals the update without the round trip.
func TestSaveLoad(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	mk := func() (*AdamW, *autograd.Var) {
		w := autograd.NewParam(4, 3)
		for i := range w.Data() {
			w.Data()[i] = float32(i)
		}
		return NewAdamW(DefaultAdamW, []Param{{Name: "w", Var: w, Decay: true}}, nil), w
	}
	a, wa := mk()
	for s := 0; s < 3; s++ {
		for i := range wa.GradData() {
			wa.GradData()[i] = float32(rng.NormFloat64())
		}
		a.Update(0.01)
	}
	path := filepath.Join(t.TempDir(), "opt.safetensors")
	if err := a.Save(path); err != nil {
		t.Fatal(err)
	}
	b, wb := mk()
	copy(wb.Data(), wa.Data())
	if err := b.Load(path); err != nil {
		t.Fatal(err)
	}
	if b.Step != 3 || b.StateBytes() != 8*12 {
		t.Fatalf("step %d, %d bytes", b.Step, b.StateBytes())
	}
	for i := range wa.GradData() {
		wa.GradData()[i] = float32(rng.NormFloat64())
		wb.GradData()[i] = wa.GradData()[i]
	}
	a.Update(0.01)
	b.Update(0.01)
	for i := range wa.Data() {
		if wa.Data()[i] != wb.Data()[i] {
			t.Fatalf("after load, update differs at %d", i)
		}
	}
	c, _ := mk()
	c.Params[0].Name = "other"
	if err := c.Load(path); err == nil {
		t.Error("loaded state saved under another parameter name")
	}
}

// TestLRScale: a parameter with LRScale k moves as one updated with k
// times the learning rate.
func TestLRScale(t *testing.T) {
	a, b := autograd.NewParam(8), autograd.NewParam(8)
	for i := range a.Data() {
		a.Data()[i], b.Data()[i] = float32(i), float32(i)
		a.GradData()[i], b.GradData()[i] = float32(i)-3, float32(i)-3
	}
	c := AdamWConfig{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8}
	oa := NewAdamW(c, []Param{{Name: "a", Var: a, LRScale: 0.25}}, nil)
	ob := NewAdamW(c, []Param{{Name: "b", Var: b}}, nil)
	oa.Update(0.1)
	ob.Update(0.025)
	for i := range a.Data() {
		if a.Data()[i] != b.Data()[i] {
			t.Fatalf("[%d]: %g with LRScale 0.25, %g at a quarter of the rate", i, a.Data()[i], b.Data()[i])
		}
	}
	if a.Data()[0] == 0 {
		t.Fatal("no update")
	}
}
