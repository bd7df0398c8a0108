package qat

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/kernels"
)

// TestLSQPlusGradients: LSQ+ (learned step s and offset beta, unsigned
// grid [0, 15]) against the formulas of docs/algorithms.md section 2 in
// float64: values, the straight-through mask, ds = g*sum(dy*(rne(u)-u))
// inside and g*sum(dy*bound) outside, dbeta = g*sum(dy) over clipped
// values, and central differences of the surrogate in s and beta.
func TestLSQPlusGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	spec := Spec{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "tensor", Scale: "lsq"}
	rows, row := 6, 16
	q, err := NewQuantizer(spec, row, row)
	if err != nil {
		t.Fatal(err)
	}
	q.Activation = true
	x := randVar(rng, 1, rows, row)
	for i := range x.Data() {
		x.Data()[i] += 0.7 // skewed, as activations after SiLU are
	}
	q.Step.Data()[0], q.Offset.Data()[0] = 0.17, -0.9 // some values clip on both sides
	dy := make([]float32, rows*row)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	y, dx := apply(q, x, dy)
	s, b := float64(q.Step.Data()[0]), float64(q.Offset.Data()[0])
	n, p := 0.0, 15.0
	g := 1 / math.Sqrt(float64(row)*p) // activations: N = features
	var wantS, wantB float64
	type term struct{ e, dy, x float64 }
	var terms []term
	clipped := 0
	for i, xv := range x.Data() {
		u := (float64(xv) - b) / s
		var e, m float64
		switch {
		case u < n:
			e = n
			wantB += float64(dy[i])
			clipped++
		case u > p:
			e = p
			wantB += float64(dy[i])
			clipped++
		default:
			e, m = math.RoundToEven(u)-u, 1
		}
		terms = append(terms, term{e, float64(dy[i]), float64(xv)})
		wantS += float64(dy[i]) * e
		if wy := math.RoundToEven(math.Max(math.Min(u, p), n))*s + b; math.Abs(float64(y[i])-wy) > 1e-6 {
			t.Fatalf("y[%d] = %g, want %g", i, y[i], wy)
		}
		if float64(dx[i]) != float64(dy[i])*m {
			t.Fatalf("dx[%d] = %g, want %g", i, dx[i], float64(dy[i])*m)
		}
	}
	if clipped == 0 || clipped == len(dy) {
		t.Fatalf("%d of %d values clipped: the test needs both kinds", clipped, len(dy))
	}
	wantS, wantB = g*wantS, g*wantB
	// surrogate with residuals frozen: inside y = x + s*e (e = rne(u)-u),
	// outside y = s*bound + beta.
	sur := func(s, b float64) float64 {
		var l float64
		for _, tm := range terms {
			if tm.e == n || tm.e == p {
				l += tm.dy * (s*tm.e + b)
			} else {
				l += tm.dy * (tm.x + s*tm.e)
			}
		}
		return l
	}
	h := 1e-6
	fdS := g * (sur(s+h, b) - sur(s-h, b)) / (2 * h)
	fdB := g * (sur(s, b+h) - sur(s, b-h)) / (2 * h)
	gotS, gotB := float64(q.Step.GradData()[0]), float64(q.Offset.GradData()[0])
	if math.Abs(gotS-wantS) > 1e-5*(1+math.Abs(wantS)) || math.Abs(gotS-fdS) > 1e-4*(1+math.Abs(fdS)) {
		t.Errorf("step gradient %g, formula %g, finite differences %g", gotS, wantS, fdS)
	}
	if math.Abs(gotB-wantB) > 1e-5*(1+math.Abs(wantB)) || math.Abs(gotB-fdB) > 1e-4*(1+math.Abs(fdB)) {
		t.Errorf("offset gradient %g, formula %g, finite differences %g", gotB, wantB, fdB)
	}
}

// TestMSESearch: the mse scale is the best of the 80 shrunk ranges by a
// float64 brute force over the same candidates, and beats min/max on data
// with heavy tails; the quantizer then applies exactly that grid.
func TestMSESearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, sym := range []bool{true, false} {
		spec := Spec{Format: kernels.Int, Bits: 4, Symmetric: sym, Granularity: "channel", Scale: "mse"}
		rows, row := 4, 256
		q, err := NewQuantizer(spec, row, rows*row)
		if err != nil {
			t.Fatal(err)
		}
		x := randVar(rng, 1, rows, row)
		for i := range x.Data() { // heavy tails (Laplace), like LLM weights
			x.Data()[i] = float32(rng.ExpFloat64() * float64(2*rng.IntN(2)-1))
		}
		q.Init(x.Data())
		var sumGot, sumMinmax float64
		qmin, qmax := spec.Grid()
		errOf := func(g []float32, s, z float64) float64 {
			var e float64
			for _, v := range g {
				tq := math.Min(math.Max(math.RoundToEven(float64(v)/s)+z, float64(qmin)), float64(qmax))
				d := (tq-z)*s - float64(v)
				e += d * d
			}
			return e
		}
		for k := 0; k < rows; k++ {
			g := x.Data()[k*row : (k+1)*row]
			lo, hi := float64(g[0]), float64(g[0])
			for _, v := range g {
				lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
			}
			best, bestS := math.Inf(1), 0.0
			var minmax float64
			for i := 0; i < 80; i++ {
				pr := 1 - float64(i)/100
				var s, z float64
				if sym {
					s = pr * math.Max(-lo, hi) / ((float64(qmax) - float64(qmin)) / 2)
				} else {
					l, h := pr*math.Min(lo, 0), pr*math.Max(hi, 0)
					s = (h - l) / float64(qmax-qmin)
					z = math.Min(math.Max(float64(qmin)-math.RoundToEven(l/s), float64(qmin)), float64(qmax))
				}
				e := errOf(g, s, z)
				if i == 0 {
					minmax = e
				}
				if e < best {
					best, bestS = e, s
				}
			}
			gotS, gotZ := float64(q.Step.Data()[k]), float64(q.Zero.Data()[k])
			got := errOf(g, gotS, gotZ)
			if got > best*(1+1e-4)+1e-9 {
				t.Errorf("sym=%v row %d: step %g has error %g, search best %g (step %g)", sym, k, gotS, got, best, bestS)
			}
			sumGot += got
			sumMinmax += minmax
		}
		t.Logf("sym=%v: squared error %.4g, min/max scales %.4g", sym, sumGot, sumMinmax)
		if !(sumGot < 0.9*sumMinmax) {
			t.Errorf("sym=%v: mse scales' error %g not below min/max's %g", sym, sumGot, sumMinmax)
		}
		dy := make([]float32, rows*row)
		y, _ := apply(q, x, dy)
		for i, v := range x.Data() {
			k := i / row
			s, z := float64(q.Step.Data()[k]), float64(q.Zero.Data()[k])
			tq := math.Min(math.Max(math.RoundToEven(float64(v)/s)+z, float64(qmin)), float64(qmax))
			if want := (tq - z) * s; math.Abs(float64(y[i])-want) > 1e-6*(1+math.Abs(want)) {
				t.Fatalf("sym=%v: y[%d] = %g, want %g", sym, i, y[i], want)
			}
		}
	}
}

// TestCalibrationSample: the range and mean |x| cover every value; the
// sample is every value until the cap, then a uniform sample of it.
func TestCalibrationSample(t *testing.T) {
	c := &calibration{rng: 1}
	x := make([]float32, 3*sampleCap)
	for i := range x {
		x[i] = float32(i%1000) - 300
	}
	x[len(x)-1] = 5000
	c.record(x[:100])
	if len(c.sample) != 100 || c.sample[99] != x[99] {
		t.Fatalf("sample of %d values after 100", len(c.sample))
	}
	c.record(x[100:])
	if len(c.sample) != sampleCap || c.lo != -300 || c.hi != 5000 || c.n != int64(len(x)) {
		t.Fatalf("sample %d, range [%g, %g], n %d", len(c.sample), c.lo, c.hi, c.n)
	}
	// Uniform: the sample's mean is near the data's (~199.5, sd ~289 over
	// 2^18 values: a standard error under 1).
	var mean, want float64
	for _, v := range c.sample {
		mean += float64(v)
	}
	for _, v := range x {
		want += float64(v)
	}
	mean /= float64(len(c.sample))
	want /= float64(len(x))
	if math.Abs(mean-want) > 5 {
		t.Errorf("sample mean %g, data mean %g", mean, want)
	}
}
