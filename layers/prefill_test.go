package layers_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

// TestPrefill: a prompt fed through Prefill (in two calls, the second
// after a Step, so a block starts mid-cache) gives the logits that Step
// gives token by token, for packed Q4_0 and Q8_0 weights (repacked where
// the CPU has the kernel, plain rows otherwise) and float32 weights, on 1
// and 2 threads; decoding goes on from the prefilled cache as from the
// stepped one. Only float32 summation order differs (the batched kernels
// and sgemm accumulate in another order), and the Q8_0 activations of a
// row are the same values.
func TestPrefill(t *testing.T) {
	c := hfFeatures
	m := hfModel(t, 7)
	defer kernels.SetThreads(1)
	rng := rand.New(rand.NewPCG(3, 3))
	ids := make([]int32, c.MaxSeq)
	for i := range ids {
		ids[i] = int32(rng.IntN(c.Vocab))
	}
	for _, f := range []kernels.FormatID{kernels.Q4_0, kernels.Q8_0, kernels.F32} {
		packed := map[*autograd.Var]layers.PackedWeight{}
		if f != kernels.F32 {
			// half the weights through the repacked kernel
			packed = packFakeQuant(m, f, true)
		}
		for _, th := range []int{1, 2} {
			kernels.SetThreads(th)
			kernels.SetBLASThreads(1)
			step := layers.NewPackedDecoder(m, packed)
			want := make([][]float32, len(ids))
			for p, id := range ids {
				lg, err := step.Step(id)
				if err != nil {
					t.Fatal(err)
				}
				want[p] = append([]float32(nil), lg...)
			}
			pre := layers.NewPackedDecoder(m, packed)
			cut := 9
			got, err := pre.Prefill(ids[:cut], true)
			if err != nil {
				t.Fatal(err)
			}
			rows := make([][]float32, 0, len(ids))
			for p := 0; p < cut; p++ {
				rows = append(rows, append([]float32(nil), got[p*c.Vocab:(p+1)*c.Vocab]...))
			}
			lg, err := pre.Step(ids[cut])
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, append([]float32(nil), lg...))
			// the rest but the last two, only the last row's logits
			lg, err = pre.Prefill(ids[cut+1:len(ids)-2], false)
			if err != nil {
				t.Fatal(err)
			}
			for p := cut + 1; p < len(ids)-3; p++ {
				rows = append(rows, nil)
			}
			rows = append(rows, append([]float32(nil), lg...))
			for _, id := range ids[len(ids)-2:] {
				lg, err := pre.Step(id)
				if err != nil {
					t.Fatal(err)
				}
				rows = append(rows, append([]float32(nil), lg...))
			}
			if pre.Pos() != len(ids) || len(rows) != len(ids) {
				t.Fatalf("%s: at %d after the prompt, %d rows", f, pre.Pos(), len(rows))
			}
			for p, r := range rows {
				if r == nil {
					continue
				}
				var num, den float64
				for v := range r {
					e := float64(r[v] - want[p][v])
					num += e * e
					den += float64(want[p][v]) * float64(want[p][v])
				}
				if rel := math.Sqrt(num / den); rel > 1e-5 || math.IsNaN(rel) {
					t.Fatalf("%s threads %d: position %d: prefill logits differ from Step's by %.3g (relative RMS)", f, th, p, rel)
				}
			}
			if _, err := layers.NewPackedDecoder(m, packed).Prefill(make([]int32, c.MaxSeq+1), false); err == nil {
				t.Fatalf("a prompt longer than the context was accepted")
			}
		}
	}
}
