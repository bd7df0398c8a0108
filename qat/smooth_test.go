package qat

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
	"qat/layers"
)

// TestSmoothKeepsFunction: QQQ smoothing on a model with outlier input
// channels smooths every group (q/k/v, o, gate/up, down), leaves the
// full-precision logits unchanged (1e-5 relative), and lowers the
// quantized model's error against full precision; with q/k/v biases and
// head_dim != dim/heads (Qwen2 style) too, v_proj's bias scaled with its
// rows.
func TestSmoothKeepsFunction(t *testing.T) {
	for _, c := range []layers.Config{
		{Vocab: 64, Dim: 64, Layers: 2, Heads: 4, KVHeads: 4, FFNHidden: 128, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 32},
		{Vocab: 64, Dim: 64, Layers: 2, Heads: 4, KVHeads: 4, HeadDimension: 32, QKVBias: true, FFNHidden: 128, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 32},
	} {
		smoothKeepsFunction(t, c)
	}
}

func smoothKeepsFunction(t *testing.T, c layers.Config) {
	fp := layers.New(c)
	fp.Init(5)
	brng := rand.New(rand.NewPCG(3, 3))
	for _, L := range fp.Layers {
		for _, l := range []*layers.Linear{L.Attn.Q, L.Attn.K, L.Attn.V} {
			if l.Bias != nil {
				for i := range l.Bias.Data() {
					l.Bias.Data()[i] = float32(0.5 * brng.NormFloat64())
				}
			}
		}
	}
	// outlier channels, as trained models have
	for _, L := range fp.Layers {
		L.AttnNorm.Weight.Data()[3] = 25
		L.MLPNorm.Weight.Data()[7] = -18
	}
	rng := rand.New(rand.NewPCG(1, 1))
	ids := make([]int32, 4*32)
	for i := range ids {
		ids[i] = int32(rng.IntN(c.Vocab))
	}
	logits := func(m *layers.Model) []float32 {
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		return append([]float32(nil), m.Forward(tp, ids, 4, 32).Data()...)
	}
	copyModel := func() *layers.Model {
		m := layers.New(c)
		for i, p := range m.Params() {
			copy(p.Var.Data(), fp.Params()[i].Var.Data())
		}
		return m
	}
	want := logits(fp)
	q := copyModel()
	if err := Prepare(q, Presets["w4a8-qqq"]); err != nil {
		t.Fatal(err)
	}
	before := logits(q)
	n, err := Smooth(q, SmoothConfig{Steps: 40, Rows: 128}, func() error { logits(q); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if n != 4*len(q.Layers) {
		t.Fatalf("smoothed %d groups, want %d", n, 4*len(q.Layers))
	}
	after := logits(q)
	// the smoothed weights in a model without quantizers: the same function
	plain := layers.New(c)
	for i, p := range plain.Params() {
		copy(p.Var.Data(), q.Params()[i].Var.Data())
	}
	got := logits(plain)
	var num, den float64
	for i := range want {
		d := float64(got[i] - want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if rel := math.Sqrt(num / den); rel > 1e-5 {
		t.Fatalf("head_dim %d, bias %v: smoothing changed the full-precision logits by %.3g (relative RMS)", c.HeadDim(), c.QKVBias, rel)
	}
	errOf := func(l []float32) float64 {
		var e float64
		for i := range want {
			d := float64(l[i] - want[i])
			e += d * d
		}
		return e
	}
	if eb, ea := errOf(before), errOf(after); !(ea < eb) {
		t.Fatalf("quantized logits' squared error %g after smoothing, %g before", ea, eb)
	} else {
		t.Logf("quantized logits' squared error: %.4g before smoothing, %.4g after", eb, ea)
	}
}
