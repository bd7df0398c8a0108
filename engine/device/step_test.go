//go:build cgo

package device

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"qat/autograd"
	"qat/kernels"
	"qat/kernels/cuda"
	"qat/layers"
	"qat/qat"
)

// configs cover tied and separate heads, GQA ratios 1, 2 and 4 and odd
// sizes.
var configs = []layers.Config{
	{Vocab: 50, Dim: 16, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 24, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 8},
	{Vocab: 97, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 40, RopeTheta: 10000, NormEps: 1e-5, Tied: false, MaxSeq: 16},
	{Vocab: 256, Dim: 64, Layers: 3, Heads: 4, KVHeads: 1, FFNHidden: 96, RopeTheta: 500000, NormEps: 1e-6, Tied: true, MaxSeq: 32},
}

// compare runs one step of the backend and of the tape from the same
// weights and batch: the loss within lossTol, every gradient within gradTol
// of the largest in its tensor.
func compare[F, I any](t *testing.T, be Backend[F, I], c layers.Config, preset string, B, T int, seed uint64, lossTol, gradTol float64) {
	t.Helper()
	m := layers.New(c)
	m.Init(seed)
	if preset != "" {
		rules, ok := qat.Presets[preset]
		if !ok {
			rules = steppedRules
		}
		if err := qat.Prepare(m, rules); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, p := range m.Params() { // norms away from 1, so their gradients matter
		if strings.HasSuffix(p.Name, "norm.weight") {
			for i := range p.Var.Data() {
				p.Var.Data()[i] = 1 + 0.2*float32(rng.NormFloat64())
			}
		}
	}
	ids, tgt := make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i], tgt[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
	}
	tgt[3] = layers.IgnoreIndex
	tp := autograd.NewTape()
	vars := make([]*autograd.Var, 0)
	for _, p := range m.Params() {
		vars = append(vars, p.Var)
	}
	autograd.ZeroGrad(vars...)
	l := m.Loss(tp, ids, tgt, B, T)
	tp.Backward(l)
	want := l.Data()[0]
	wantG := make([][]float32, len(vars))
	for i, v := range vars {
		wantG[i] = append([]float32(nil), v.GradData()...)
	}
	autograd.ZeroGrad(vars...)
	s, err := New(be, m, B, T)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.LossBackward(ids, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(got-want)) > lossTol*math.Abs(float64(want)) {
		t.Fatalf("%+v: loss %g, tape %g", c, got, want)
	}
	for i, p := range m.Params() {
		g, w := p.Var.GradData(), wantG[i]
		var mx float64
		for _, v := range w {
			mx = max(mx, math.Abs(float64(v)))
		}
		for j := range w {
			if math.Abs(float64(g[j]-w[j])) > gradTol*mx+1e-12 {
				t.Fatalf("%+v: %s grad[%d] = %g, tape %g (largest %g)", c, p.Name, j, g[j], w[j], mx)
			}
		}
	}
	// a second call adds into the gradients, as the tape's backward does
	if _, err := s.LossBackward(ids, tgt); err != nil {
		t.Fatal(err)
	}
	g0 := m.Params()[0].Var.GradData()
	for j := range wantG[0] {
		if math.Abs(float64(g0[j]-2*wantG[0][j])) > 2*gradTol*math.Abs(float64(wantG[0][j]))+1e-6 {
			t.Fatalf("second call: %s grad[%d] = %g, want twice %g", m.Params()[0].Name, j, g0[j], wantG[0][j])
		}
	}
}

// TestHostStep: the explicit step on the host build of the device kernels
// against the tape.
func TestHostStep(t *testing.T) {
	for i, c := range configs {
		compare[[]float32, []int32](t, cuda.Host{}, c, "", 2, c.MaxSeq, uint64(i+1), 1e-6, 1e-5)
	}
}

// presets are QAT recipes the device step runs: the minmax presets, and
// "stepped": LSQ's learned steps on attention weights, mse's searched ones
// on the MLP's, per-token int8 activations.
var presets = []string{"w4a8", "w4a8-qqq", "w4a16-g32", "w4a4", "w8a8", "fp8", "stepped"}

var steppedRules = []qat.Rule{
	{Match: "model.layers.*.self_attn.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "lsq"},
		Activations: &qat.Spec{Format: kernels.Int, Bits: 8, Symmetric: false, Granularity: "token", Scale: "minmax"}},
	{Match: "model.layers.*.mlp.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "group", GroupSize: 32, Scale: "mse"}},
}

// TestHostStepQAT: the same with fake quantization on weights and
// activations (straight-through gradients). The tape runs kernels.Generic,
// whose loops the host build repeats bit for bit: with the vector kernels
// a last-bit difference before a quantizer moves a value across a
// rounding boundary now and then, and its gradient by a whole step.
func TestHostStepQAT(t *testing.T) {
	defer kernels.Use(kernels.Active)
	kernels.Use(kernels.Generic)
	for _, p := range presets {
		compare[[]float32, []int32](t, cuda.Host{}, configs[2], p, 2, configs[2].MaxSeq, 5, 1e-6, 1e-5)
	}
}

func TestStepRefusals(t *testing.T) {
	c := configs[0]
	m := layers.New(c)
	if _, err := New[[]float32, []int32](cuda.Host{}, m, 1, c.MaxSeq+1); err == nil {
		t.Error("T past max_seq: no error")
	}
	s, err := New[[]float32, []int32](cuda.Host{}, m, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LossBackward([]int32{1, 2, 3, 99}, []int32{1, 2, 3, 4}); err == nil {
		t.Error("id outside the vocabulary: no error")
	}
	if _, err := s.LossBackward([]int32{1, 2, 3}, []int32{1, 2, 3}); err == nil {
		t.Error("3 ids for 1 x 4: no error")
	}
	lsq := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "channel", Scale: "lsq"}}}
	two := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax", TwoLevel: true}}}
	for name, rules := range map[string][]qat.Rule{"lsq+": lsq, "two-level": two} {
		m := layers.New(configs[2])
		m.Init(1)
		if err := qat.Prepare(m, rules); err != nil {
			t.Fatal(err)
		}
		if _, err := New[[]float32, []int32](cuda.Host{}, m, 1, 4); err == nil {
			t.Errorf("%s quantizers: no error", name)
		}
	}
	// learned clip values: refused by name, not run as dynamic scales
	clip := []qat.Rule{{Match: "model.layers.*", Activations: &qat.Spec{Format: kernels.Int, Bits: 4, Granularity: "tensor", Scale: "clip"}}}
	m = layers.New(configs[2])
	m.Init(1)
	if err := qat.Prepare(m, clip); err != nil {
		t.Fatal(err)
	}
	if _, err := New[[]float32, []int32](cuda.Host{}, m, 1, 4); err == nil || !strings.Contains(err.Error(), "scale: clip") {
		t.Errorf("clip input quantizers: %v, want a refusal naming scale: clip", err)
	}
}
