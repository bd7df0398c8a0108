//go:build cgo && !purego

package kernels

//go:generate python3 gen_simd_h.py

// #include "simd.h"
import "C"

var (
	avx512Set = cSet("avx512", &C.kern_avx512)
	avx2Set   = cSet("avx2", &C.kern_avx2)
)

// cSet wraps one table of C kernels (simd.c compiled for one instruction
// set) as a Set, checking lengths before any pointer crosses to C.
func cSet(name string, t *C.kern_table) Set {
	return Set{
		Name: name,
		Exp:  func(x []float32) { C.k_exp_inplace(t, fp(x), C.long(len(x))) },
		CausalSoftmax: func(s []float32, rows, i0, n, ld int, scale float32, lse []float32) {
			checkLen("CausalSoftmax", s, (rows-1)*ld+n)
			checkLen("CausalSoftmax lse", lse, rows)
			C.k_causal_softmax(t, fp(s), C.long(rows), C.long(i0), C.long(n), C.long(ld), C.float(scale), fp(lse))
		},
		SoftmaxBwd: func(p, dp []float32, rows, n, ld int, scale float32) {
			checkLen("SoftmaxBwd", p, (rows-1)*ld+n)
			checkLen("SoftmaxBwd", dp, (rows-1)*ld+n)
			C.k_softmax_bwd(t, fp(p), fp(dp), C.long(rows), C.long(n), C.long(ld), C.float(scale))
		},
		CrossEntropy: func(x []float32, tg []int32, dx, loss []float32, rows, n int, gscale float32) {
			checkLen("CrossEntropy", x, rows*n)
			checkLen("CrossEntropy dx", dx, rows*n)
			checkTargets(tg, rows, n)
			checkLen("CrossEntropy loss", loss, rows)
			C.k_cross_entropy(t, fp(x), ip(tg), fp(dx), fp(loss), C.long(rows), C.long(n), C.float(gscale))
		},
		RMSNormFwd: func(y, rstd, x, w []float32, rows, d int, eps float32) {
			checkLen("RMSNormFwd", x, rows*d)
			checkLen("RMSNormFwd", y, rows*d)
			checkLen("RMSNormFwd", w, d)
			checkLen("RMSNormFwd", rstd, rows)
			C.k_rmsnorm_fwd(t, fp(y), fp(rstd), fp(x), fp(w), C.long(rows), C.long(d), C.float(eps))
		},
		RMSNormBwd: func(dx, dw, dy, x, w, rstd []float32, rows, d int) {
			checkLen("RMSNormBwd", x, rows*d)
			checkLen("RMSNormBwd", dx, rows*d)
			checkLen("RMSNormBwd", dy, rows*d)
			checkLen("RMSNormBwd", w, d)
			checkLen("RMSNormBwd", dw, d)
			checkLen("RMSNormBwd", rstd, rows)
			C.k_rmsnorm_bwd(t, fp(dx), fp(dw), fp(dy), fp(x), fp(w), fp(rstd), C.long(rows), C.long(d))
		},
		SwiGLUFwd: func(y, g, u []float32) {
			checkLen("SwiGLUFwd", g, len(y))
			checkLen("SwiGLUFwd", u, len(y))
			C.k_swiglu_fwd(t, fp(y), fp(g), fp(u), C.long(len(y)))
		},
		SwiGLUBwd: func(dg, du, dy, g, u []float32) {
			n := len(dy)
			checkLen("SwiGLUBwd", dg, n)
			checkLen("SwiGLUBwd", du, n)
			checkLen("SwiGLUBwd", g, n)
			checkLen("SwiGLUBwd", u, n)
			C.k_swiglu_bwd(t, fp(dg), fp(du), fp(dy), fp(g), fp(u), C.long(n))
		},
		SiLUFwd: func(y, x []float32) {
			checkLen("SiLUFwd", x, len(y))
			C.k_silu_fwd(t, fp(y), fp(x), C.long(len(y)))
		},
		SiLUBwd: func(dx, dy, x []float32) {
			checkLen("SiLUBwd", dy, len(dx))
			checkLen("SiLUBwd", x, len(dx))
			C.k_silu_bwd(t, fp(dx), fp(dy), fp(x), C.long(len(dx)))
		},
		RoPE: func(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd int, sign float32, acc bool) {
			checkRoPE(y, x, pos, cos, sin, rows, heads, hd)
			C.k_rope(t, fp(y), fp(x), ip(pos), fp(cos), fp(sin), C.long(rows), C.long(heads), C.long(hd), C.float(sign), cbool(acc))
		},
		Axpy: func(y, x []float32, a float32) {
			checkLen("Axpy", x, len(y))
			C.k_axpy(t, fp(y), fp(x), C.float(a), C.long(len(y)))
		},
		Add: func(y, a, b []float32) {
			checkLen("Add", a, len(y))
			checkLen("Add", b, len(y))
			C.k_add(t, fp(y), fp(a), fp(b), C.long(len(y)))
		},
		Scale: func(y, x []float32, a float32) {
			checkLen("Scale", x, len(y))
			C.k_scale(t, fp(y), fp(x), C.float(a), C.long(len(y)))
		},
		AdamW: func(p, g, m, v []float32, lr, b1, b2, eps, wd, bc1, bc2 float32) {
			checkLen("AdamW", g, len(p))
			checkLen("AdamW", m, len(p))
			checkLen("AdamW", v, len(p))
			C.k_adamw(t, fp(p), fp(g), fp(m), fp(v), C.long(len(p)), C.float(lr), C.float(b1), C.float(b2), C.float(eps), C.float(wd), C.float(bc1), C.float(bc2))
		},
		SumSq: func(x []float32) float64 { return float64(C.k_sumsq(t, fp(x), C.long(len(x)))) },
	}
}
