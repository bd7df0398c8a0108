package qat

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"qat/autograd"
	"qat/layers"
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

// kurtPenalty64 is coef * mean over rows of (K_row - target)^2 in float64,
// K over each row of y (rows x d).
func kurtPenalty64(y []float64, rows, d int, coef, target float64) float64 {
	var s float64
	for r := 0; r < rows; r++ {
		row := y[r*d : (r+1)*d]
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
		s += (K - target) * (K - target)
	}
	return coef * s / float64(rows)
}

// TestKurtosisOutputTap: with on: output the tap regularises the linear's
// product: the gradients of x and W are those of sum(dy * y) + coef *
// mean_tokens (K(y_token) - target)^2, K over the output features, against
// central differences of that loss in float64.
func TestKurtosisOutputTap(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	rows, in, out := 3, 6, 11
	x, w := autograd.NewParam(rows, in), autograd.NewParam(out, in)
	for i := range x.Data() {
		x.Data()[i] = float32(rng.NormFloat64())
	}
	for i := range w.Data() {
		w.Data()[i] = float32(rng.NormFloat64() * 0.5)
	}
	w.Data()[2*in+1] = 3 // one output feature large: high kurtosis
	dy := make([]float32, rows*out)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64() * 0.1)
	}
	m := layers.New(testCfg)
	if _, err := Taps(m, KurtosisConfig{Coef: 0.2, Target: 1.8, Match: "model.layers.0.*", On: "sideways"}); err == nil {
		t.Fatal("on: sideways accepted")
	}
	taps, err := Taps(m, KurtosisConfig{Coef: 0.2, Target: 1.8, Match: "model.layers.0.*", On: KurtosisOnOutput})
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range m.Linears() {
		k := taps[ln.Name]
		if len(ln.Linear.Observers) != 0 || len(ln.Linear.OutputObservers) != 1 || ln.Linear.OutputObservers[0] != k {
			t.Fatalf("%s: the tap is not the linear's one output observer", ln.Name)
		}
		if want := strings.HasPrefix(ln.Name, "model.layers.0."); (k.Coef != 0) != want || Regularised(ln.Linear) != want {
			t.Fatalf("%s: coef %g, regularised %v", ln.Name, k.Coef, Regularised(ln.Linear))
		}
	}
	k := taps["model.layers.0.mlp.up_proj"]
	l := &layers.Linear{Weight: w, OutputObservers: []layers.Observer{k}}
	tp := autograd.NewTape()
	y := l.Forward(tp, x)
	loss := tp.Custom([]int{1}, []*autograd.Var{y}, func(o []float32) { o[0] = 0 }, func(_ []float32, d [][]float32) {
		for i := range d[0] {
			d[0][i] += dy[i]
		}
	})
	tp.Backward(loss)
	x64, w64 := f64s(x.Data()), f64s(w.Data())
	f := func() float64 {
		y := make([]float64, rows*out)
		var s float64
		for r := 0; r < rows; r++ {
			for o := 0; o < out; o++ {
				for i := 0; i < in; i++ {
					y[r*out+o] += x64[r*in+i] * w64[o*in+i]
				}
				s += float64(dy[r*out+o]) * y[r*out+o]
			}
		}
		return s + kurtPenalty64(y, rows, out, 0.2, 1.8)
	}
	check := func(name string, v []float64, grad []float32) {
		for i := range v {
			v0 := v[i]
			v[i] = v0 + 1e-6
			p := f()
			v[i] = v0 - 1e-6
			m := f()
			v[i] = v0
			fd := (p - m) / 2e-6
			if g := float64(grad[i]); math.Abs(g-fd) > 1e-3*(1+math.Abs(fd)) {
				t.Errorf("%s[%d]: gradient %g, finite difference %g", name, i, g, fd)
			}
		}
	}
	check("x", x64, x.GradData())
	check("W", w64, w.GradData())
	// the measured kurtosis is the output's, per token over its features
	y64 := make([]float64, rows*out)
	for i, v := range y.Data() {
		y64[i] = float64(v)
	}
	var meanK float64 // (K - 0)^2 of one row, coef 1: K^2
	for r := 0; r < rows; r++ {
		meanK += math.Sqrt(kurtPenalty64(y64[r*out:(r+1)*out], 1, out, 1, 0))
	}
	meanK /= float64(rows)
	if got := k.Mean(); math.Abs(got-meanK) > 1e-4*meanK {
		t.Errorf("measured kurtosis %g, the outputs' %g", got, meanK)
	}
}
