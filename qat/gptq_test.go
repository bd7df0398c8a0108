package qat

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
	"qat/layers"
)

// obq is an independent float64 GPTQ: the unblocked optimal-brain
// quantizer form, with the inverse Hessian from Gauss-Jordan elimination
// and updated after each column (GPTQ's Cholesky rows are this sequence
// of inverses).
func obq(w []float64, rows, cols int, H []float64, c GPTQConfig, perm []int) []int8 {
	n := cols
	A := make([]float64, n*2*n)
	var tr float64
	for i := 0; i < n; i++ {
		tr += H[i*n+i]
	}
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			A[i*2*n+j] = H[i*n+j]
		}
		A[i*2*n+i] += c.Damp * tr / float64(n)
		A[i*2*n+n+i] = 1
	}
	for i := 0; i < n; i++ { // Gauss-Jordan, no pivoting (positive definite)
		p := A[i*2*n+i]
		for j := 0; j < 2*n; j++ {
			A[i*2*n+j] /= p
		}
		for k := 0; k < n; k++ {
			if k != i {
				f := A[k*2*n+i]
				for j := 0; j < 2*n; j++ {
					A[k*2*n+j] -= f * A[i*2*n+j]
				}
			}
		}
	}
	hinv := make([]float64, n*n)
	for i := 0; i < n; i++ {
		copy(hinv[i*n:(i+1)*n], A[i*2*n+n:(i+1)*2*n])
	}
	group := c.Group
	if group == 0 {
		group = cols
	}
	qmin, qmax := -math.Ldexp(1, c.Bits-1), math.Ldexp(1, c.Bits-1)-1
	scale := func(vals []float64, r, j0 int) float64 {
		var amax float64
		for j := j0; j < j0+group; j++ {
			amax = math.Max(amax, math.Abs(vals[r*cols+j]))
		}
		return float64(float32(amax / ((qmax - qmin) / 2)))
	}
	static := c.Group == 0 || c.ActOrder
	sc := make([]float64, rows*(cols/group))
	if static {
		for r := 0; r < rows; r++ {
			for g := 0; g < cols/group; g++ {
				sc[r*(cols/group)+g] = scale(w, r, g*group)
			}
		}
	}
	done := make([]bool, n)
	codes := make([]int8, rows*cols)
	for _, i := range perm {
		g := i / group
		if !static && i%group == 0 {
			for r := 0; r < rows; r++ {
				sc[r*(cols/group)+g] = scale(w, r, i)
			}
		}
		for r := 0; r < rows; r++ {
			s := sc[r*(cols/group)+g]
			q := math.Min(math.Max(math.RoundToEven(w[r*cols+i]/s), qmin), qmax)
			codes[r*cols+i] = int8(q)
			e := (w[r*cols+i] - q*s) / hinv[i*n+i]
			for j := 0; j < n; j++ {
				if !done[j] && j != i {
					w[r*cols+j] -= e * hinv[i*n+j]
				}
			}
		}
		done[i] = true
		d := hinv[i*n+i]
		row := append([]float64(nil), hinv[i*n:(i+1)*n]...)
		for a := 0; a < n; a++ {
			for b := 0; b < n; b++ {
				hinv[a*n+b] -= row[a] * row[b] / d
			}
		}
	}
	return codes
}

// correlated returns rows of inputs whose columns share a few factors
// (as activations do), with uneven column scales.
func correlated(rng *rand.Rand, n, cols int) []float32 {
	const k = 4
	f := make([]float64, k*cols)
	for i := range f {
		f[i] = rng.NormFloat64()
	}
	x := make([]float32, n*cols)
	for t := 0; t < n; t++ {
		z := [k]float64{}
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		for j := 0; j < cols; j++ {
			v := 0.3 * rng.NormFloat64()
			for i := 0; i < k; i++ {
				v += z[i] * f[i*cols+j]
			}
			x[t*cols+j] = float32(v * (1 + float64(j%5)))
		}
	}
	return x
}

// TestGPTQ: the blocked Cholesky GPTQ gives the integer codes of an
// independent float64 OBQ (per channel with act-order, static groups,
// groups without act-order; blocks smaller than the width so the lazy
// batch updates run), its outputs are on the grid, and its layer-output
// error on correlated inputs is below round-to-nearest's.
func TestGPTQ(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	const rows, cols, n = 12, 48, 400
	x := correlated(rng, n, cols)
	h := NewHessian(cols)
	h.Add(x[:n/2*cols], n/2)
	h.Add(x[n/2*cols:], n/2)
	w0 := make([]float32, rows*cols)
	for i := range w0 {
		w0[i] = float32(rng.NormFloat64())
	}
	for _, c := range []GPTQConfig{
		{Bits: 4, Damp: 0.01, BlockSize: 16, ActOrder: true},
		{Bits: 4, Group: 16, Damp: 0.01, BlockSize: 16, ActOrder: true},
		{Bits: 3, Group: 16, Damp: 0.01, BlockSize: 32},
	} {
		w := append([]float32(nil), w0...)
		codes, scales, err := GPTQ(w, rows, cols, h, c)
		if err != nil {
			t.Fatal(err)
		}
		perm := make([]int, cols)
		for i := range perm {
			perm[i] = i
		}
		H := h.full()
		if c.ActOrder {
			for i := 0; i < cols; i++ { // stable sort by descending diagonal, as GPTQ
				for j := i + 1; j < cols; j++ {
					if H[perm[j]*cols+perm[j]] > H[perm[i]*cols+perm[i]] {
						perm[i], perm[j] = perm[j], perm[i]
					}
				}
			}
		}
		wf := make([]float64, len(w0))
		for i, v := range w0 {
			wf[i] = float64(v)
		}
		want := obq(wf, rows, cols, H, c, perm)
		differ := 0
		for i := range codes {
			if codes[i] != want[i] {
				differ++
			}
		}
		if differ > 0 {
			t.Fatalf("%+v: %d of %d codes differ from the float64 OBQ", c, differ, len(codes))
		}
		group := max(c.Group, 1)
		if c.Group == 0 {
			group = cols
		}
		for i, v := range w {
			if v != float32(codes[i])*scales[(i/cols)*(cols/group)+(i%cols)/group] {
				t.Fatalf("%+v: w[%d] = %g is not its code times its scale", c, i, v)
			}
		}
		// layer output error, GPTQ against RTN with the same scales
		rtn := make([]float32, len(w0))
		lo, hi := -math.Ldexp(1, c.Bits-1), math.Ldexp(1, c.Bits-1)-1
		for i, v := range w0 {
			s := float64(scales[(i/cols)*(cols/group)+(i%cols)/group])
			rtn[i] = float32(math.Min(math.Max(math.RoundToEven(float64(v)/s), lo), hi) * s)
		}
		if c.Group == 0 || c.ActOrder { // RTN with the GPTQ scales is RTN only when they are static
			eg, er := outErr(x, w0, w, n, rows, cols), outErr(x, w0, rtn, n, rows, cols)
			if !(eg < 0.8*er) {
				t.Fatalf("%+v: output error %g with GPTQ, %g with RTN", c, eg, er)
			}
			t.Logf("%+v: output error %.4g GPTQ, %.4g RTN", c, eg, er)
		}
	}
}

func outErr(x, w, q []float32, n, rows, cols int) float64 {
	var s float64
	for t := 0; t < n; t++ {
		for r := 0; r < rows; r++ {
			var d float64
			for j := 0; j < cols; j++ {
				d += float64(x[t*cols+j]) * (float64(w[r*cols+j]) - float64(q[r*cols+j]))
			}
			s += d * d
		}
	}
	return s
}

// TestGPTQKeep: kept weights get code 0 and hold an fp16 value, stay out
// of the scales, and keeping them lowers the layer's output error.
func TestGPTQKeep(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const rows, cols, n = 8, 64, 300
	x := correlated(rng, n, cols)
	h := NewHessian(cols)
	h.Add(x, n)
	w0 := make([]float32, rows*cols)
	for i := range w0 {
		w0[i] = float32(rng.NormFloat64())
	}
	w0[10], w0[200] = 30, -25 // would dominate their groups' ranges
	c := GPTQConfig{Bits: 3, Group: 16, Damp: 0.01, BlockSize: 16, ActOrder: true}
	plain := append([]float32(nil), w0...)
	if _, _, err := GPTQ(plain, rows, cols, h, c); err != nil {
		t.Fatal(err)
	}
	c.Keep = make([]bool, rows*cols)
	c.Keep[10], c.Keep[200] = true, true
	kept := append([]float32(nil), w0...)
	codes, scales, err := GPTQ(kept, rows, cols, h, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{10, 200} {
		if codes[i] != 0 || kept[i] != fp16(kept[i]) || math.Abs(float64(kept[i]-w0[i])) > 2 {
			t.Fatalf("kept %d: code %d, value %g (was %g)", i, codes[i], kept[i], w0[i])
		}
	}
	if s := scales[(10/cols)*(cols/16)+(10%cols)/16]; s > 1 {
		t.Fatalf("the kept 30 set its group's scale to %g", s)
	}
	if eg, ek := outErr(x, w0, plain, n, rows, cols), outErr(x, w0, kept, n, rows, cols); !(ek < eg) {
		t.Fatalf("output error %g keeping the outliers, %g without", ek, eg)
	} else {
		t.Logf("output error %.4g keeping 2 weights, %.4g without", ek, eg)
	}
}

// TestApplyGPTQHFFeatures: GPTQ runs on every block linear of a model with
// head_dim != dim/heads (o_proj's input 128 wide on a 64-wide residual)
// and q/k/v biases, each Hessian as wide as its layer's input, and the
// quantized model's loss stays near the full-precision one.
func TestApplyGPTQHFFeatures(t *testing.T) {
	c := testCfg
	c.HeadDimension, c.QKVBias = 32, true
	m := layers.New(c)
	m.Init(3)
	rng := rand.New(rand.NewPCG(5, 5))
	ids, tg := tokens(rng, 64, c.Vocab), tokens(rng, 64, c.Vocab)
	loss := func() float64 {
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		return float64(m.Loss(tp, ids, tg, 4, 16).Data()[0])
	}
	fp := loss()
	if err := Prepare(m, Presets["w4a8"]); err != nil {
		t.Fatal(err)
	}
	n, err := ApplyGPTQ(m, GPTQConfig{Bits: 4, Damp: 0.01, BlockSize: 32}, func() error { loss(); return nil }, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	if n != 7*c.Layers {
		t.Fatalf("GPTQ quantized %d layers, want %d", n, 7*c.Layers)
	}
	if q := loss(); math.IsNaN(q) || math.Abs(q-fp) > 0.05*fp {
		t.Fatalf("loss %g after GPTQ, %g in full precision", q, fp)
	}
}
