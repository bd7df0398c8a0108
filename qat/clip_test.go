package qat

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

var clipSpec = Spec{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "tensor", Scale: "clip"}

// clipRef is the recipe's clip quantizer in float64 (docs/algorithms.md
// section 5): the value x_hat and, with the rounding residual r =
// rne(u)-u, the straight-through surrogate clamp(x, lo, hi) + r*(hi-lo)/L
// whose derivatives the gradients are (r is 0 for clipped values: u is 0
// or L there).
func clipRef(x, lo, hi float64, bits int) (xhat, r float64) {
	L := math.Exp2(float64(bits)) - 1
	c := math.Min(math.Max(x, lo), hi)
	u := (c - lo) * L / (hi - lo)
	q := math.RoundToEven(u)
	return lo + q*(hi-lo)/L, q - u
}

// clipSurrogate is sum_i dy_i * (clamp(x_i, lo, hi) + r_i*(hi-lo)/L) with
// the residuals r frozen.
func clipSurrogate(x, r, dy []float64, lo, hi float64, bits int) float64 {
	L := math.Exp2(float64(bits)) - 1
	var s float64
	for i, v := range x {
		s += dy[i] * (math.Min(math.Max(v, lo), hi) + r[i]*(hi-lo)/L)
	}
	return s
}

func newClip(t *testing.T, row int, lo, hi float32) *Quantizer {
	t.Helper()
	q, err := NewQuantizer(clipSpec, row, row)
	if err != nil {
		t.Fatal(err)
	}
	q.Activation = true
	q.ClipLo.Data()[0], q.ClipHi.Data()[0] = lo, hi
	return q
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestClipGradients: values and gradients of the clip op on random
// inputs (clipped on both sides) against the float64 formulas, and central
// finite differences of the surrogate in lo, hi and every x.
func TestClipGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	rows, row := 8, 32
	lo, hi := float32(-1.3), float32(2.1)
	q := newClip(t, row, lo, hi)
	x := randVar(rng, 1.2, rows, row)
	for i := range x.Data() {
		x.Data()[i] += 0.4
	}
	dy := make([]float32, rows*row)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	y, dx := apply(q, x, dy)
	glo, ghi := float64(q.ClipLo.GradData()[0]), float64(q.ClipHi.GradData()[0])
	xs, dys := f64s(x.Data()), f64s(dy)
	r := make([]float64, len(xs))
	var low, high int
	var wantLo, wantHi float64
	L := 15.0
	for i, v := range xs {
		want, ri := clipRef(v, float64(lo), float64(hi), 4)
		r[i] = ri
		if math.Abs(float64(y[i])-want) > 1e-6 {
			t.Fatalf("y[%d] = %g, want %g (x %g)", i, y[i], want, v)
		}
		// the test's values keep clear of the bounds and of rounding
		// ties, where a step of 1e-6 would cross them
		if d := math.Min(math.Abs(v-float64(lo)), math.Abs(v-float64(hi))); d < 1e-4 {
			t.Fatalf("x[%d] = %g lies within %g of a clip value", i, v, d)
		}
		switch {
		case v < float64(lo):
			low++
			wantLo += dys[i]
			if dx[i] != 0 {
				t.Fatalf("dx[%d] = %g for a value clipped low", i, dx[i])
			}
		case v > float64(hi):
			high++
			wantHi += dys[i]
			if dx[i] != 0 {
				t.Fatalf("dx[%d] = %g for a value clipped high", i, dx[i])
			}
		default:
			wantHi += ri / L * dys[i]
			wantLo -= ri / L * dys[i]
			if dx[i] != dy[i] {
				t.Fatalf("dx[%d] = %g inside the clip values, want %g", i, dx[i], dy[i])
			}
		}
	}
	if low == 0 || high == 0 || low+high > len(xs)/2 {
		t.Fatalf("%d values clipped low, %d high, of %d: the test needs both, and most inside", low, high, len(xs))
	}
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
			t.Errorf("%s: %g, want %g", what, got, want)
		}
	}
	near("d clip_lo (formula)", glo, wantLo)
	near("d clip_hi (formula)", ghi, wantHi)
	const h = 1e-6
	sur := func(x []float64, lo, hi float64) float64 { return clipSurrogate(x, r, dys, lo, hi, 4) }
	l0, h0 := float64(lo), float64(hi)
	near("d clip_lo (finite differences)", glo, (sur(xs, l0+h, h0)-sur(xs, l0-h, h0))/(2*h))
	near("d clip_hi (finite differences)", ghi, (sur(xs, l0, h0+h)-sur(xs, l0, h0-h))/(2*h))
	for i := range xs {
		v := xs[i]
		xs[i] = v + h
		p := sur(xs, l0, h0)
		xs[i] = v - h
		m := sur(xs, l0, h0)
		xs[i] = v
		if fd := (p - m) / (2 * h); math.Abs(float64(dx[i])-fd) > 1e-5*(1+math.Abs(fd)) {
			t.Fatalf("dx[%d] = %g, finite difference %g", i, dx[i], fd)
		}
	}
}

// TestClipBoundsAndTies: values exactly at the clip values count as inside
// (x's gradient passes, no residual: the one-sided derivatives from
// inside), and rounding ties go to even, with the residual's sign that
// implies in the clip values' gradients. lo = -3, hi = 12 on 4 bits puts
// the grid on the integers, so u = x + 3 exactly.
func TestClipBoundsAndTies(t *testing.T) {
	lo, hi := float32(-3), float32(12)
	q := newClip(t, 8, lo, hi)
	x := autograd.NewParam(1, 8)
	// bounds, ties at u = 2.5 and 3.5 (rne: 2 and 4), clipped on each side
	copy(x.Data(), []float32{-3, 12, -0.5, 0.5, -4, 13, 1.25, 11.5})
	dy := []float32{1, 2, 3, 5, 7, 11, 13, 17}
	y, dx := apply(q, x, dy)
	wantY := []float32{-3, 12, -1, 1, -3, 12, 1, 11} // 11.5: u = 14.5 -> 14, even
	for i := range wantY {
		if y[i] != wantY[i] {
			t.Errorf("y[%d] = %g for x %g, want %g", i, y[i], x.Data()[i], wantY[i])
		}
	}
	wantDx := []float32{1, 2, 3, 5, 0, 0, 13, 17}
	for i := range wantDx {
		if dx[i] != wantDx[i] {
			t.Errorf("dx[%d] = %g for x %g, want %g", i, dx[i], x.Data()[i], wantDx[i])
		}
	}
	// residuals r = rne(u)-u: 0, 0, -0.5, +0.5, (clipped), -0.25, -0.5
	L := 15.0
	r := []float64{0, 0, -0.5, 0.5, 0, 0, -0.25, -0.5}
	var wantHi, wantLo float64
	for i, ri := range r {
		wantHi += ri / L * float64(dy[i])
		wantLo -= ri / L * float64(dy[i])
	}
	wantLo += float64(dy[4])
	wantHi += float64(dy[5])
	if g := float64(q.ClipLo.GradData()[0]); math.Abs(g-wantLo) > 1e-6 {
		t.Errorf("d clip_lo %g, want %g", g, wantLo)
	}
	if g := float64(q.ClipHi.GradData()[0]); math.Abs(g-wantHi) > 1e-6 {
		t.Errorf("d clip_hi %g, want %g", g, wantHi)
	}
	// the bound values' gradients are the one-sided differences of the
	// surrogate from inside: x at lo moves up, at hi down; lo moves down,
	// hi up (the others keep clear of the bounds by at least 0.5)
	xs, dys := f64s(x.Data()), f64s(dy)
	sur := func(x []float64, l, h float64) float64 { return clipSurrogate(x, r, dys, l, h, 4) }
	const h = 1e-6
	l0, h0 := float64(lo), float64(hi)
	base := sur(xs, l0, h0)
	for _, c := range []struct {
		i    int
		step float64
	}{{0, h}, {1, -h}} {
		v := xs[c.i]
		xs[c.i] = v + c.step
		fd := (sur(xs, l0, h0) - base) / c.step
		xs[c.i] = v
		if math.Abs(float64(dx[c.i])-fd) > 1e-6 {
			t.Errorf("x = %g at a bound: dx %g, one-sided difference from inside %g", v, dx[c.i], fd)
		}
	}
	if fd := (base - sur(xs, l0-h, h0)) / h; math.Abs(float64(q.ClipLo.GradData()[0])-fd) > 1e-5 {
		t.Errorf("d clip_lo %g, one-sided difference %g", q.ClipLo.GradData()[0], fd)
	}
	if fd := (sur(xs, l0, h0+h) - base) / h; math.Abs(float64(q.ClipHi.GradData()[0])-fd) > 1e-5 {
		t.Errorf("d clip_hi %g, one-sided difference %g", q.ClipHi.GradData()[0], fd)
	}
}

// TestClipSpecErrors: clip is int, asymmetric, per tensor, for linear
// inputs only; the errors name the field.
func TestClipSpecErrors(t *testing.T) {
	for _, c := range []struct {
		edit func(s *Spec)
		want string
	}{
		{func(s *Spec) { s.Symmetric = true }, "symmetric"},
		{func(s *Spec) { s.Granularity = "token" }, "granularity"},
		{func(s *Spec) { s.Format, s.Bits, s.Symmetric = kernels.FP8E4M3, 0, true }, "scale"},
	} {
		s := clipSpec
		c.edit(&s)
		if err := s.Validate("q"); err == nil || !strings.Contains(err.Error(), "q."+c.want) {
			t.Errorf("%+v: %v, want an error naming q.%s", s, err, c.want)
		}
	}
	m := layers.New(testCfg)
	for _, r := range []Rule{{Match: "model.layers.*", Weights: &clipSpec}, {Match: "model.layers.*", KVCache: &clipSpec}} {
		if err := Prepare(m, []Rule{r}); err == nil || !strings.Contains(err.Error(), "scale: clip is for linear inputs") {
			t.Errorf("%+v: %v", r, err)
		}
	}
}

// inputRange records the range of a linear's input: an observer, ahead of
// the input quantizer.
type inputRange struct {
	lo, hi float32
	n      int
}

func (o *inputRange) Observe(_ autograd.Ops, x *autograd.Var) *autograd.Var {
	for _, v := range x.Data() {
		if o.n == 0 || v < o.lo {
			o.lo = v
		}
		if o.n == 0 || v > o.hi {
			o.hi = v
		}
		o.n++
	}
	return x
}

func (o *inputRange) Replica() layers.Observer { return o }

// TestClipCalibrateTrainCheckpoint: Calibrate sets each linear's clip
// values to the min and max of the inputs it saw (recorded by an observer
// of its own: while calibrating the quantizers pass values through); the
// clip values get gradients from the loss, q/k/v do not share a quantized
// input (each has its own clip values), and the state round-trips through
// quant.json's rules and a checkpoint to the same logits.
func TestClipCalibrateTrainCheckpoint(t *testing.T) {
	rules := []Rule{{Match: "model.layers.*", Activations: &clipSpec}}
	rng := rand.New(rand.NewPCG(5, 5))
	m := layers.New(testCfg)
	m.Init(7)
	if err := Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	if !NeedsCalibration(m) {
		t.Fatal("clip quantizers need calibration")
	}
	ranges := map[string]*inputRange{}
	for _, ln := range m.Linears() {
		if ln.Linear.InputQuant != nil {
			o := &inputRange{}
			ln.Linear.Observers = append(ln.Linear.Observers, o)
			ranges[ln.Name] = o
		}
	}
	B, T := 2, 16
	ids, tg := tokens(rng, B*T, testCfg.Vocab), tokens(rng, B*T, testCfg.Vocab)
	n, err := Calibrate(m, func() error {
		for b := 0; b < 2; b++ {
			tp := autograd.NewTape()
			tp.SetNoGrad(true)
			m.Forward(tp, tokens(rng, B*T, testCfg.Vocab), B, T)
		}
		return nil
	})
	if want := 7 * testCfg.Layers; err != nil || n != want {
		t.Fatalf("Calibrate set %d quantizers (%v), want %d", n, err, want)
	}
	for _, ln := range m.Linears() {
		q, ok := ln.Linear.InputQuant.(*Quantizer)
		if !ok {
			continue
		}
		o := ranges[ln.Name]
		if q.ClipLo.Data()[0] != o.lo || q.ClipHi.Data()[0] != o.hi {
			t.Errorf("%s: clip values [%g, %g], inputs seen [%g, %g]", ln.Name, q.ClipLo.Data()[0], q.ClipHi.Data()[0], o.lo, o.hi)
		}
		ln.Linear.Observers = nil
		// learned values: no longer the calibration range, and each
		// linear's own (q, k and v read one input)
		q.ClipLo.Data()[0] *= 0.5 + 0.1*float32(rng.Float64())
		q.ClipHi.Data()[0] *= 0.5 + 0.1*float32(rng.Float64())
	}
	tp := autograd.NewTape()
	logits := m.Forward(tp, ids, B, T)
	want := append([]float32(nil), logits.Data()...)
	tp.Backward(tp.CrossEntropy(logits, tg, layers.IgnoreIndex))
	for _, p := range m.Params() {
		if p.Quant && p.Var.GradData()[0] == 0 {
			t.Errorf("%s: no gradient", p.Name)
		}
	}
	// quant.json and the checkpoint
	b, err := json.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	var back []Rule
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Save(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	m2 := layers.New(testCfg)
	if err := Prepare(m2, back); err != nil {
		t.Fatalf("quant.json %s: %v", b, err)
	}
	if err := m2.Load(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	names := 0
	for _, p := range m2.Params() {
		if strings.HasSuffix(p.Name, ".input_quant.clip_lo") || strings.HasSuffix(p.Name, ".input_quant.clip_hi") {
			names++
		}
	}
	if names != 2*7*testCfg.Layers {
		t.Errorf("%d clip tensors named NAME.input_quant.clip_lo/clip_hi, want %d", names, 2*7*testCfg.Layers)
	}
	got := m2.Forward(autograd.NewTape(), ids, B, T).Data()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logit %d: %g after the checkpoint, %g before", i, got[i], want[i])
		}
	}
}

// TestKeepInputs: a post-training quantization with KeepInputs replaces
// what the rules say for the weights, keeps each linear's trained clip
// values (Calibrate leaves them), and KeptRules describe the result: a
// model prepared from them and loaded from its checkpoint computes the
// same logits.
func TestKeepInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	m := layers.New(testCfg)
	m.Init(8)
	if err := Prepare(m, []Rule{{Match: "model.layers.*", Activations: &clipSpec}}); err != nil {
		t.Fatal(err)
	}
	for k, ln := range m.Linears() {
		if q, ok := ln.Linear.InputQuant.(*Quantizer); ok {
			q.ClipLo.Data()[0], q.ClipHi.Data()[0] = -1-float32(k)/10, 1+float32(k)/7
		}
	}
	kept := TrainedInputs(m)
	if len(kept) != 7*testCfg.Layers {
		t.Fatalf("%d trained inputs, want %d", len(kept), 7*testCfg.Layers)
	}
	Detach(m)
	preset := Presets["w4a4"]
	if err := Prepare(m, preset); err != nil {
		t.Fatal(err)
	}
	if n, err := KeepInputs(m, kept); err != nil || n != len(kept) {
		t.Fatalf("KeepInputs: %d, %v", n, err)
	}
	if NeedsCalibration(m) {
		t.Error("kept clip values would be calibrated again")
	}
	if _, err := Calibrate(m, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	for name, q := range kept {
		var l *layers.Linear
		for _, ln := range m.Linears() {
			if ln.Name == name {
				l = ln.Linear
			}
		}
		if l.InputQuant != q || l.WeightQuant == nil {
			t.Fatalf("%s: input %v (kept %v), weights %v", name, l.InputQuant, q, l.WeightQuant)
		}
	}
	rules, err := KeptRules(m, preset, kept)
	if err != nil {
		t.Fatal(err)
	}
	B, T := 2, 16
	ids := tokens(rng, B*T, testCfg.Vocab)
	want := append([]float32(nil), m.Forward(autograd.NewTape(), ids, B, T).Data()...)
	dir := t.TempDir()
	if err := m.Save(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rules)
	var back []Rule
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	m2 := layers.New(testCfg)
	if err := Prepare(m2, back); err != nil {
		t.Fatalf("kept rules %s: %v", b, err)
	}
	if err := m2.Load(filepath.Join(dir, "q.safetensors")); err != nil {
		t.Fatal(err)
	}
	for _, ln := range m2.Linears() {
		q, ok := ln.Linear.InputQuant.(*Quantizer)
		if ln.Name == "lm_head" {
			if ln.Linear.InputQuant != nil || ln.Linear.WeightQuant != nil {
				t.Errorf("lm_head quantized by the kept rules")
			}
			continue
		}
		w, wok := ln.Linear.WeightQuant.(*Quantizer)
		if !ok || q.Scale != "clip" || !wok || w.Spec != *preset[0].Weights {
			t.Fatalf("%s: input %+v, weights %+v", ln.Name, ln.Linear.InputQuant, ln.Linear.WeightQuant)
		}
	}
	got := m2.Forward(autograd.NewTape(), ids, B, T).Data()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logit %d: %g from the kept rules' checkpoint, %g before", i, got[i], want[i])
		}
	}
}
