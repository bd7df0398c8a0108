package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSparseAddsToDense: the per-channel int4 product of codes that are 0
// at the kept positions plus the sparse correction equals a float64
// product with the dense matrix holding the kept values, for several
// tokens; bad index lists are refused.
func TestSparseAddsToDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	const rows, k, n = 8, 96, 3
	codes := make([]int8, rows*k)
	for i := range codes {
		codes[i] = int8(rng.IntN(15) - 7)
	}
	scale := make([]float32, rows)
	for i := range scale {
		scale[i] = 0.05 + float32(rng.Float64())*0.1
	}
	idx := []int32{3, 97, 100, 300, 767}
	val := []float32{2.5, -3, 1.25, 7, -0.5}
	for _, i := range idx {
		codes[i] = 0
	}
	w, err := NewChannelInt(4, codes, scale, rows, k)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSparse(rows, k, idx, val)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, n*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	var a TokenU8
	QuantizeTokens(&a, x, n, k)
	y := make([]float32, n*rows)
	GemmChannel(w, &a, y)
	xh := make([]float32, n*k)
	for c := 0; c < n; c++ {
		a.Dequantize(xh[c*k:(c+1)*k], c)
	}
	s.AddTo(y, xh, n)
	dense := make([]float64, rows*k)
	for i, q := range codes {
		dense[i] = float64(q) * float64(scale[i/k])
	}
	for j, i := range idx {
		dense[i] = float64(val[j])
	}
	for c := 0; c < n; c++ {
		for r := 0; r < rows; r++ {
			var want float64
			for j := 0; j < k; j++ {
				want += dense[r*k+j] * float64(xh[c*k+j])
			}
			if got := float64(y[c*rows+r]); math.Abs(got-want) > 1e-4*(1+math.Abs(want)) {
				t.Fatalf("y[%d,%d] = %g, want %g", c, r, got, want)
			}
		}
	}
	if _, err := NewSparse(rows, k, []int32{5, 5}, []float32{1, 2}); err == nil {
		t.Fatal("repeated index accepted")
	}
	if _, err := NewSparse(rows, k, []int32{rows * k}, []float32{1}); err == nil {
		t.Fatal("index past the end accepted")
	}
}
