package layers

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"qat/autograd"
	"qat/kernels"
)

// BenchmarkTrainStep times forward + backward of one batch (B x T tokens of
// the reference configs; with 2 threads split over 2 Replicas) and reports tokens/s, GFLOP/s by the FLOP count of
// Config.FLOPsPerToken, and allocations per step.
func BenchmarkTrainStep(b *testing.B) {
	for _, tc := range []struct {
		name string
		c    Config
		B    int
	}{{"tiny", Tiny, 8}, {"small", Small, 8}} {
		for _, th := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads=%d", tc.name, th), func(b *testing.B) {
				kernels.SetThreads(th)
				defer kernels.SetThreads(1)
				m := New(tc.c)
				m.Init(1)
				T := tc.c.MaxSeq
				rng := rand.New(rand.NewPCG(1, 1))
				ids, tg := randomTokens(rng, tc.B*T, tc.c.Vocab), randomTokens(rng, tc.B*T, tc.c.Vocab)
				tp := autograd.NewTape()
				params := m.Params()
				reps := NewReplicas(m, th)
				step := func() {
					for _, p := range params {
						autograd.ZeroGrad(p.Var)
					}
					if th > 1 {
						reps.LossBackward(ids, tg, tc.B, T)
						return
					}
					tp.Backward(m.Loss(tp, ids, tg, tc.B, T))
					tp.Reset()
				}
				step()
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					step()
				}
				s := b.Elapsed().Seconds() / float64(b.N)
				tok := float64(tc.B * T)
				b.ReportMetric(tok/s, "tokens/s")
				b.ReportMetric(tok*tc.c.FLOPsPerToken(T)/s/1e9, "GFLOP/s")
				b.ReportMetric(s*1e3, "ms/step")
			})
		}
	}
}
