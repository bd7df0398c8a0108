package qat

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

var testCfg = layers.Config{Vocab: 96, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 96, RopeTheta: 10000,
	NormEps: 1e-5, Tied: false, MaxSeq: 16}

func tokens(rng *rand.Rand, n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	return ids
}

// TestPrepareQ4_0EqualsQuantizedWeights: with weights-only Q4_0 the model
// computes what a full-precision model holding the Q4_0-rounded weights
// computes, and gradients still reach the latent weights.
func TestPrepareQ4_0EqualsQuantizedWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	m := layers.New(testCfg)
	m.Init(3)
	ids, tg := tokens(rng, 2*16, testCfg.Vocab), tokens(rng, 2*16, testCfg.Vocab)
	if err := Prepare(m, Presets["w4a16-g32"]); err != nil {
		t.Fatal(err)
	}
	ref := layers.New(testCfg)
	for i, p := range m.Params() {
		copy(ref.Params()[i].Var.Data(), p.Var.Data())
	}
	for _, ln := range ref.Linears() {
		if ln.Linear == ref.Head {
			continue
		}
		w := ln.Linear.Weight.Data()
		mask := make([]uint8, len(w))
		kernels.FakeQuantQ4_0(w, mask, append([]float32(nil), w...))
	}
	tp := autograd.NewTape()
	got := m.Forward(tp, ids, 2, 16).Data()
	want := ref.Forward(autograd.NewTape(), ids, 2, 16).Data()
	// Not bit for bit: the full-precision model runs q/k/v and gate/up as
	// joint products (another summation order in sgemm).
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("logit %d: %g with fake quant, %g with quantized weights", i, got[i], want[i])
		}
	}
	tp.Backward(tp.CrossEntropy(m.Forward(tp, ids, 2, 16), tg, -100))
	var norm float64
	for _, v := range m.Layers[0].Attn.Q.Weight.GradData() {
		norm += float64(v * v)
	}
	if norm == 0 {
		t.Error("no gradient reached a quantized weight")
	}
}

// TestPresetsTrainStep: every preset gives a finite loss near ln(vocab) at
// initialisation and finite gradients on every weight, on a Llama and on a
// model with head_dim != dim/heads, q/k/v biases and llama3 rope_scaling.
func TestPresetsTrainStep(t *testing.T) {
	hf := testCfg
	hf.HeadDimension, hf.QKVBias = 32, true
	hf.RopeScaling = layers.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 16}
	for _, base := range []layers.Config{testCfg, hf} {
		presetsTrainStep(t, base)
	}
}

func presetsTrainStep(t *testing.T, base layers.Config) {
	for name, rules := range Presets {
		rng := rand.New(rand.NewPCG(2, 2))
		cfg := base
		if name == "w4a8-qqq-g128" { // groups of 128 need rows that long
			cfg.Dim, cfg.FFNHidden = 128, 256
		}
		m := layers.New(cfg)
		m.Init(4)
		if err := Prepare(m, rules); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tp := autograd.NewTape()
		l := tp.CrossEntropy(m.Forward(tp, tokens(rng, 32, testCfg.Vocab), 2, 16), tokens(rng, 32, testCfg.Vocab), -100)
		tp.Backward(l)
		if v := float64(l.Data()[0]); math.IsNaN(v) || math.Abs(v-math.Log(96)) > 0.1*math.Log(96) {
			t.Errorf("%s: initial loss %g", name, v)
		}
		for _, p := range m.Params() {
			for _, g := range p.Var.GradData() {
				if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
					t.Fatalf("%s: %s has a non-finite gradient", name, p.Name)
				}
			}
		}
	}
}

// TestLSQReplicasAndCheckpoint: LSQ steps are parameters: data-parallel
// replicas give the one-tape loss and gradients (steps included), and the
// steps survive a checkpoint; a full-precision checkpoint loads into a
// prepared model.
func TestLSQReplicasAndCheckpoint(t *testing.T) {
	rules := []Rule{{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "lsq"},
		Activations: &Spec{Format: kernels.Int, Bits: 8, Symmetric: false, Granularity: "token", Scale: "minmax"}}}
	rng := rand.New(rand.NewPCG(3, 3))
	m := layers.New(testCfg)
	m.Init(5)
	dir := t.TempDir()
	if err := m.Save(filepath.Join(dir, "fp.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	steps := 0
	for _, p := range m.Params() {
		if p.Quant {
			steps++
		}
	}
	if steps != 7*testCfg.Layers {
		t.Fatalf("%d quantizer states, want one per linear (%d)", steps, 7*testCfg.Layers)
	}
	B, T := 4, 16
	ids, tg := tokens(rng, B*T, testCfg.Vocab), tokens(rng, B*T, testCfg.Vocab)
	tp := autograd.NewTape()
	want := tp.CrossEntropy(m.Forward(tp, ids, B, T), tg, layers.IgnoreIndex)
	tp.Backward(want)
	ref := map[string][]float32{}
	for _, p := range m.Params() {
		ref[p.Name] = append([]float32(nil), p.Var.GradData()...)
	}
	kernels.SetThreads(2)
	defer kernels.SetThreads(1)
	r := layers.NewReplicas(m, 2)
	for _, p := range m.Params() {
		autograd.ZeroGrad(p.Var)
	}
	got := r.LossBackward(ids, tg, B, T)
	if math.Abs(float64(got-want.Data()[0])) > 1e-5 {
		t.Errorf("replicas loss %g, one tape %g", got, want.Data()[0])
	}
	for _, p := range m.Params() {
		var worst, scale float64
		for i, v := range p.Var.GradData() {
			worst = math.Max(worst, math.Abs(float64(v-ref[p.Name][i])))
			scale = math.Max(scale, math.Abs(float64(ref[p.Name][i])))
		}
		if worst > 1e-4*scale+1e-9 {
			t.Errorf("%s: replicas differ by %g (scale %g)", p.Name, worst, scale)
		}
	}
	// checkpoint round trip with the steps
	for _, p := range m.Params() {
		if p.Quant {
			p.Var.Data()[0] = 0.125
		}
	}
	if err := m.Save(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	m2 := layers.New(testCfg)
	if err := Prepare(m2, rules); err != nil {
		t.Fatal(err)
	}
	if err := m2.Load(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	for i, p := range m2.Params() {
		for j, v := range p.Var.Data() {
			if v != m.Params()[i].Var.Data()[j] {
				t.Fatalf("%s[%d] changed through the checkpoint", p.Name, j)
			}
		}
	}
	m3 := layers.New(testCfg)
	if err := Prepare(m3, rules); err != nil {
		t.Fatal(err)
	}
	if err := m3.Load(filepath.Join(dir, "fp.safetensors")); err != nil {
		t.Fatalf("a full-precision checkpoint does not load into a prepared model: %v", err)
	}
}

func TestPrepareErrors(t *testing.T) {
	m := layers.New(testCfg)
	for _, rules := range [][]Rule{
		{{Match: "model.layers.*.mlp.nothing", Weights: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax"}}},
		{{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 40, Scale: "minmax"}}},
		{{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 1, Symmetric: true, Granularity: "channel", Scale: "minmax"}}},
		{{Match: "[", Weights: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax"}}},
		{{Match: "model.layers.*", Activations: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "channel", Scale: "mse"}}},
		{{Match: "model.layers.*", KVCache: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "group", GroupSize: 12, Scale: "minmax"}}},
		{{Match: "model.layers.*.mlp", KVCache: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "token", Scale: "minmax"}}},
	} {
		if err := Prepare(m, rules); err == nil {
			t.Errorf("rules %+v accepted", rules[0])
		}
	}
}

// TestCalibratedActivationsAndKVCache: activation steps from calibration
// (LSQ+ on linear inputs, mse on the KV cache), mse weight steps, their
// gradients (learned ones get some, fixed ones none), the checkpoint round
// trip, and token-by-token generation matching the full forward with the
// quantized cache.
func TestCalibratedActivationsAndKVCache(t *testing.T) {
	rules := []Rule{
		{Match: "model.layers.*.self_attn", KVCache: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "tensor", Scale: "mse"}},
		{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "mse"},
			Activations: &Spec{Format: kernels.Int, Bits: 6, Symmetric: false, Granularity: "tensor", Scale: "lsq"}},
	}
	rng := rand.New(rand.NewPCG(4, 4))
	m := layers.New(testCfg)
	m.Init(6)
	B, T := 2, 16
	ids, tg := tokens(rng, B*T, testCfg.Vocab), tokens(rng, B*T, testCfg.Vocab)
	fp := append([]float32(nil), m.Forward(autograd.NewTape(), ids, B, T).Data()...)
	if err := Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	if !NeedsCalibration(m) {
		t.Fatal("LSQ+ activations and an mse KV cache need calibration")
	}
	n, err := Calibrate(m, func() error {
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		m.Forward(tp, ids, B, T)
		return nil
	})
	if want := 9 * testCfg.Layers; err != nil || n != want {
		t.Fatalf("Calibrate set %d quantizers (%v), want %d", n, err, want)
	}
	for _, p := range m.Params() {
		if p.Quant && p.Var.Data()[0] == 0 && !strings.HasSuffix(p.Name, ".zero") && !strings.HasSuffix(p.Name, ".offset") {
			t.Fatalf("%s not set by Prepare or Calibrate", p.Name)
		}
	}
	tp := autograd.NewTape()
	logits := m.Forward(tp, ids, B, T)
	q := append([]float32(nil), logits.Data()...)
	var diff float64
	for i := range fp {
		diff = math.Max(diff, math.Abs(float64(q[i]-fp[i])))
	}
	if diff == 0 || diff > 2 {
		t.Errorf("quantized logits differ from full precision by %g", diff)
	}
	tp.Backward(tp.CrossEntropy(logits, tg, layers.IgnoreIndex))
	for _, p := range m.Params() {
		if !p.Quant {
			continue
		}
		var g float64
		for _, v := range p.Var.GradData() {
			g += math.Abs(float64(v))
		}
		// LSQ+ offsets learn only from clipped values; min/max init on
		// the same batch clips few or none.
		learned := strings.Contains(p.Name, "input_quant.step")
		fixed := !strings.Contains(p.Name, "input_quant")
		if (learned && g == 0) || (fixed && g != 0) {
			t.Errorf("%s: gradient %g (learned: %v)", p.Name, g, learned)
		}
	}
	// checkpoint: the calibrated steps come back, no calibration needed
	dir := t.TempDir()
	if err := m.Save(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	m2 := layers.New(testCfg)
	if err := Prepare(m2, rules); err != nil {
		t.Fatal(err)
	}
	if err := m2.Load(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	got := m2.Forward(autograd.NewTape(), ids, B, T).Data()
	for i := range q {
		if got[i] != q[i] {
			t.Fatalf("logit %d: %g after the checkpoint, %g before", i, got[i], q[i])
		}
	}
	if m2.Layers[0].Attn.KQuant == nil {
		t.Fatal("no KV quantizer")
	}
	// generation: one token at a time through the (quantized) cache path
	// gives the full forward's logits at every position
	st := layers.NewStepper(m2)
	for pos := 0; pos < T; pos++ {
		l, err := st.Step(ids[pos])
		if err != nil {
			t.Fatal(err)
		}
		for v := range l {
			if w := q[pos*testCfg.Vocab+v]; math.Abs(float64(l[v]-w)) > 1e-4*(1+math.Abs(float64(w))) {
				t.Fatalf("position %d token %d: stepper %g, forward %g", pos, v, l[v], w)
			}
		}
	}
}

// noShare hides SameAs: each linear quantizes its input itself.
type noShare struct{ layers.Quantizer }

// TestSharedInputQuantization: q/k/v and gate/up quantize their shared
// input once (identical dynamic quantizers); the loss and every gradient
// equal those of quantizing it once per linear.
func TestSharedInputQuantization(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	B, T := 2, 16
	ids, tg := tokens(rng, B*T, testCfg.Vocab), tokens(rng, B*T, testCfg.Vocab)
	run := func(share bool) (float32, map[string][]float32) {
		m := layers.New(testCfg)
		m.Init(9)
		if err := Prepare(m, Presets["w4a8"]); err != nil {
			t.Fatal(err)
		}
		if !share {
			for _, ln := range m.Linears() {
				if ln.Linear.InputQuant != nil {
					ln.Linear.InputQuant = noShare{ln.Linear.InputQuant}
				}
			}
		}
		tp := autograd.NewTape()
		l := tp.CrossEntropy(m.Forward(tp, ids, B, T), tg, layers.IgnoreIndex)
		tp.Backward(l)
		g := map[string][]float32{}
		for _, p := range m.Params() {
			g[p.Name] = append([]float32(nil), p.Var.GradData()...)
		}
		return l.Data()[0], g
	}
	m := layers.New(testCfg)
	if err := Prepare(m, Presets["w4a8"]); err != nil {
		t.Fatal(err)
	}
	a := m.Layers[0].Attn
	if s, ok := a.Q.InputQuant.(layers.InputSharer); !ok || !s.SameAs(a.K.InputQuant) || s.SameAs(m.Layers[0].MLP.Down.InputQuant) {
		t.Fatal("q_proj's input quantizer should share with k_proj's, not with down_proj's (another input width)")
	}
	l1, g1 := run(true)
	l2, g2 := run(false)
	if l1 != l2 {
		t.Fatalf("loss %g shared, %g per linear", l1, l2)
	}
	for name, a := range g1 {
		for i := range a {
			if d := math.Abs(float64(a[i] - g2[name][i])); d > 1e-5*(1+math.Abs(float64(g2[name][i]))) {
				t.Fatalf("%s[%d]: %g shared, %g per linear", name, i, a[i], g2[name][i])
			}
		}
	}
}
