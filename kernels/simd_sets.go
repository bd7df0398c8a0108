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
// set) as a Set; withChecks checks lengths before any pointer crosses to C.
func cSet(name string, t *C.kern_table) Set {
	return withChecks(Set{
		Name: name,
		Exp:  func(x []float32) { C.k_exp_inplace(t, fp(x), C.long(len(x))) },
		CausalSoftmax: func(s []float32, rows, i0, n, ld int, scale float32, lse []float32) {
			C.k_causal_softmax(t, fp(s), C.long(rows), C.long(i0), C.long(n), C.long(ld), C.float(scale), fp(lse))
		},
		SoftmaxBwd: func(p, dp []float32, rows, n, ld int, scale float32) {
			C.k_softmax_bwd(t, fp(p), fp(dp), C.long(rows), C.long(n), C.long(ld), C.float(scale))
		},
		CrossEntropy: func(x []float32, tg []int32, dx, loss []float32, rows, n int, gscale float32) {
			C.k_cross_entropy(t, fp(x), ip(tg), fp(dx), fp(loss), C.long(rows), C.long(n), C.float(gscale))
		},
		RMSNormFwd: func(y, rstd, x, w []float32, rows, d int, eps float32) {
			C.k_rmsnorm_fwd(t, fp(y), fp(rstd), fp(x), fp(w), C.long(rows), C.long(d), C.float(eps))
		},
		RMSNormBwd: func(dx, dw, dy, x, w, rstd []float32, rows, d int) {
			C.k_rmsnorm_bwd(t, fp(dx), fp(dw), fp(dy), fp(x), fp(w), fp(rstd), C.long(rows), C.long(d))
		},
		SwiGLUFwd: func(y, g, u []float32) {
			C.k_swiglu_fwd(t, fp(y), fp(g), fp(u), C.long(len(y)))
		},
		SwiGLUBwd: func(dg, du, dy, g, u []float32, acc bool) {
			C.k_swiglu_bwd(t, fp(dg), fp(du), fp(dy), fp(g), fp(u), C.long(len(dy)), cbool(acc))
		},
		SiLUFwd: func(y, x []float32) {
			C.k_silu_fwd(t, fp(y), fp(x), C.long(len(y)))
		},
		SiLUBwd: func(dx, dy, x []float32) {
			C.k_silu_bwd(t, fp(dx), fp(dy), fp(x), C.long(len(dx)))
		},
		RoPE: func(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd, ldy, ldx int, sign float32, acc bool) {
			C.k_rope(t, fp(y), fp(x), ip(pos), fp(cos), fp(sin), C.long(rows), C.long(heads), C.long(hd), C.long(ldy), C.long(ldx), C.float(sign), cbool(acc))
		},
		Axpy: func(y, x []float32, a float32) {
			C.k_axpy(t, fp(y), fp(x), C.float(a), C.long(len(y)))
		},
		Add: func(y, a, b []float32) {
			C.k_add(t, fp(y), fp(a), fp(b), C.long(len(y)))
		},
		Scale: func(y, x []float32, a float32) {
			C.k_scale(t, fp(y), fp(x), C.float(a), C.long(len(y)))
		},
		AdamW: func(p, g, m, v []float32, lr, b1, b2, eps, wd, bc1, bc2 float32) {
			C.k_adamw(t, fp(p), fp(g), fp(m), fp(v), C.long(len(p)), C.float(lr), C.float(b1), C.float(b2), C.float(eps), C.float(wd), C.float(bc1), C.float(bc2))
		},
		SumSq: func(x []float32) float64 { return float64(C.k_sumsq(t, fp(x), C.long(len(x)))) },
	})
}
