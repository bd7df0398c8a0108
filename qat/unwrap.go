package qat

import (
	"qat/autograd"
	"qat/layers"
)

// This file is what export and the engines read of a prepared model: they
// ask these functions, never assert qat's concrete types (a make vet check
// holds them to it).

// Plain is q as a plain fake-quant quantizer (one grid, no taps, outliers
// or adapters): the kind the Gorgonia and device engines build from their
// own ops. ok is false for nil and for every other quantizer.
func Plain(q layers.Quantizer) (p *Quantizer, ok bool) {
	p, ok = q.(*Quantizer)
	return p, ok
}

// Regularised reports whether l's input or output carries a kurtosis
// penalty (a tap with Coef != 0), which adds to the gradient.
func Regularised(l *layers.Linear) bool {
	for _, o := range append(l.Observers[:len(l.Observers):len(l.Observers)], l.OutputObservers...) {
		if k, ok := o.(*Kurtosis); ok && k.Coef != 0 {
			return true
		}
	}
	return false
}

// Measure turns the measuring of every tap on (evaluation) or off
// (training steps: a tap that does not regularise then costs nothing).
func Measure(taps map[string]*Kurtosis, on bool) {
	for _, k := range taps {
		k.idle = !on
	}
}

// Packing is what export needs to write a linear's weight quantizer as
// integer codes: the grid, the weights GWQ keeps in fp16 beside the codes,
// and whether QQQ's two-level groups fold the codes to int8 per channel.
type Packing struct {
	// Grid is the fake-quant grid the codes lie on (inside outliers or
	// two-level groups).
	Grid *Quantizer
	// Outliers are the flat indices of the weights kept in full precision
	// (GWQ, when KeepsOutliers); their codes are 0.
	Outliers      []int32
	KeepsOutliers bool
	twoLevel      *TwoLevel
}

// TwoLevel reports whether the codes are QQQ's int8 per channel.
func (p Packing) TwoLevel() bool { return p.twoLevel != nil }

// Codes are the codes and scales of w (wdata, outliers zeroed by the
// caller) on the grid, their group size and bits: the two-level fold of
// QQQ (int8 per channel) or the grid's own codes.
func (p Packing) Codes(w *autograd.Var, wdata []float32) (codes []int8, scales []float32, group, bits int, err error) {
	if p.twoLevel != nil {
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		codes, scales = p.twoLevel.Int8(wdata, p.twoLevel.Inner.Apply(tp, w).Data())
		return codes, scales, w.Shape()[1], 8, nil
	}
	codes, scales, group, err = p.Grid.Codes(wdata)
	return codes, scales, group, p.Grid.Bits, err
}

// WeightPacking is the packing of l's weight quantizer; ok is false when
// it has none that packs (full precision, adapters).
func WeightPacking(l *layers.Linear) (p Packing, ok bool) {
	switch q := l.WeightQuant.(type) {
	case *Quantizer:
		return Packing{Grid: q}, true
	case *Outliers:
		return Packing{Grid: q.Inner, Outliers: q.Idx, KeepsOutliers: true}, true
	case *TwoLevel:
		return Packing{Grid: q.Inner, twoLevel: q}, true
	}
	return Packing{}, false
}

// KeepsOutliers reports whether l's weight quantizer keeps fp16 weights
// beside its codes (GWQ).
func KeepsOutliers(l *layers.Linear) bool {
	_, ok := l.WeightQuant.(*Outliers)
	return ok
}
