package qat

import (
	"fmt"
	"math"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

// Quantizer is a Spec applied to one tensor: for LSQ it owns the learned
// steps (a parameter, one per group).
type Quantizer struct {
	Spec
	// Step holds LSQ's learned steps (nil for minmax scales).
	Step *autograd.Var
	row  int
	init bool
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
	if spec.Scale == "lsq" {
		g, _ := spec.Group(row, n)
		q.Step = autograd.NewParam(n / g)
	}
	return q, nil
}

// State returns the learned steps of an LSQ quantizer.
func (q *Quantizer) State() map[string]*autograd.Var {
	if q.Step == nil {
		return nil
	}
	return map[string]*autograd.Var{"step": q.Step}
}

// Replica shares the steps' values and gives them their own gradient.
func (q *Quantizer) Replica() layers.Quantizer {
	r := *q
	if q.Step != nil {
		r.Step = q.Step.Replica()
	}
	return &r
}

// InitLSQ sets the steps from x (the weight, at Prepare), LSQ's
// s0 = 2*mean|x|/sqrt(Qp) per group.
func (q *Quantizer) InitLSQ(x []float32) {
	group, _ := q.Group(q.row, len(x))
	q.initLSQ(x, group)
}

func (q *Quantizer) initLSQ(x []float32, group int) {
	_, qp := q.Grid()
	for k := range q.Step.Data() {
		var sum float64
		for _, v := range x[k*group : (k+1)*group] {
			sum += math.Abs(float64(v))
		}
		q.Step.Data()[k] = float32(max(2*sum/float64(group)/math.Sqrt(float64(qp)), 1e-8))
	}
	q.init = true
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
	group, _ := q.Group(q.row, n)
	if q.Scale == "lsq" {
		if q.Step.Size() != n/group {
			panic(fmt.Sprintf("qat: LSQ quantizer with %d steps applied to %d groups", q.Step.Size(), n/group))
		}
		if !q.init {
			panic("qat: LSQ quantizer used before InitLSQ")
		}
		qmin, qmax := q.Grid()
		qn, qp := -qmin, qmax
		gscale := float32(1 / math.Sqrt(float64(group)*float64(qp)))
		return t.Custom(shape, []*autograd.Var{x, q.Step}, func(out []float32) {
			kernels.FakeQuantLSQ(out, mask, x.Data(), q.Step.Data(), group, qn, qp)
		}, func(dout []float32, dins [][]float32) {
			ds := dins[1]
			if ds == nil {
				ds = make([]float32, q.Step.Size())
			}
			kernels.LSQGrad(dins[0], ds, dout, x.Data(), q.Step.Data(), group, qn, qp, gscale)
		})
	}
	scale, zero := t.Scratch(n/group), t.Scratch(n/group)
	return t.Custom(shape, []*autograd.Var{x}, func(out []float32) {
		q.dynamicScales(scale, zero, x.Data(), group)
		if q.Format == "int" {
			qmin, qmax := q.Grid()
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
