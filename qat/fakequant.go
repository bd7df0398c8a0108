package qat

import (
	"fmt"
	"math"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

// Quantizer is a Spec applied to one tensor. Fixed and learned scales
// (mse, lsq) live in it as tensors, one per group, checkpointed with the
// weights; minmax scales are recomputed from every input.
type Quantizer struct {
	Spec
	// Step holds the steps of lsq and mse scales (nil for minmax).
	Step *autograd.Var
	// Offset is LSQ+'s learned offset beta (lsq, asymmetric).
	Offset *autograd.Var
	// Zero is the integer zero point of mse scales (0 when symmetric).
	Zero *autograd.Var
	// ClipLo and ClipHi are the learned clip values of clip scales (one
	// each: granularity tensor), set by Calibrate, trained with the model.
	ClipLo, ClipHi *autograd.Var
	// Activation marks an input quantizer (steps from calibration data).
	Activation bool
	// kept marks trained state that a post-training quantization keeps
	// (KeepInputs): Calibrate leaves it as it is.
	kept bool
	row  int
	// cal records inputs while Calibrate runs.
	cal *calibration
}

// NewQuantizer prepares spec for tensors whose rows have `row` values and
// `n` values in all (for activations, n of one batch row suffices: only
// group sizes depend on it). It fails when the group does not divide the
// row.
func NewQuantizer(spec Spec, row, n int) (*Quantizer, error) {
	if b := spec.block(); b > 0 {
		if row%b != 0 {
			return nil, fmt.Errorf("%s needs rows that are a multiple of %d, have %d", spec.Format, b, row)
		}
	} else if _, err := spec.Group(row, n); err != nil {
		return nil, err
	}
	q := &Quantizer{Spec: spec, row: row}
	g, _ := spec.Group(row, n)
	switch spec.Scale {
	case "lsq":
		q.Step = autograd.NewParam(n / g)
		if !spec.Symmetric {
			q.Offset = autograd.NewParam(n / g)
		}
	case "mse":
		q.Step, q.Zero = autograd.NewParam(n/g), autograd.NewParam(n/g)
	case "clip":
		q.ClipLo, q.ClipHi = autograd.NewParam(1), autograd.NewParam(1)
	}
	return q, nil
}

// State returns the steps (and offsets or zero points) of lsq and mse
// quantizers, and the clip values of clip ones (clip_lo, clip_hi). mse's
// get no gradient, so training leaves them as found.
func (q *Quantizer) State() map[string]*autograd.Var {
	st := map[string]*autograd.Var{}
	for name, v := range map[string]*autograd.Var{"step": q.Step, "offset": q.Offset, "zero": q.Zero,
		"clip_lo": q.ClipLo, "clip_hi": q.ClipHi} {
		if v != nil {
			st[name] = v
		}
	}
	if len(st) == 0 {
		return nil
	}
	return st
}

// Replica shares the state's values and gives it its own gradient.
func (q *Quantizer) Replica() layers.Quantizer {
	r := *q
	for _, v := range []**autograd.Var{&r.Step, &r.Offset, &r.Zero, &r.ClipLo, &r.ClipHi} {
		if *v != nil {
			*v = (*v).Replica()
		}
	}
	return &r
}

// Fixed reports whether the quantizer has steps or clip values that must
// be set before use (lsq, mse and clip scales), by Init from a weight or
// Calibrate from data.
func (q *Quantizer) Fixed() bool { return q.Step != nil || q.ClipLo != nil }

// Init sets the steps from x, a weight (at Prepare) or calibration data
// (activations; then x is a sample, lo and hi its full range): LSQ's
// s0 = 2*mean|x|/sqrt(Qp), LSQ+'s min/max range s0 = (hi-lo)/(p-n),
// beta0 = lo - n*s0, or the MSE search.
func (q *Quantizer) Init(x []float32) {
	if q.Step == nil {
		return
	}
	group := len(x) / q.Step.Size()
	for k := range q.Step.Data() {
		g := x[k*group : (k+1)*group]
		lo, hi := g[0], g[0]
		var sum float64
		for _, v := range g {
			lo, hi = min(lo, v), max(hi, v)
			sum += math.Abs(float64(v))
		}
		q.initGroup(k, g, lo, hi, sum/float64(len(g)))
	}
}

// InitLSQ is Init, kept for the name LSQ's papers use.
func (q *Quantizer) InitLSQ(x []float32) { q.Init(x) }

func (q *Quantizer) initGroup(k int, x []float32, lo, hi float32, meanAbs float64) {
	var qmin, qmax float32
	if q.Format == kernels.Int {
		qmin, qmax = q.Grid()
	}
	switch {
	case q.Scale == "mse":
		q.Step.Data()[k], q.Zero.Data()[k] = q.mseSearch(x, lo, hi)
	case q.Symmetric:
		q.Step.Data()[k] = float32(max(2*meanAbs/math.Sqrt(float64(qmax)), 1e-8))
	default:
		lo, hi = min(lo, 0), max(hi, 0)
		s := max((hi-lo)/(qmax-qmin), eps)
		q.Step.Data()[k], q.Offset.Data()[k] = s, lo-qmin*s
	}
}

// mseSearch returns the scale and zero point whose grid minimises the
// squared error on x among ranges shrunk by p = 1 - i/100, i < 80, from
// [lo, hi] (GPTQ's search, with norm 2 rather than 2.4: the objective the
// loss sees).
func (q *Quantizer) mseSearch(x []float32, lo, hi float32) (scale, zero float32) {
	qmin, qmax := q.Grid()
	best := math.Inf(1)
	for i := 0; i < 80; i++ {
		p := 1 - float32(i)/100
		var s, z float32
		if q.Symmetric {
			s = max(p*max(-lo, hi)/((qmax-qmin)/2), eps)
		} else {
			l, h := p*min(lo, 0), p*max(hi, 0)
			s = max((h-l)/(qmax-qmin), eps)
			z = min(max(qmin-rne(l/s), qmin), qmax)
		}
		inv := 1 / s
		var e float64
		for _, v := range x {
			t := min(max(rne(v*inv)+z, qmin), qmax)
			d := float64((t-z)*s - v)
			e += d * d
		}
		if e < best {
			best, scale, zero = e, s, z
		}
	}
	return scale, zero
}

// rne rounds half to even by the float32 magic-number trick (exact for
// |v| < 2^22; the clamp keeps larger values there, where they clip anyway).
func rne(v float32) float32 {
	const magic = 12582912 // 1.5 * 2^23
	v = min(max(v, -4194304), 4194304)
	return float32(v+magic) - magic
}

// Apply returns the fake-quantized x on the tape: the forward value is the
// quantized grid value; the gradient to x is the straight-through estimator
// (zero where clipped) and, for LSQ, the step receives LSQ's gradient
// scaled by 1/sqrt(N*Qp).
func (q *Quantizer) Apply(t autograd.Ops, x *autograd.Var) *autograd.Var {
	n := x.Size()
	shape := x.Shape()
	if shape[len(shape)-1] != q.row {
		panic(fmt.Sprintf("qat: quantizer for rows of %d applied to %v", q.row, shape))
	}
	packed := q.block() > 0
	if q.cal != nil && !packed {
		q.cal.record(x.Data())
		return x
	}
	if q.Scale == "clip" {
		return q.applyClip(t, x)
	}
	if q.Step != nil && !packed {
		group, _ := q.Group(q.row, n)
		if q.Step.Size() != n/group {
			panic(fmt.Sprintf("qat: quantizer with %d steps applied to %d groups", q.Step.Size(), n/group))
		}
		if q.Step.Data()[0] == 0 {
			panic("qat: quantizer with fixed or learned steps used before Init or Calibrate")
		}
	}
	mask := t.ScratchBytes(n) // one byte per value; kept for backward
	var step, offset *autograd.Var
	inputs := []*autograd.Var{x}
	if q.Scale == "lsq" {
		step, offset = q.Step, q.Offset
		inputs = append(inputs, q.Step)
		if offset != nil {
			inputs = append(inputs, q.Offset)
		}
	}
	scratch := t.Scratch(q.ScratchSize(n))
	return t.Custom(shape, inputs, func(out []float32) {
		q.Forward(out, mask, x.Data(), data(step), data(offset), scratch)
	}, func(dout []float32, dins [][]float32) {
		var dstep, doffset []float32
		if len(dins) > 1 {
			if dstep = dins[1]; dstep == nil {
				dstep = t.Scratch(q.Step.Size())
				clear(dstep)
			}
		}
		if len(dins) > 2 {
			doffset = dins[2]
		}
		q.Backward(dins[0], dstep, doffset, dout, mask, x.Data(), data(step), scratch)
	})
}

func data(v *autograd.Var) []float32 {
	if v == nil {
		return nil
	}
	return v.Data()
}

// ScratchSize is the length of the scratch that Forward and Backward need
// for n values: the dynamic scales and zero points, or LSQ+'s shifted input.
func (q *Quantizer) ScratchSize(n int) int {
	switch {
	case q.block() > 0, q.Scale == "mse", q.Scale == "lsq" && q.Symmetric:
		return 0
	case q.Scale == "lsq":
		return n
	}
	group, _ := q.Group(q.row, n)
	return 2 * (n / group)
}

// Forward writes the fake-quantized x into out and marks in mask the
// values that fell inside the grid (those whose gradient passes). For lsq
// scales, step (and offset, LSQ+) are the learned tensors' values; the
// other scales are q's own (mse) or computed from x. scratch
// (ScratchSize(len(x))) must be kept unchanged until Backward. The tape
// (Apply) and the Gorgonia engine (package qat/gorgonia) both call it.
// Clip scales have their own pair (ClipForward, ClipBackward): their
// gradients go to the clip values, which these signatures do not carry.
func (q *Quantizer) Forward(out []float32, mask []uint8, x, step, offset, scratch []float32) {
	n := len(x)
	if q.Scale == "clip" {
		panic("qat: Forward of a clip quantizer: its op is ClipForward (the tape's Apply)")
	}
	switch q.Format {
	case kernels.Q4_0:
		kernels.FakeQuantQ4_0(out, mask, x)
		return
	case kernels.Q8_0:
		kernels.FakeQuantQ8_0(out, mask, x)
		return
	}
	group, _ := q.Group(q.row, n)
	var qmin, qmax float32
	if q.Format == kernels.Int {
		qmin, qmax = q.Grid()
	}
	switch {
	case q.Scale == "mse":
		kernels.FakeQuantAffine(out, mask, x, q.Step.Data(), q.Zero.Data(), group, qmin, qmax)
	case q.Scale == "lsq" && q.Symmetric:
		kernels.FakeQuantLSQ(out, mask, x, step, group, -qmin, qmax)
	case q.Scale == "lsq":
		// LSQ+: LSQ on the shifted u = x - beta, plus beta.
		u := scratch[:n]
		kernels.ShiftGroups(u, x, offset, group, -1)
		kernels.FakeQuantLSQ(out, mask, u, step, group, -qmin, qmax)
		kernels.ShiftGroups(out, out, offset, group, 1)
	default:
		scale, zero := scratch[:n/group], scratch[n/group:2*(n/group)]
		q.dynamicScales(scale, zero, x, group)
		if q.Format == kernels.Int {
			kernels.FakeQuantAffine(out, mask, x, scale, zero, group, qmin, qmax)
		} else {
			kernels.FakeQuantFP(out, mask, x, scale, group, q.Format.FP())
		}
	}
}

// Backward adds (+=) the gradients of Forward's output dout into dx (the
// straight-through estimator: dout where mask is set) and, for lsq
// scales, LSQ's step gradient scaled by 1/sqrt(N*Qp) into dstep and LSQ+'s
// offset gradient (dout where the shifted input clipped) into doffset.
// dx and doffset may be nil; dstep must be given for lsq. mask, x, step
// and scratch are Forward's.
func (q *Quantizer) Backward(dx, dstep, doffset, dout []float32, mask []uint8, x, step, scratch []float32) {
	if q.Scale == "clip" {
		panic("qat: Backward of a clip quantizer: its op is ClipBackward (the tape's Apply)")
	}
	if q.Scale != "lsq" || q.block() > 0 {
		if dx != nil {
			kernels.MaskGrad(dx, dout, mask)
		}
		return
	}
	group, _ := q.Group(q.row, len(x))
	var qmin, qmax float32
	if q.Format == kernels.Int {
		qmin, qmax = q.Grid()
	}
	u := x
	if !q.Symmetric {
		u = scratch[:len(x)]
	}
	gscale := q.gradScale(group, qmax)
	kernels.LSQGrad(dx, dstep, dout, u, step, group, -qmin, qmax, gscale)
	if doffset != nil {
		kernels.ClippedSumGroups(doffset, dout, mask, group, gscale)
	}
}

// gradScale is LSQ's 1/sqrt(N*Qp): N is the number of values per step for
// a weight, the number of features (the row) for an activation.
func (q *Quantizer) gradScale(group int, qp float32) float32 {
	if q.Activation {
		group = q.row
	}
	return float32(1 / math.Sqrt(float64(group)*float64(qp)))
}

// Codes returns the integer grid values and per-group scales that the
// quantizer's forward gives the weight w (symmetric int formats): the
// fake-quant value of w[i] is float32(codes[i]) * scales[i/group], bit for
// bit, so a packed export reproduces the trained model exactly.
func (q *Quantizer) Codes(w []float32) (codes []int8, scales []float32, group int, err error) {
	if q.Format != kernels.Int || !q.Symmetric {
		return nil, nil, 0, fmt.Errorf("packed int export needs a symmetric int quantizer, have %s (symmetric %v)", q.Format, q.Symmetric)
	}
	group, err = q.Group(q.row, len(w))
	if err != nil {
		return nil, nil, 0, err
	}
	if q.Step != nil { // learned or searched steps
		return q.codes(w, append([]float32(nil), q.Step.Data()...), group)
	}
	ng := len(w) / group
	scales = make([]float32, ng)
	q.dynamicScales(scales, make([]float32, ng), w, group)
	return q.codes(w, scales, group)
}

func (q *Quantizer) codes(w, scales []float32, group int) ([]int8, []float32, int, error) {
	y, mask := make([]float32, len(w)), make([]uint8, len(w))
	qmin, qmax := q.Grid()
	zero := make([]float32, len(scales))
	if q.Scale == "lsq" {
		kernels.FakeQuantLSQ(y, mask, w, scales, group, -qmin, qmax)
	} else {
		kernels.FakeQuantAffine(y, mask, w, scales, zero, group, qmin, qmax)
	}
	codes := make([]int8, len(w))
	for i, v := range y {
		s := scales[i/group]
		c := float32(math.RoundToEven(float64(v / s)))
		if c*s != v {
			return nil, nil, 0, fmt.Errorf("value %d: %g is not an integer multiple of its scale %g", i, v, s)
		}
		codes[i] = int8(c)
	}
	return codes, scales, group, nil
}

// SameAs reports whether o is a quantizer with the same spec and dynamic
// scales (no steps, no clip values): it then computes the same function of
// the same input (layers.InputSharer).
func (q *Quantizer) SameAs(o layers.Quantizer) bool {
	p, ok := o.(*Quantizer)
	return ok && p.Spec == q.Spec && !q.Fixed() && !p.Fixed() && p.row == q.row && q.cal == nil && p.cal == nil
}

// Row is the length of the rows q quantizes (groups never cross one).
func (q *Quantizer) Row() int { return q.row }
