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
	// Activation marks an input quantizer (steps from calibration data).
	Activation bool
	row        int
	// cal records inputs while Calibrate runs.
	cal *calibration
}

// NewQuantizer prepares spec for tensors whose rows have `row` values and
// `n` values in all (for activations, n of one batch row suffices: only
// group sizes depend on it). It fails when the group does not divide the
// row.
func NewQuantizer(spec Spec, row, n int) (*Quantizer, error) {
	if spec.Format == "q4_0" || spec.Format == "q8_0" {
		if row%32 != 0 {
			return nil, fmt.Errorf("%s needs rows that are a multiple of 32, have %d", spec.Format, row)
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
	}
	return q, nil
}

// State returns the steps (and offsets or zero points) of lsq and mse
// quantizers. mse's get no gradient, so training leaves them as found.
func (q *Quantizer) State() map[string]*autograd.Var {
	st := map[string]*autograd.Var{}
	for name, v := range map[string]*autograd.Var{"step": q.Step, "offset": q.Offset, "zero": q.Zero} {
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
	for _, v := range []**autograd.Var{&r.Step, &r.Offset, &r.Zero} {
		if *v != nil {
			*v = (*v).Replica()
		}
	}
	return &r
}

// Fixed reports whether the quantizer has steps that must be set before
// use (lsq and mse scales), by Init from a weight or Calibrate from data.
func (q *Quantizer) Fixed() bool { return q.Step != nil }

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
	if q.Format == "int" {
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
	mask := t.ScratchBytes(n) // one byte per value; kept for backward
	switch q.Format {
	case "q4_0", "q8_0":
		f := kernels.FakeQuantQ4_0
		if q.Format == "q8_0" {
			f = kernels.FakeQuantQ8_0
		}
		return t.Custom(shape, []*autograd.Var{x}, func(out []float32) { f(out, mask, x.Data()) },
			func(dout []float32, dins [][]float32) {
				if dins[0] != nil {
					kernels.MaskGrad(dins[0], dout, mask)
				}
			})
	}
	if q.cal != nil {
		q.cal.record(x.Data())
		return x
	}
	group, _ := q.Group(q.row, n)
	if q.Step != nil {
		if q.Step.Size() != n/group {
			panic(fmt.Sprintf("qat: quantizer with %d steps applied to %d groups", q.Step.Size(), n/group))
		}
		if q.Step.Data()[0] == 0 {
			panic("qat: quantizer with fixed or learned steps used before Init or Calibrate")
		}
	}
	var qmin, qmax float32
	if q.Format == "int" {
		qmin, qmax = q.Grid()
	}
	switch {
	case q.Scale == "mse":
		return t.Custom(shape, []*autograd.Var{x}, func(out []float32) {
			kernels.FakeQuantAffine(out, mask, x.Data(), q.Step.Data(), q.Zero.Data(), group, qmin, qmax)
		}, func(dout []float32, dins [][]float32) {
			if dins[0] != nil {
				kernels.MaskGrad(dins[0], dout, mask)
			}
		})
	case q.Scale == "lsq" && q.Symmetric:
		qn, qp := -qmin, qmax
		gscale := q.gradScale(group, qp)
		return t.Custom(shape, []*autograd.Var{x, q.Step}, func(out []float32) {
			kernels.FakeQuantLSQ(out, mask, x.Data(), q.Step.Data(), group, qn, qp)
		}, func(dout []float32, dins [][]float32) {
			ds := dins[1]
			if ds == nil {
				ds = t.Scratch(q.Step.Size())
				clear(ds)
			}
			kernels.LSQGrad(dins[0], ds, dout, x.Data(), q.Step.Data(), group, qn, qp, gscale)
		})
	case q.Scale == "lsq":
		// LSQ+: LSQ on the shifted u = x - beta, plus beta; beta's
		// gradient is the output gradient where u clipped.
		qn, qp := -qmin, qmax
		gscale := q.gradScale(group, qp)
		u := t.Scratch(n)
		return t.Custom(shape, []*autograd.Var{x, q.Step, q.Offset}, func(out []float32) {
			kernels.ShiftGroups(u, x.Data(), q.Offset.Data(), group, -1)
			kernels.FakeQuantLSQ(out, mask, u, q.Step.Data(), group, qn, qp)
			kernels.ShiftGroups(out, out, q.Offset.Data(), group, 1)
		}, func(dout []float32, dins [][]float32) {
			ds, db := dins[1], dins[2]
			if ds == nil {
				ds = t.Scratch(q.Step.Size())
				clear(ds)
			}
			kernels.LSQGrad(dins[0], ds, dout, u, q.Step.Data(), group, qn, qp, gscale)
			if db != nil {
				kernels.ClippedSumGroups(db, dout, mask, group, gscale)
			}
		})
	}
	scale, zero := t.Scratch(n/group), t.Scratch(n/group)
	return t.Custom(shape, []*autograd.Var{x}, func(out []float32) {
		q.dynamicScales(scale, zero, x.Data(), group)
		if q.Format == "int" {
			kernels.FakeQuantAffine(out, mask, x.Data(), scale, zero, group, qmin, qmax)
		} else {
			kernels.FakeQuantFP(out, mask, x.Data(), scale, group, q.fp())
		}
	}, func(dout []float32, dins [][]float32) {
		if dins[0] != nil {
			kernels.MaskGrad(dins[0], dout, mask)
		}
	})
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
	if q.Format != "int" || !q.Symmetric {
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
// scales (no steps): it then computes the same function of the same input
// (layers.InputSharer).
func (q *Quantizer) SameAs(o layers.Quantizer) bool {
	p, ok := o.(*Quantizer)
	return ok && p.Spec == q.Spec && q.Step == nil && p.Step == nil && p.row == q.row && q.cal == nil && p.cal == nil
}
