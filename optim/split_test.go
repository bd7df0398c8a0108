package optim

import (
	"bytes"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"qat/kernels"
)

// TestUpdateThreads: each kind of moments gives the same bits (p and the
// stored state) when its update is split over two threads as on one, over
// three steps; the tensor is large enough to be split (checked).
func TestUpdateThreads(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	defer kernels.SetThreads(kernels.Threads())
	const n = 3<<15 + 77
	rng := rand.New(rand.NewPCG(3, 9))
	p0 := make([]float32, n)
	for i := range p0 {
		p0[i] = float32(rng.NormFloat64())
	}
	grads := make([][]float32, 3)
	for s := range grads {
		grads[s] = make([]float32, n)
		for i := range grads[s] {
			grads[s][i] = float32(rng.NormFloat64()) * float32(1+i%5)
		}
	}
	for _, kind := range []struct {
		name  string
		make  func() Moments
		items int // what the update splits: values, blocks or groups
		grain int
	}{
		{"fp32", func() Moments { return NewFP32Moments(n) }, n, 1 << 15},
		{"int8", func() Moments { return NewInt8Moments(n, DefaultBlock8) }, kernels.Blocks(n, DefaultBlock8), (1 << 15) / DefaultBlock8},
		{"fp8", func() Moments { return NewFP8Moments(n, DefaultGroupFP8) }, kernels.Blocks(n, DefaultGroupFP8), (1 << 14) / DefaultGroupFP8},
	} {
		run := func(threads int) ([]float32, Moments) {
			kernels.SetThreads(threads)
			if threads == 2 && kernels.Chunks(kind.items, kind.grain) != 2 {
				t.Fatalf("%s: the update of %d values is not split over 2 threads", kind.name, n)
			}
			p, m := append([]float32(nil), p0...), kind.make()
			for s, g := range grads {
				m.Update(p, g, Hyper{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1,
					BC1: float32(1 - math.Pow(0.9, float64(s+1))), BC2: float32(1 - math.Pow(0.95, float64(s+1)))})
			}
			return p, m
		}
		p1, m1 := run(1)
		p2, m2 := run(2)
		for i := range p1 {
			if math.Float32bits(p1[i]) != math.Float32bits(p2[i]) {
				t.Fatalf("%s: p[%d] %g on one thread, %g on two", kind.name, i, p1[i], p2[i])
			}
		}
		t1, t2 := m1.Tensors("w"), m2.Tensors("w")
		for i := range t1 {
			if !bytes.Equal(t1[i].Data, t2[i].Data) {
				t.Fatalf("%s: state %s differs between one and two threads", kind.name, t1[i].Name)
			}
		}
		if p1[0] == p0[0] {
			t.Fatalf("%s: the update did not move p", kind.name)
		}
	}
}
