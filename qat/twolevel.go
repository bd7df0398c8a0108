package qat

import (
	"math"

	"qat/autograd"
	"qat/layers"
)

// TwoLevel is QQQ's per-group W4 layout for an int8 GEMM: group codes q
// with group scales s_g (Inner, symmetric int per group), then per row
// s_c = max|q s_g|/127 and the int8 weight w8 = rne(fp16(q * fp16(s_g/s_c)))
// (their kernel folds the group scales into int8 values in fp16
// arithmetic), so W = s_c * w8: what a per-channel W8A8 kernel computes
// (ChannelInt). The second rounding passes gradients straight through.
type TwoLevel struct {
	Inner *Quantizer
}

// groupScales returns the inner quantizer's scales for w.
func (t *TwoLevel) groupScales(w []float32) ([]float32, int) {
	group, _ := t.Inner.Group(t.Inner.row, len(w))
	if t.Inner.Step != nil {
		return t.Inner.Step.Data(), group
	}
	sc, z := make([]float32, len(w)/group), make([]float32, len(w)/group)
	t.Inner.dynamicScales(sc, z, w, group)
	return sc, group
}

// Int8 returns the int8 codes and row scales of y = Inner's fake quant of
// w (y = q*s_g exactly).
func (t *TwoLevel) Int8(w, y []float32) ([]int8, []float32) {
	sg, group := t.groupScales(w)
	row := t.Inner.row
	codes, sc := make([]int8, len(y)), make([]float32, len(y)/row)
	for r := range sc {
		var amax float32
		for _, v := range y[r*row : (r+1)*row] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		s := max(amax/127, 1.1920929e-07)
		sc[r] = s
		for j := r * row; j < (r+1)*row; j++ {
			g := sg[j/group]
			q := rne(y[j] / g)
			codes[j] = int8(min(max(rne(fp16(q*fp16(g/s))), -127), 127))
		}
	}
	return codes, sc
}

// Apply fake-quantizes w through both levels.
func (t *TwoLevel) Apply(ops autograd.Ops, w *autograd.Var) *autograd.Var {
	y := t.Inner.Apply(ops, w)
	return ops.Custom(w.Shape(), []*autograd.Var{y}, func(out []float32) {
		codes, sc := t.Int8(w.Data(), y.Data())
		row := t.Inner.row
		for i, c := range codes {
			out[i] = sc[i/row] * float32(c)
		}
	}, func(dout []float32, d [][]float32) {
		if d[0] != nil {
			for i, g := range dout {
				d[0][i] += g
			}
		}
	})
}

// State is the inner quantizer's.
func (t *TwoLevel) State() map[string]*autograd.Var { return t.Inner.State() }

// Replica wraps the inner quantizer's replica.
func (t *TwoLevel) Replica() layers.Quantizer {
	return &TwoLevel{Inner: t.Inner.Replica().(*Quantizer)}
}
