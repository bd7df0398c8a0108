package kernels

import (
	"fmt"
	"math"
)

// TokenU4 holds activations quantized to unsigned 4-bit codes u in
// [0, 15], one scale s and zero point z per row (x = s*(u - z)): the
// input of GemmChannel4 (W4A4). A code takes a byte, in input order (KP
// per row: K rounded up to 32, padded with code 0), as vpdpbusd takes it:
// the int4 weights' nibbles are widened to bytes in the kernel as each
// block streams in, while the activations, read again by every group of
// four weight rows, are written as bytes once by the quantizer (nibbles
// widened in the kernel measured slower: see channel4.c). The codes'
// range is what makes the kernels' 16-bit pair sums exact (channel4.c),
// so TokenU4 holds nothing else.
//
// The scale and zero point are per row whatever produced them: dynamic
// per-token quantization (Quantize4, the w4a4 recipe's minmax rule) sets
// each row's own; a static per-tensor quantizer (QuantizeClip4, learned
// clip values) sets the same values on every row. GemmChannel4 is one call
// for both. Z need not be an integer (the clip grid's zero point is
// -lo/s); the kernels' correction is exact whatever it is.
type TokenU4 struct {
	U           []byte // N rows of KP codes
	Scale, Zero []float32
	Sum         []int32 // per row: the sum of its codes
	N, K, KP    int
}

func (a *TokenU4) prepare(x []float32, n, k int) {
	if len(x) < n*k {
		panic(fmt.Sprintf("kernels: TokenU4: %d rows of %d from %d values", n, k, len(x)))
	}
	kp := (k + 31) / 32 * 32
	a.N, a.K, a.KP = n, k, kp
	if cap(a.U) < n*kp {
		a.U = make([]byte, n*kp)
	}
	a.U = a.U[:n*kp]
	for r := 0; r < n; r++ {
		clear(a.U[r*kp+k : (r+1)*kp])
	}
	a.Scale, a.Zero, a.Sum = grow(a.Scale, n), grow(a.Zero, n), growI(a.Sum, n)
}

// Dequantize writes row c's values s*(u - z) into x (K values).
func (a *TokenU4) Dequantize(x []float32, c int) {
	for j, u := range a.U[c*a.KP : c*a.KP+a.K] {
		x[j] = a.Scale[c] * (float32(u) - a.Zero[c])
	}
}

// Quantize4 quantizes n rows of k values into a at 4 bits by the scheme,
// as qat's per-token minmax quantizers do (qat.Spec.dynamicScales and
// FakeQuantAffine, so that the codes are the fake-quant model's):
// asymmetric, over the row's range widened to contain 0, s = (hi-lo)/15,
// z = clamp(-rne(lo/s), 0, 15), u = clamp(rne(x*(1/s)) + z, 0, 15);
// symmetric, s = amax/((7-qmin)/2) with qmin -8 (restricted: -7),
// u = clamp(rne(x*(1/s)), qmin, 7) - qmin, z = -qmin.
func (t TokenScheme) Quantize4(a *TokenU4, x []float32, n, k int) {
	a.prepare(x, n, k)
	for r := 0; r < n; r++ {
		row := x[r*k : (r+1)*k]
		var s, z, qmin, qmax float32
		if t.Symmetric {
			qmin, qmax = -8, 7
			if t.Restricted {
				qmin = -7
			}
			var amax float32
			for _, v := range row {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			s = max(amax/((qmax-qmin)/2), 1.1920929e-07)
		} else {
			qmin, qmax = 0, 15
			var lo, hi float32
			for _, v := range row {
				lo, hi = min(lo, v), max(hi, v)
			}
			s = max((hi-lo)/15, 1.1920929e-07)
			z = min(max(-float32(math.RoundToEven(float64(lo/s))), 0), 15)
		}
		inv := 1 / s
		u := a.U[r*a.KP : r*a.KP+k]
		var sum int32
		for j, v := range row {
			q := byte(min(max(float32(math.RoundToEven(float64(v*inv)))+z, qmin), qmax) - qmin)
			u[j] = q
			sum += int32(q)
		}
		a.Scale[r], a.Zero[r], a.Sum[r] = s, z-qmin, sum
	}
}

// QuantizeClip4 quantizes n rows of k values into a on a static grid: the
// 15 steps between clip values lo < hi (qat's clip scale, arXiv
// 2404.03605), u = min(rne((clamp(x, lo, hi) - lo) * (15/(hi-lo))), 15),
// x_hat = lo + u*(hi-lo)/15. Every row gets the same scale s = (hi-lo)/15
// and zero point z = -lo/s (not an integer: the clip grid need not hold
// 0), so x_hat = s*(u - z) up to float32 rounding of z.
func QuantizeClip4(a *TokenU4, x []float32, n, k int, lo, hi float32) {
	if !(hi > lo) {
		panic(fmt.Sprintf("kernels: QuantizeClip4: clip values %g, %g", lo, hi))
	}
	a.prepare(x, n, k)
	inv, step := 15/(hi-lo), (hi-lo)/15
	z := float32(-float64(lo) / float64(step))
	for r := 0; r < n; r++ {
		u := a.U[r*a.KP : r*a.KP+k]
		var sum int32
		for j, v := range x[r*k : (r+1)*k] {
			v = min(max(v, lo), hi)
			q := byte(min(float32(math.RoundToEven(float64((v-lo)*inv))), 15))
			u[j] = q
			sum += int32(q)
		}
		a.Scale[r], a.Zero[r], a.Sum[r] = step, z, sum
	}
}

// GemmChannel4 computes y[c*Rows + r] = s_w[r] s_x[c] sum_k w[r,k] (u_c[k]
// - z_c) for int4 per-channel weights and 4-bit activation codes (W4A4):
// the integer sum exact, the zero point applied once per output (see
// channel4.c for the algebra). Split over threads by groups of four rows
// (ForRows).
func GemmChannel4(w *ChannelInt, a *TokenU4, y []float32) {
	if w.Bits != 4 || a.K != w.K || len(y) < a.N*w.Rows {
		panic(fmt.Sprintf("kernels: GemmChannel4: %d x %d int%d weight, %d tokens of %d, %d outputs", w.Rows, w.K, w.Bits, a.N, a.K, len(y)))
	}
	groups := w.Rows / 4
	// about 64 KB of weights per task in units of four groups, on the
	// pool, as GemmChannel
	per := max(4, (1<<16)/(w.nb*64))
	cb := tokenChunk(a.KP)
	for c0 := 0; c0 < a.N; c0 += cb {
		sub, ys := a, y
		if a.N > cb {
			sub, ys = a.cols(c0, min(a.N, c0+cb)), y[c0*w.Rows:]
		}
		run := func(g0, g1 int) { gemmChannel4(packedISA, w, g0, g1, sub, ys) }
		if Serial(groups, per) {
			run(0, groups)
		} else {
			ForRows(groups, per, 4, run)
		}
	}
}

// cols is a view of rows c0..c1 of a.
func (a *TokenU4) cols(c0, c1 int) *TokenU4 {
	return &TokenU4{U: a.U[c0*a.KP : c1*a.KP], Scale: a.Scale[c0:c1], Zero: a.Zero[c0:c1], Sum: a.Sum[c0:c1], N: c1 - c0, K: a.K, KP: a.KP}
}

// gemmChannel4 runs the kernel of instruction set isa (2 AVX-512 VNNI, 1
// AVX2, 0 the Go loop; the Go loop where the one asked for is missing or
// useSIMD is off).
func gemmChannel4(isa int, w *ChannelInt, g0, g1 int, a *TokenU4, y []float32) {
	if !useSIMD || isa > packedISA || !gemmChannel4SIMD(isa, w, g0, g1, a, y) {
		gemmChannel4Go(w, g0, g1, a, y)
	}
}

// gemmChannel4Go is the reference: int64 dot products of the codes, the
// zero point's term in float64 (exact: a float32 times an integer below
// 2^29), one rounding to float32, then the scales as the C kernels apply
// them, so every kernel gives the same bits.
func gemmChannel4Go(w *ChannelInt, g0, g1 int, a *TokenU4, y []float32) {
	for c := 0; c < a.N; c++ {
		for r := 4 * g0; r < 4*g1; r++ {
			var d int64
			for j := 0; j < w.K; j++ {
				d += int64(w.code(r, j)) * int64(a.U[c*a.KP+j])
			}
			v := float64(d) - float64(a.Zero[c])*float64(w.Sum[r])
			y[c*w.Rows+r] = w.Scale[r] * a.Scale[c] * float32(v)
		}
	}
}
