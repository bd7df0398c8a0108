package kernels

import (
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Fake quantization kernels. A tensor is processed as consecutive groups of
// `group` elements, one scale (and zero point) per group: per tensor,
// per output channel (a weight row), per group of G along a row, and per
// token (an activation row) are all this layout with different group
// sizes. mask[i] is 1 where the straight-through gradient passes (the value
// was not clipped) and 0 elsewhere.

func checkGroups(op string, n, group, scales int) {
	if group <= 0 || n%group != 0 || scales < n/group {
		panic(fmt.Sprintf("kernels: %s: %d values in groups of %d with %d scales", op, n, group, scales))
	}
}

// useSIMD selects the C kernels where they exist; tests turn it off to
// compare them with the Go loops.
var useSIMD = true

// rne rounds half to even, as torch.round does.
func rne(v float32) float32 { return float32(math.RoundToEven(float64(v))) }

// AbsMaxGroups writes max |x| of each group to out.
func AbsMaxGroups(out, x []float32, group int) {
	checkGroups("AbsMaxGroups", len(x), group, len(out))
	if absMaxGroupsSIMD(out, x, group) {
		return
	}
	for k := 0; k < len(x)/group; k++ {
		var m float32
		for _, v := range x[k*group : (k+1)*group] {
			m = max(m, float32(math.Abs(float64(v))))
		}
		out[k] = m
	}
}

// MinMaxGroups writes each group's minimum and maximum.
func MinMaxGroups(lo, hi, x []float32, group int) {
	checkGroups("MinMaxGroups", len(x), group, min(len(lo), len(hi)))
	if minMaxGroupsSIMD(lo, hi, x, group) {
		return
	}
	for k := 0; k < len(x)/group; k++ {
		g := x[k*group : (k+1)*group]
		a, b := g[0], g[0]
		for _, v := range g {
			a, b = min(a, v), max(b, v)
		}
		lo[k], hi[k] = a, b
	}
}

// FakeQuantAffine writes y = (clamp(rne(x/s)+z, qmin, qmax) - z)*s with
// scale s and integer zero point z per group; mask marks rne(x/s)+z inside
// [qmin, qmax] (torchao's convention: the mask is taken after rounding).
func FakeQuantAffine(y []float32, mask []uint8, x, scale, zero []float32, group int, qmin, qmax float32) {
	checkGroups("FakeQuantAffine", len(x), group, min(len(scale), len(zero)))
	checkLen("FakeQuantAffine y", y, len(x))
	if len(mask) < len(x) {
		panic("kernels: FakeQuantAffine: mask too short")
	}
	if fakeQuantAffineSIMD(y, mask, x, scale, zero, group, qmin, qmax) {
		return
	}
	for k := 0; k < len(x)/group; k++ {
		s, z := scale[k], zero[k]
		inv := 1 / s
		for i := k * group; i < (k+1)*group; i++ {
			q := rne(x[i]*inv) + z
			m := uint8(1)
			if q < qmin {
				q, m = qmin, 0
			} else if q > qmax {
				q, m = qmax, 0
			}
			y[i] = (q - z) * s
			mask[i] = m
		}
	}
}

// FakeQuantQ4_0 reproduces llama.cpp's Q4_0 (quantize_row_q4_0_ref) on
// blocks of 32: d = m/-8 with m the first value of largest magnitude,
// q = min(15, floor(x*(1/d) + 8.5)), and x_hat = (q-8)*fp16(d). Only the
// clip at 15 stops the gradient.
func FakeQuantQ4_0(y []float32, mask []uint8, x []float32) {
	checkGroups("FakeQuantQ4_0", len(x), 32, len(x)/32)
	if len(y) < len(x) || len(mask) < len(x) {
		panic("kernels: FakeQuantQ4_0: output or mask too short")
	}
	if fakeQuantQ4_0SIMD(y, mask, x) {
		return
	}
	for b := 0; b < len(x); b += 32 {
		d, r := q4_0Block(x[b : b+32])
		dh := float16.Fromfloat32(d).Float32()
		for j, q := range r {
			mk := uint8(1)
			if q > 15 {
				q, mk = 15, 0
			}
			y[b+j] = float32(q-8) * dh
			mask[b+j] = mk
		}
	}
}

// FakeQuantQ8_0 reproduces llama.cpp's Q8_0 (quantize_row_q8_0_ref) on
// blocks of 32: d = amax/127, q = round-half-away(x/d), x_hat = q*fp16(d).
// Nothing clips.
func FakeQuantQ8_0(y []float32, mask []uint8, x []float32) {
	checkGroups("FakeQuantQ8_0", len(x), 32, len(x)/32)
	for b := 0; b < len(x); b += 32 {
		d, q := q8_0Block(x[b : b+32])
		dh := float16.Fromfloat32(d).Float32()
		for j, v := range q {
			y[b+j] = float32(v) * dh
			mask[b+j] = 1
		}
	}
}

// FPFormat holds a small floating-point format's parameters (Formats'
// FP field): exponent and mantissa bits, exponent bias and largest finite
// value.
type FPFormat struct {
	Exp, Man   int
	Bias       int
	Max        float32
	Subnormals bool
}

// RoundFP rounds v to the nearest value of format f, ties to even,
// saturating at ±Max (NaN stays NaN). The step of v's binade comes from its
// float32 exponent bits (subnormals of f share the smallest normal binade's
// step); the division and multiplication by a power of two are exact.
func (f FPFormat) RoundFP(v float32) float32 {
	if v != v {
		return v
	}
	a := float32(math.Abs(float64(v)))
	if a >= f.Max {
		return float32(math.Copysign(float64(f.Max), float64(v)))
	}
	if a == 0 {
		return v
	}
	e := int(math.Float32bits(a)>>23&0xff) - 127 // floor(log2 a); float32 subnormals are far below every emin here
	e = max(e, 1-f.Bias)
	step := math.Float32frombits(uint32(e-f.Man+127) << 23)
	r := min(rne(a/step)*step, f.Max)
	return float32(math.Copysign(float64(r), float64(v)))
}

// FakeQuantFP writes y = RoundFP(clamp(x/s, ±Max))*s per group; mask marks
// values inside ±Max*s (saturated ones get no gradient).
func FakeQuantFP(y []float32, mask []uint8, x, scale []float32, group int, f FPFormat) {
	checkGroups("FakeQuantFP", len(x), group, len(scale))
	for k := 0; k < len(x)/group; k++ {
		s := scale[k]
		for i := k * group; i < (k+1)*group; i++ {
			u := x[i] / s
			m := uint8(1)
			if u > f.Max || u < -f.Max {
				m = 0
			}
			y[i] = f.RoundFP(u) * s
			mask[i] = m
		}
	}
}

// MaskGrad adds dy where mask is set into dx (the straight-through
// estimator's backward).
func MaskGrad(dx, dy []float32, mask []uint8) {
	checkLen("MaskGrad", dy, len(dx))
	if len(mask) < len(dx) {
		panic("kernels: MaskGrad: mask too short")
	}
	if maskGradSIMD(dx, dy, mask) {
		return
	}
	for i, m := range mask[:len(dx)] {
		if m != 0 {
			dx[i] += dy[i]
		}
	}
}

// FakeQuantLSQ is LSQ's forward (arXiv 1902.08153) with a learned step s
// per group: v = x/s, y = rne(clamp(v, -qn, qp))*s; mask marks -qn <= v <= qp.
func FakeQuantLSQ(y []float32, mask []uint8, x, scale []float32, group int, qn, qp float32) {
	checkGroups("FakeQuantLSQ", len(x), group, len(scale))
	if len(y) < len(x) || len(mask) < len(x) {
		panic("kernels: FakeQuantLSQ: output or mask too short")
	}
	if fakeQuantLSQSIMD(y, mask, x, scale, group, qn, qp) {
		return
	}
	for k := 0; k < len(x)/group; k++ {
		s := scale[k]
		for i := k * group; i < (k+1)*group; i++ {
			v := x[i] / s
			m := uint8(1)
			if v < -qn {
				v, m = -qn, 0
			} else if v > qp {
				v, m = qp, 0
			}
			y[i] = rne(v) * s
			mask[i] = m
		}
	}
}

// LSQGrad adds LSQ's gradients: dx += dy inside the range, and per group
// ds += gscale * sum(dy * e), e = rne(v)-v inside, -qn below, qp above.
func LSQGrad(dx, ds, dy, x, scale []float32, group int, qn, qp, gscale float32) {
	checkGroups("LSQGrad", len(x), group, min(len(scale), len(ds)))
	checkLen("LSQGrad dy", dy, len(x))
	if dx != nil {
		checkLen("LSQGrad dx", dx, len(x))
	}
	if lsqGradSIMD(dx, ds, dy, x, scale, group, qn, qp, gscale) {
		return
	}
	for k := 0; k < len(x)/group; k++ {
		s := scale[k]
		var acc float64
		for i := k * group; i < (k+1)*group; i++ {
			v := x[i] / s
			var e float32
			switch {
			case v < -qn:
				e = -qn
			case v > qp:
				e = qp
			default:
				e = rne(v) - v
				if dx != nil {
					dx[i] += dy[i]
				}
			}
			acc += float64(dy[i] * e)
		}
		ds[k] += gscale * float32(acc)
	}
}

// ShiftGroups writes y = x + sign*off[k] for each group k (LSQ+'s shift by
// its learned offset; y may be x).
func ShiftGroups(y, x, off []float32, group int, sign float32) {
	checkGroups("ShiftGroups", len(x), group, len(off))
	checkLen("ShiftGroups y", y, len(x))
	for k := 0; k < len(x)/group; k++ {
		b := sign * off[k]
		xs, ys := x[k*group:(k+1)*group], y[k*group:(k+1)*group]
		for i, v := range xs {
			ys[i] = v + b
		}
	}
}

// ClippedSumGroups adds gscale * (the sum of dy where mask is 0, the
// clipped values) into out[k] for each group k: LSQ+'s offset gradient.
func ClippedSumGroups(out, dy []float32, mask []uint8, group int, gscale float32) {
	checkGroups("ClippedSumGroups", len(dy), group, len(out))
	if len(mask) < len(dy) {
		panic("kernels: ClippedSumGroups: mask too short")
	}
	for k := 0; k < len(dy)/group; k++ {
		var acc float64
		for i := k * group; i < (k+1)*group; i++ {
			if mask[i] == 0 {
				acc += float64(dy[i])
			}
		}
		out[k] += gscale * float32(acc)
	}
}
