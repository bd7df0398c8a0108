package layers_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// hfFeatures is a model with every Hugging Face feature beyond Llama 2:
// head_dim != dim/heads (q is 128 wide on a 64-wide residual), q/k/v
// biases and llama3 rope_scaling whose three bands turn within MaxSeq.
var hfFeatures = layers.Config{Vocab: 96, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDimension: 32, FFNHidden: 96,
	RopeTheta: 500000, NormEps: 1e-5, Tied: false, MaxSeq: 24, QKVBias: true,
	RopeScaling: layers.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 64}}

// withBiases gives q/k/v biases of the size Qwen2's have (Init makes them
// 0, which would test nothing).
func withBiases(m *layers.Model, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for _, p := range m.Params() {
		if len(p.Name) > 5 && p.Name[len(p.Name)-5:] == ".bias" {
			for i := range p.Var.Data() {
				p.Var.Data()[i] = float32(0.5 * rng.NormFloat64())
			}
		}
	}
}

// hfModel is an hfFeatures model initialised from seed, with q/k/v
// biases, fake-quantized on the Q4_0 grid (w4a16-g32).
func hfModel(t *testing.T, seed uint64) *layers.Model {
	t.Helper()
	m := layers.New(hfFeatures)
	m.Init(seed)
	withBiases(m, seed)
	if err := qat.Prepare(m, qat.Presets["w4a16-g32"]); err != nil {
		t.Fatal(err)
	}
	return m
}

// packFakeQuant packs the fake-quant values of m's quantized linears in
// format f (plain rows; with repackEven, the even-numbered ones repacked
// for the CPU's kernel where it has one).
func packFakeQuant(m *layers.Model, f kernels.FormatID, repackEven bool) map[*autograd.Var]layers.PackedWeight {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	packed := map[*autograd.Var]layers.PackedWeight{}
	for i, nl := range m.Linears() {
		l := nl.Linear
		if l.WeightQuant == nil {
			continue
		}
		w := l.WeightQuant.Apply(tp, l.Weight).Data()
		rows, cols := l.Weight.Shape()[0], l.Weight.Shape()[1]
		data := make([]byte, rows*f.RowBytes(cols))
		f.Pack(data, w)
		pw := layers.PackedWeight{Format: f, Data: data}
		if repackEven && i%2 == 0 {
			if r := kernels.Repack(f, data, rows, cols); r != nil {
				pw = layers.PackedWeight{Format: f, R4: r}
			}
		}
		packed[l.Weight] = pw
	}
	return packed
}

// TestPackedDecoderHFFeatures: a model with head_dim, biases and scaled
// RoPE, fake-quantized on the Q4_0 grid (w4a16-g32), decodes through the
// packed Q4_0 kernels (its weights packed from the fake-quant values, the
// biases in float32) to the fake-quant model's logits, within the Q8_0
// rounding of the kernels' activations, as export's packed test checks
// for Llama.
func TestPackedDecoderHFFeatures(t *testing.T) {
	c := hfFeatures
	m := hfModel(t, 5)
	packed := packFakeQuant(m, kernels.Q4_0, false)
	if want := 7 * c.Layers; len(packed) != want {
		t.Fatalf("%d packed matrices, want %d", len(packed), want)
	}
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	rng := rand.New(rand.NewPCG(2, 2))
	ids := make([]int32, c.MaxSeq)
	for i := range ids {
		ids[i] = int32(rng.IntN(c.Vocab))
	}
	full := m.Forward(tp, ids, 1, len(ids)).Data()
	d := layers.NewPackedDecoder(m, packed)
	for p, id := range ids {
		lg, err := d.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for v := range lg {
			e := float64(lg[v] - full[p*c.Vocab+v])
			num += e * e
			den += float64(full[p*c.Vocab+v]) * float64(full[p*c.Vocab+v])
		}
		// Q8_0 activations: about 0.5% relative error per product
		if rel := math.Sqrt(num / den); rel > 0.02 {
			t.Fatalf("position %d: packed logits differ by %.3g (relative RMS)", p, rel)
		}
	}
	// the stepper for a fake-quant model (the prefix decoder) agrees too
	s := layers.NewStepper(m)
	for p, id := range ids[:4] {
		lg, err := s.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		for v := range lg {
			if math.Abs(float64(lg[v]-full[p*c.Vocab+v])) > 1e-4 {
				t.Fatalf("stepper position %d: logit %d is %g, forward %g", p, v, lg[v], full[p*c.Vocab+v])
			}
		}
	}
}
