package gorgonia

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"qat/autograd"
	"qat/kernels"
)

// BenchmarkEngines times one training step (forward + backward of a batch
// of 8 x 128 tokens of the tiny config, one thread) on the tape, on the
// Gorgonia graph with the tape's fused ops, and on the Gorgonia graph with
// attention and SwiGLU composed from Gorgonia's own ops, full precision
// and w4a8, side by side. It reports ms/step, tokens/s, allocations and
// bytes allocated per step, and the live heap after a step (the graph's
// values and gradients: Gorgonia keeps every node's value).
func BenchmarkEngines(b *testing.B) {
	kernels.SetThreads(1)
	for _, preset := range []string{"fp32", "w4a8"} {
		for _, engine := range []string{"tape", "gorgonia", "gorgonia-composed"} {
			b.Run(preset+"/"+engine, func(b *testing.B) {
				p := preset
				if p == "fp32" {
					p = ""
				}
				c := tinyConfig()
				m := newModel(b, c, p, 1)
				const B, T = 8, 128
				rng := rand.New(rand.NewPCG(1, 1))
				ids, tg := batch(rng, c.Vocab, B*T)
				vs := vars(m)
				var step func()
				if engine == "tape" {
					tp := autograd.NewTape()
					step = func() {
						autograd.ZeroGrad(vs...)
						tp.Backward(m.Loss(tp, ids, tg, B, T))
						tp.Reset()
					}
				} else {
					e, err := New(m, B, T, Options{Composed: engine == "gorgonia-composed"})
					if err != nil {
						b.Fatal(err)
					}
					defer e.Close()
					step = func() {
						autograd.ZeroGrad(vs...)
						if _, err := e.LossBackward(ids, tg); err != nil {
							b.Fatal(err)
						}
					}
				}
				step()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					step()
				}
				s := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(s*1e3, "ms/step")
				b.ReportMetric(B*T/s, "tokens/s")
				b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "MiB-heap")
			})
		}
	}
}
