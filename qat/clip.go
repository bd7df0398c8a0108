package qat

import (
	"fmt"
	"math"

	"qat/autograd"
)

// Learned clip values (scale: clip), the activation quantizer of arXiv
// 2404.03605 (docs/algorithms.md section 5): a layer input is clipped to
// [lo, hi], two values per layer learned with the model, and rounded on
// the 2^b-1 steps between them:
//
//	u = (clamp(x, lo, hi) - lo) * L/(hi - lo),  L = 2^b - 1
//	x_hat = lo + rne(u) * (hi - lo)/L
//
// The grid need not hold 0 (its zero point lo/s is not rounded to an
// integer), as published. Gradients, with g the output's gradient: x gets
// g inside [lo, hi] (bounds included) and 0 outside; hi gets g from values
// clipped high and (rne(u)-u)/L * g from values inside; lo gets g from
// values clipped low and (u-rne(u))/L * g from values inside. These are
// the derivatives of x_hat with the rounding residual rne(u)-u held fixed
// (the straight-through estimator), unscaled: the paper gives no gradient
// scale, and AdamW's update does not depend on one.

// clip mask values: where each value fell, kept for backward.
const (
	clipIn uint8 = iota
	clipLow
	clipHigh
)

// clipRange returns the width L/(hi-lo) multiplies by and the grid's step
// (hi-lo)/L, in float32 as Forward and Backward both compute them.
func clipRange(lo, hi, levels float32) (inv, step float32) {
	w := hi - lo
	return levels / w, w / levels
}

// clipLevels is L = 2^b - 1.
func (q *Quantizer) clipLevels() float32 { return float32(int(1)<<q.Bits) - 1 }

// clipValues returns the clip values, panicking when they are not yet set
// (Calibrate sets them) or have crossed.
func (q *Quantizer) clipValues() (lo, hi float32) {
	lo, hi = q.ClipLo.Data()[0], q.ClipHi.Data()[0]
	if !(hi > lo) {
		if lo == 0 && hi == 0 {
			panic("qat: clip quantizer used before Calibrate")
		}
		panic(fmt.Sprintf("qat: clip values crossed: clip_lo %g, clip_hi %g", lo, hi))
	}
	return lo, hi
}

// ClipForward writes x fake-quantized between the clip values lo < hi into
// out, and into mask where each value fell (inside, clipped low or high).
func ClipForward(out []float32, mask []uint8, x []float32, lo, hi float32, bits int) {
	levels := float32(int(1)<<bits) - 1
	inv, step := clipRange(lo, hi, levels)
	// one pass on the calling goroutine: the training step's elementwise
	// ops run serially beside OpenBLAS's threads (kernels.ForChunks)
	for i, v := range x {
		m := clipIn
		switch {
		case v < lo:
			v, m = lo, clipLow
		case v > hi:
			v, m = hi, clipHigh
		}
		// u can exceed L by an ulp of the division; the min brings it back
		r := min(rne((v-lo)*inv), levels)
		out[i], mask[i] = lo+r*step, m
	}
}

// ClipBackward adds (+=) the gradients of ClipForward's output dout: into
// dx (may be nil) g where the value fell inside, and the sums over the
// tensor into dlo[0] and dhi[0] (nil: not wanted). x, lo, hi and mask are
// ClipForward's.
func ClipBackward(dx, dlo, dhi, dout []float32, mask []uint8, x []float32, lo, hi float32, bits int) {
	levels := float32(int(1)<<bits) - 1
	inv, _ := clipRange(lo, hi, levels)
	// sums in float64: a tensor's millions of terms would lose the small
	// residual terms in a float32 sum
	var sl, sh float64
	for i, g := range dout {
		switch mask[i] {
		case clipLow:
			sl += float64(g)
		case clipHigh:
			sh += float64(g)
		default:
			if dx != nil {
				dx[i] += g
			}
			u := (x[i] - lo) * inv
			e := float64(min(rne(u), levels)-u) / float64(levels) * float64(g)
			sh += e
			sl -= e
		}
	}
	if dlo != nil {
		dlo[0] += float32(sl)
	}
	if dhi != nil {
		dhi[0] += float32(sh)
	}
}

// applyClip is Apply for clip scales: one tape op of x and the two clip
// values.
func (q *Quantizer) applyClip(t autograd.Ops, x *autograd.Var) *autograd.Var {
	lo, hi := q.clipValues()
	n := x.Size()
	mask := t.ScratchBytes(n)
	return t.Custom(x.Shape(), []*autograd.Var{x, q.ClipLo, q.ClipHi}, func(out []float32) {
		ClipForward(out, mask, x.Data(), lo, hi, q.Bits)
	}, func(dout []float32, dins [][]float32) {
		ClipBackward(dins[0], dins[1], dins[2], dout, mask, x.Data(), lo, hi, q.Bits)
	})
}

// initClip sets the clip values from the range [lo, hi] calibration saw
// (the min/max of every value: training from scratch starts from
// well-behaved activations, and the values then learn where to clip). A
// constant input gets a range around it, so the grid has a width.
func (q *Quantizer) initClip(lo, hi float32) {
	if !(hi > lo) {
		d := max(float32(math.Abs(float64(lo)))*1e-3, 1e-3)
		lo, hi = lo-d, hi+d
	}
	q.ClipLo.Data()[0], q.ClipHi.Data()[0] = lo, hi
}
