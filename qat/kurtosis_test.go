package qat

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
)

// TestKurtosisGradient: the regulariser's gradient matches central
// differences of coef * mean_rows (K_row - target)^2 computed in float64;
// the tap's value passes through unchanged.
func TestKurtosisGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	rows, d := 3, 17
	x := autograd.NewParam(rows, d)
	for i := range x.Data() {
		x.Data()[i] = float32(rng.NormFloat64())
	}
	x.Data()[4] = 6 // an outlier: high kurtosis
	k := &Kurtosis{Coef: 0.3, Target: 1.8}
	tp := autograd.NewTape()
	y := k.Observe(tp, x)
	for i, v := range y.Data() {
		if v != x.Data()[i] {
			t.Fatal("the tap changed the activation")
		}
	}
	// upstream gradient zero: only the penalty's gradient reaches x
	l := tp.Custom([]int{1}, []*autograd.Var{y}, func(o []float32) { o[0] = 0 }, func(_ []float32, d [][]float32) {})
	tp.Backward(l)
	x64 := make([]float64, len(x.Data()))
	for i, v := range x.Data() {
		x64[i] = float64(v)
	}
	pen := func() float64 {
		var s float64
		for r := 0; r < rows; r++ {
			row := x64[r*d : (r+1)*d]
			var mu, m2, m4 float64
			for _, v := range row {
				mu += v
			}
			mu /= float64(d)
			for _, v := range row {
				m2 += (v - mu) * (v - mu)
				m4 += math.Pow(v-mu, 4)
			}
			m2, m4 = m2/float64(d), m4/float64(d)
			K := m4 / ((m2 + kurtEps) * (m2 + kurtEps))
			s += (K - 1.8) * (K - 1.8)
		}
		return 0.3 * s / float64(rows)
	}
	for i := range x64 {
		x0 := x64[i]
		x64[i] = x0 + 1e-6
		p := pen()
		x64[i] = x0 - 1e-6
		m := pen()
		x64[i] = x0
		fd := (p - m) / 2e-6
		if g := float64(x.GradData()[i]); math.Abs(g-fd) > 1e-4*(1+math.Abs(fd)) {
			t.Errorf("x[%d]: gradient %g, finite difference %g", i, g, fd)
		}
	}
	if kk := k.Mean(); kk < 3 {
		t.Errorf("mean kurtosis %g of rows with an outlier, want above 3", kk)
	}
}
