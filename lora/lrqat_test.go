package lora

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
)

// lrqatCase is a small LR-QAT layer with nonzero adapters, an input and a
// projection R that makes the loss sum(y * R).
type lrqatCase struct {
	l    *LRQAT
	x    *autograd.Var
	R    []float32
	n    int
	w0   []float32
	s0   []float32
	bits int
}

func newCase(t *testing.T, bits, group int) lrqatCase {
	rng := rand.New(rand.NewPCG(3, uint64(bits*100+group)))
	const rows, cols, rank, n = 6, 8, 3, 5
	w0 := make([]float32, rows*cols)
	for i := range w0 {
		w0[i] = float32(rng.NormFloat64())
	}
	s0 := make([]float32, rows*cols/group)
	for k := range s0 {
		var amax float32
		for _, v := range w0[k*group : (k+1)*group] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		s0[k] = amax / float32(int(1)<<(bits-1)) * 0.9 // some values clip
	}
	l, err := NewLRQAT(w0, rows, cols, bits, group, rank, 2, s0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.A.Data() {
		l.A.Data()[i] = float32(rng.NormFloat64() * 3)
	}
	x := autograd.NewParam(n, cols)
	for i := range x.Data() {
		x.Data()[i] = float32(rng.NormFloat64())
	}
	R := make([]float32, n*rows)
	for i := range R {
		R[i] = float32(rng.NormFloat64())
	}
	return lrqatCase{l, x, R, n, w0, s0, bits}
}

// surrogate is the straight-through surrogate of W_hat in float64: the
// rounding offsets and the clip mask are held at their values at the
// base point (a0, b0), so dW/dz = s inside the grid and 0 outside, the
// estimator LR-QAT's gradients implement.
func (c lrqatCase) surrogate(a, b, s []float64, a0, b0 []float64) []float64 {
	l := c.l
	z := func(a, b []float64) []float64 {
		out := make([]float64, l.Rows*l.Cols)
		for i := 0; i < l.Rows; i++ {
			for j := 0; j < l.Cols; j++ {
				var ab float64
				for k := 0; k < l.Rank; k++ {
					ab += a[i*l.Rank+k] * b[k*l.Cols+j]
				}
				out[i*l.Cols+j] = float64(l.Phi[i*l.Cols+j])/float64(int(1)<<(8-l.Bits)) + float64(l.Alpha)/float64(l.Rank)*ab
			}
		}
		return out
	}
	z0, z1 := z(a0, b0), z(a, b)
	lo, hi := -float64(int(1)<<(l.Bits-1)), float64(int(1)<<(l.Bits-1))-1
	w := make([]float64, len(z0))
	for i := range w {
		r := math.RoundToEven(z0[i])
		q := math.Min(math.Max(r, lo), hi)
		if r == q {
			q += z1[i] - z0[i]
		}
		w[i] = s[i/l.Group] * q
	}
	return w
}

func (c lrqatCase) loss64(w, x []float64) float64 {
	l := c.l
	var s float64
	for t := 0; t < c.n; t++ {
		for r := 0; r < l.Rows; r++ {
			var y float64
			for j := 0; j < l.Cols; j++ {
				y += x[t*l.Cols+j] * w[r*l.Cols+j]
			}
			s += y * float64(c.R[t*l.Rows+r])
		}
	}
	return s
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestLRQATGradients: the fused layer's output against a float64
// computation of W_hat, and its gradients with respect to A, B, s and x
// against central differences of the straight-through surrogate in
// float64, per channel and per group, 4 and 8 bits.
func TestLRQATGradients(t *testing.T) {
	for _, bc := range []struct{ bits, group int }{{4, 8}, {4, 4}, {8, 8}} {
		c := newCase(t, bc.bits, bc.group)
		l := c.l
		tp := autograd.NewTape()
		y := l.Forward(tp, c.x)
		loss := tp.Custom([]int{1}, []*autograd.Var{y}, func(out []float32) {
			var s float64
			for i, v := range y.Data() {
				s += float64(v * c.R[i])
			}
			out[0] = float32(s)
		}, func(dout []float32, d [][]float32) {
			for i := range d[0] {
				d[0][i] += dout[0] * c.R[i]
			}
		})
		tp.Backward(loss)
		a0, b0, s0, x0 := f64(l.A.Data()), f64(l.B.Data()), f64(l.Step.Data()), f64(c.x.Data())
		if q, _ := l.Ints(); true {
			lo, hi := -int8(1<<(bc.bits-1)), int8(1<<(bc.bits-1)-1)
			clipped := 0
			for _, v := range q {
				if v == lo || v == hi {
					clipped++
				}
			}
			if clipped == 0 || clipped == len(q) {
				t.Fatalf("%+v: %d of %d integers at the clip: the mask is not tested", bc, clipped, len(q))
			}
		}
		w := c.surrogate(a0, b0, s0, a0, b0)
		// forward: the surrogate at the base point is W_hat itself
		for tt := 0; tt < c.n; tt++ {
			for r := 0; r < l.Rows; r++ {
				var want float64
				for j := 0; j < l.Cols; j++ {
					want += x0[tt*l.Cols+j] * w[r*l.Cols+j]
				}
				if got := float64(y.Data()[tt*l.Rows+r]); math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
					t.Fatalf("%+v: y[%d,%d] = %g, float64 %g", bc, tt, r, got, want)
				}
			}
		}
		const eps = 1e-4
		check := func(name string, p []float64, got []float32, f func() float64) {
			for i := range p {
				v := p[i]
				p[i] = v + eps
				up := f()
				p[i] = v - eps
				down := f()
				p[i] = v
				want := (up - down) / (2 * eps)
				if math.Abs(float64(got[i])-want) > 1e-3*(1+math.Abs(want)) {
					t.Fatalf("%+v: d%s[%d] = %g, finite differences %g", bc, name, i, got[i], want)
				}
			}
		}
		a, b, s, x := f64(l.A.Data()), f64(l.B.Data()), f64(l.Step.Data()), f64(c.x.Data())
		f := func() float64 { return c.loss64(c.surrogate(a, b, s, a0, b0), x) }
		check("A", a, l.A.GradData(), f)
		check("B", b, l.B.GradData(), f)
		check("s", s, l.Step.GradData(), f)
		check("x", x, c.x.GradData(), f)
	}
}

// TestPhiFixedPoint: the frozen base is rne(clamp(W0/s0) * 2^(8-b)) as
// computed in float64, stored in int8.
func TestPhiFixedPoint(t *testing.T) {
	for _, bits := range []int{4, 8} {
		c := newCase(t, bits, 8)
		lo, hi := -float64(int(1)<<(bits-1)), float64(int(1)<<(bits-1))-1
		clipped := 0
		for i, w := range c.w0 {
			v := float64(w) / float64(c.s0[i/8])
			if v < lo || v > hi {
				clipped++
			}
			want := math.RoundToEven(math.Min(math.Max(v, lo), hi) * float64(int(1)<<(8-bits)))
			if float64(c.l.Phi[i]) != want {
				t.Fatalf("%d bits: phi[%d] = %d, want %g (w0 %g, s0 %g)", bits, i, c.l.Phi[i], want, w, c.s0[i/8])
			}
		}
		if clipped == 0 {
			t.Fatalf("%d bits: no value reaches the clip: the case does not test it", bits)
		}
	}
}

// TestLRQATApplyMatchesForward: the standalone W_hat (Apply) times x is
// the fused product, and Ints gives the same W.
func TestLRQATApplyMatchesForward(t *testing.T) {
	c := newCase(t, 4, 4)
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	w := c.l.Apply(tp, nil)
	q, wm := c.l.Ints()
	for i, v := range w.Data() {
		if v != wm[i] || v != c.l.Step.Data()[i/4]*float32(q[i]) {
			t.Fatalf("W[%d]: Apply %g, Ints %g = %g * %d", i, v, wm[i], c.l.Step.Data()[i/4], q[i])
		}
	}
	y1 := tp.Linear(c.x, w).Data()
	y2 := c.l.Forward(tp, c.x).Data()
	for i := range y1 {
		if y1[i] != y2[i] {
			t.Fatalf("y[%d]: %g through Apply, %g fused", i, y1[i], y2[i])
		}
	}
}
