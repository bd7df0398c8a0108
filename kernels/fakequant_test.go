package kernels

import (
	"math/rand/v2"
	"testing"
)

// TestFakeQuantSIMDMatchesGo: the C fake-quant kernels give the Go loops'
// results bit for bit (values, masks, ranges, masked gradients), including
// exact rounding ties.
func TestFakeQuantSIMDMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, group := range []int{1, 7, 32, 256} {
		n := group * 9
		x := randSlice(rng, n)
		for i := 0; i < n; i += 5 {
			x[i] = float32(rng.IntN(16)-8) * 0.5 // ties at x/s = k + 0.5 when s = 1
		}
		scale, zero := make([]float32, n/group), make([]float32, n/group)
		for k := range scale {
			scale[k] = []float32{1, 0.37, 2.5e-3}[k%3]
			zero[k] = float32(k % 4)
		}
		run := func(simd bool) ([]float32, []uint8, []float32, []float32, []float32, []float32) {
			useSIMD = simd
			defer func() { useSIMD = true }()
			y, mask := make([]float32, n), make([]uint8, n)
			FakeQuantAffine(y, mask, x, scale, zero, group, -8, 7)
			am, lo, hi := make([]float32, n/group), make([]float32, n/group), make([]float32, n/group)
			AbsMaxGroups(am, x, group)
			MinMaxGroups(lo, hi, x, group)
			dx := randSlice(rand.New(rand.NewPCG(1, 1)), n)
			MaskGrad(dx, x, mask)
			return y, mask, am, lo, hi, dx
		}
		y1, m1, a1, l1, h1, d1 := run(false)
		y2, m2, a2, l2, h2, d2 := run(true)
		for i := range y1 {
			if y1[i] != y2[i] || m1[i] != m2[i] || d1[i] != d2[i] {
				t.Fatalf("group %d, %d: Go (%g, %d, %g), C (%g, %d, %g)", group, i, y1[i], m1[i], d1[i], y2[i], m2[i], d2[i])
			}
		}
		for k := range a1 {
			if a1[k] != a2[k] || l1[k] != l2[k] || h1[k] != h2[k] {
				t.Fatalf("group %d, range %d differs", group, k)
			}
		}
	}
}

// TestLSQSIMDMatchesGo: LSQ's C forward equals the Go loop bit for bit;
// its gradients agree to float rounding (the step sum is accumulated in a
// different order).
func TestLSQSIMDMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	for _, group := range []int{1, 13, 64} {
		n := group * 5
		x, dy := randSlice(rng, n), randSlice(rng, n)
		scale := make([]float32, n/group)
		for k := range scale {
			scale[k] = 0.1 + 0.2*float32(k)
		}
		run := func(simd bool) ([]float32, []uint8, []float32, []float32) {
			useSIMD = simd
			defer func() { useSIMD = true }()
			y, mask := make([]float32, n), make([]uint8, n)
			FakeQuantLSQ(y, mask, x, scale, group, 8, 7)
			dx, ds := make([]float32, n), make([]float32, n/group)
			LSQGrad(dx, ds, dy, x, scale, group, 8, 7, 0.1)
			return y, mask, dx, ds
		}
		y1, m1, d1, s1 := run(false)
		y2, m2, d2, s2 := run(true)
		for i := range y1 {
			if y1[i] != y2[i] || m1[i] != m2[i] || d1[i] != d2[i] {
				t.Fatalf("group %d, %d: Go (%g %d %g), C (%g %d %g)", group, i, y1[i], m1[i], d1[i], y2[i], m2[i], d2[i])
			}
		}
		for k := range s1 {
			if d := s1[k] - s2[k]; d > 1e-5 || d < -1e-5 {
				t.Fatalf("group %d: step gradient %g (Go) vs %g (C)", group, s1[k], s2[k])
			}
		}
	}
}

// BenchmarkFakeQuant reports GB/s of the per-token int8 fake quantizer
// (range pass + quantize pass: 4 bytes read twice, 4 written, 1 mask byte).
func BenchmarkFakeQuant(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const rows, row = 1024, 704
	x := randSlice(rng, rows*row)
	y, mask := make([]float32, rows*row), make([]uint8, rows*row)
	lo, hi := make([]float32, rows), make([]float32, rows)
	zero := make([]float32, rows)
	for _, simd := range []bool{false, true} {
		name := "go"
		if simd {
			name = "simd"
		}
		b.Run(name, func(b *testing.B) {
			useSIMD = simd
			defer func() { useSIMD = true }()
			b.SetBytes(int64(rows * row * 13))
			for i := 0; i < b.N; i++ {
				MinMaxGroups(lo, hi, x, row)
				for k := range hi {
					hi[k] = (hi[k] - lo[k]) / 255
				}
				FakeQuantAffine(y, mask, x, hi, zero, row, 0, 255)
			}
		})
	}
}
