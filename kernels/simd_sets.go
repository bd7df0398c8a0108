// Code generated from the template in the project history; DO NOT EDIT by hand:
// both sets wrap the same C source compiled for two instruction sets.

//go:build cgo && !purego

package kernels

// #include "simd.h"
import "C"

var avx512Set = Set{
	Name: "avx512",
	Exp:  func(x []float32) { C.exp_inplace_avx512(fp(x), C.long(len(x))) },
	CausalSoftmax: func(s []float32, rows, i0, n, ld int, scale float32, lse []float32) {
		checkLen("CausalSoftmax", s, (rows-1)*ld+n)
		checkLen("CausalSoftmax lse", lse, rows)
		C.causal_softmax_avx512(fp(s), C.long(rows), C.long(i0), C.long(n), C.long(ld), C.float(scale), fp(lse))
	},
	SoftmaxBwd: func(p, dp []float32, rows, n, ld int, scale float32) {
		checkLen("SoftmaxBwd", p, (rows-1)*ld+n)
		checkLen("SoftmaxBwd", dp, (rows-1)*ld+n)
		C.softmax_bwd_avx512(fp(p), fp(dp), C.long(rows), C.long(n), C.long(ld), C.float(scale))
	},
	CrossEntropy: func(x []float32, t []int32, dx, loss []float32, rows, n int, gscale float32) {
		checkLen("CrossEntropy", x, rows*n)
		checkLen("CrossEntropy dx", dx, rows*n)
		checkTargets(t, rows, n)
		checkLen("CrossEntropy loss", loss, rows)
		C.cross_entropy_avx512(fp(x), ip(t), fp(dx), fp(loss), C.long(rows), C.long(n), C.float(gscale))
	},
	RMSNormFwd: func(y, rstd, x, w []float32, rows, d int, eps float32) {
		checkLen("RMSNormFwd", x, rows*d)
		checkLen("RMSNormFwd", y, rows*d)
		checkLen("RMSNormFwd", w, d)
		checkLen("RMSNormFwd", rstd, rows)
		C.rmsnorm_fwd_avx512(fp(y), fp(rstd), fp(x), fp(w), C.long(rows), C.long(d), C.float(eps))
	},
	RMSNormBwd: func(dx, dw, dy, x, w, rstd []float32, rows, d int) {
		checkLen("RMSNormBwd", x, rows*d)
		checkLen("RMSNormBwd", dx, rows*d)
		checkLen("RMSNormBwd", dy, rows*d)
		checkLen("RMSNormBwd", w, d)
		checkLen("RMSNormBwd", dw, d)
		checkLen("RMSNormBwd", rstd, rows)
		C.rmsnorm_bwd_avx512(fp(dx), fp(dw), fp(dy), fp(x), fp(w), fp(rstd), C.long(rows), C.long(d))
	},
	SwiGLUFwd: func(y, g, u []float32) {
		n := len(y)
		checkLen("SwiGLUFwd", g, n)
		checkLen("SwiGLUFwd", u, n)
		C.swiglu_fwd_avx512(fp(y), fp(g), fp(u), C.long(n))
	},
	SwiGLUBwd: func(dg, du, dy, g, u []float32) {
		n := len(dy)
		checkLen("SwiGLUBwd", dg, n)
		checkLen("SwiGLUBwd", du, n)
		checkLen("SwiGLUBwd", g, n)
		checkLen("SwiGLUBwd", u, n)
		C.swiglu_bwd_avx512(fp(dg), fp(du), fp(dy), fp(g), fp(u), C.long(n))
	},
	SiLUFwd: func(y, x []float32) {
		checkLen("SiLUFwd", x, len(y))
		C.silu_fwd_avx512(fp(y), fp(x), C.long(len(y)))
	},
	SiLUBwd: func(dx, dy, x []float32) {
		checkLen("SiLUBwd", dy, len(dx))
		checkLen("SiLUBwd", x, len(dx))
		C.silu_bwd_avx512(fp(dx), fp(dy), fp(x), C.long(len(dx)))
	},
	RoPE: func(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd int, sign float32, acc bool) {
		checkRoPE(y, x, pos, cos, sin, rows, heads, hd)
		C.rope_avx512(fp(y), fp(x), ip(pos), fp(cos), fp(sin), C.long(rows), C.long(heads), C.long(hd), C.float(sign), cbool(acc))
	},
	Axpy: func(y, x []float32, a float32) {
		checkLen("Axpy", x, len(y))
		C.axpy_avx512(fp(y), fp(x), C.float(a), C.long(len(y)))
	},
	Add: func(y, a, b []float32) {
		checkLen("Add", a, len(y))
		checkLen("Add", b, len(y))
		C.add_avx512(fp(y), fp(a), fp(b), C.long(len(y)))
	},
	Scale: func(y, x []float32, a float32) {
		checkLen("Scale", x, len(y))
		C.scale_avx512(fp(y), fp(x), C.float(a), C.long(len(y)))
	},
}

var avx2Set = Set{
	Name: "avx2",
	Exp:  func(x []float32) { C.exp_inplace_avx2(fp(x), C.long(len(x))) },
	CausalSoftmax: func(s []float32, rows, i0, n, ld int, scale float32, lse []float32) {
		checkLen("CausalSoftmax", s, (rows-1)*ld+n)
		checkLen("CausalSoftmax lse", lse, rows)
		C.causal_softmax_avx2(fp(s), C.long(rows), C.long(i0), C.long(n), C.long(ld), C.float(scale), fp(lse))
	},
	SoftmaxBwd: func(p, dp []float32, rows, n, ld int, scale float32) {
		checkLen("SoftmaxBwd", p, (rows-1)*ld+n)
		checkLen("SoftmaxBwd", dp, (rows-1)*ld+n)
		C.softmax_bwd_avx2(fp(p), fp(dp), C.long(rows), C.long(n), C.long(ld), C.float(scale))
	},
	CrossEntropy: func(x []float32, t []int32, dx, loss []float32, rows, n int, gscale float32) {
		checkLen("CrossEntropy", x, rows*n)
		checkLen("CrossEntropy dx", dx, rows*n)
		checkTargets(t, rows, n)
		checkLen("CrossEntropy loss", loss, rows)
		C.cross_entropy_avx2(fp(x), ip(t), fp(dx), fp(loss), C.long(rows), C.long(n), C.float(gscale))
	},
	RMSNormFwd: func(y, rstd, x, w []float32, rows, d int, eps float32) {
		checkLen("RMSNormFwd", x, rows*d)
		checkLen("RMSNormFwd", y, rows*d)
		checkLen("RMSNormFwd", w, d)
		checkLen("RMSNormFwd", rstd, rows)
		C.rmsnorm_fwd_avx2(fp(y), fp(rstd), fp(x), fp(w), C.long(rows), C.long(d), C.float(eps))
	},
	RMSNormBwd: func(dx, dw, dy, x, w, rstd []float32, rows, d int) {
		checkLen("RMSNormBwd", x, rows*d)
		checkLen("RMSNormBwd", dx, rows*d)
		checkLen("RMSNormBwd", dy, rows*d)
		checkLen("RMSNormBwd", w, d)
		checkLen("RMSNormBwd", dw, d)
		checkLen("RMSNormBwd", rstd, rows)
		C.rmsnorm_bwd_avx2(fp(dx), fp(dw), fp(dy), fp(x), fp(w), fp(rstd), C.long(rows), C.long(d))
	},
	SwiGLUFwd: func(y, g, u []float32) {
		n := len(y)
		checkLen("SwiGLUFwd", g, n)
		checkLen("SwiGLUFwd", u, n)
		C.swiglu_fwd_avx2(fp(y), fp(g), fp(u), C.long(n))
	},
	SwiGLUBwd: func(dg, du, dy, g, u []float32) {
		n := len(dy)
		checkLen("SwiGLUBwd", dg, n)
		checkLen("SwiGLUBwd", du, n)
		checkLen("SwiGLUBwd", g, n)
		checkLen("SwiGLUBwd", u, n)
		C.swiglu_bwd_avx2(fp(dg), fp(du), fp(dy), fp(g), fp(u), C.long(n))
	},
	SiLUFwd: func(y, x []float32) {
		checkLen("SiLUFwd", x, len(y))
		C.silu_fwd_avx2(fp(y), fp(x), C.long(len(y)))
	},
	SiLUBwd: func(dx, dy, x []float32) {
		checkLen("SiLUBwd", dy, len(dx))
		checkLen("SiLUBwd", x, len(dx))
		C.silu_bwd_avx2(fp(dx), fp(dy), fp(x), C.long(len(dx)))
	},
	RoPE: func(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd int, sign float32, acc bool) {
		checkRoPE(y, x, pos, cos, sin, rows, heads, hd)
		C.rope_avx2(fp(y), fp(x), ip(pos), fp(cos), fp(sin), C.long(rows), C.long(heads), C.long(hd), C.float(sign), cbool(acc))
	},
	Axpy: func(y, x []float32, a float32) {
		checkLen("Axpy", x, len(y))
		C.axpy_avx2(fp(y), fp(x), C.float(a), C.long(len(y)))
	},
	Add: func(y, a, b []float32) {
		checkLen("Add", a, len(y))
		checkLen("Add", b, len(y))
		C.add_avx2(fp(y), fp(a), fp(b), C.long(len(y)))
	},
	Scale: func(y, x []float32, a float32) {
		checkLen("Scale", x, len(y))
		C.scale_avx2(fp(y), fp(x), C.float(a), C.long(len(y)))
	},
}
