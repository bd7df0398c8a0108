//go:build cgo

package cuda

// #cgo CFLAGS: -O2
// #cgo LDFLAGS: -lm
// #include "host.h"
import "C"

import (
	"unsafe"

	"qat/kernels"
)

// The host build of the device arithmetic: quant.h compiled by the C
// compiler and run in the CPU loops' order. Its tests compare it bit for
// bit with package kernels on any machine; the GPU tests then compare the
// device kernels, which share every float operation with it, with the same
// CPU kernels.

// cptr is the C pointer to s's first element (nil for an empty slice).
func cptr[E, T any](s []T) *E {
	if len(s) == 0 {
		return nil
	}
	return (*E)(unsafe.Pointer(&s[0]))
}

func fp(s []float32) *C.float { return cptr[C.float](s) }
func bp(s []uint8) *C.uint8_t { return cptr[C.uint8_t](s) }
func ip(s []int8) *C.int8_t   { return cptr[C.int8_t](s) }
func i32p(s []int32) *C.int   { return cptr[C.int](s) }

func hostFakeQuantAffine(y []float32, mask []uint8, x, scale, zero []float32, group int, qmin, qmax float32) {
	C.host_fq_affine(fp(y), bp(mask), fp(x), fp(scale), fp(zero), C.long(len(x)), C.int(group), C.float(qmin), C.float(qmax))
}

func hostFakeQuantLSQ(y []float32, mask []uint8, x, scale []float32, group int, qn, qp float32) {
	C.host_fq_lsq(fp(y), bp(mask), fp(x), fp(scale), C.long(len(x)), C.int(group), C.float(qn), C.float(qp))
}

func hostLSQGrad(dx, ds, dy, x, scale []float32, group int, qn, qp, gscale float32) {
	C.host_lsq_grad(fp(dx), fp(ds), fp(dy), fp(x), fp(scale), C.long(len(x)), C.int(group), C.float(qn), C.float(qp), C.float(gscale))
}

func hostFakeQuantQ4_0(y []float32, mask []uint8, x []float32) {
	C.host_fq_q4_0(fp(y), bp(mask), fp(x), C.long(len(x)/32))
}

func hostFakeQuantQ8_0(y []float32, mask []uint8, x []float32) {
	C.host_fq_q8_0(fp(y), bp(mask), fp(x), C.long(len(x)/32))
}

// hostQuantizeQ8 quantizes len(x)/32 blocks into a's arrays.
func hostQuantizeQ8(a *Q8Host, x []float32) {
	C.host_quantize_q8(fp(a.D), fp(a.C4), fp(a.C8), ip(a.Q), fp(x), C.long(len(x)/32))
}

func hostGemmPacked(f kernels.FormatID, y []float32, w []byte, rows, nb int, a *Q8Host) {
	C.host_gemm_packed(fp(y), bp(w), fp(a.D), fp(a.C4), ip(a.Q), C.int(rows), C.int(nb), C.int(len(a.D)/nb), C.int(q4(f)))
}

func hostAdamW8(p, g []float32, m, v []uint8, mAbs, vAbs []float32, a *kernels.Adam8, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	step, decay, isb2 := adamScalars(lr, wd, bc1, bc2)
	scratch := make([]float32, 2*a.Block)
	C.host_adamw8(fp(p), fp(g), bp(m), bp(v), fp(mAbs), fp(vAbs),
		fp(a.M.Values[:]), i32p(a.M.Bucket), fp(a.M.Bound), C.int(a.M.Zero),
		fp(a.V.Values[:]), i32p(a.V.Bucket), fp(a.V.Bound), C.int(a.V.Zero),
		C.long(len(p)), C.int(a.Block), C.float(step), C.float(decay), C.float(b1), C.float(b2), C.float(eps), C.float(isb2), fp(scratch))
}

func hostFakeQuantFP(y []float32, mask []uint8, x, scale []float32, group int, f kernels.FPFormat) {
	C.host_fq_fp(fp(y), bp(mask), fp(x), fp(scale), C.long(len(x)), C.int(group), C.int(f.Man), C.int(f.Bias), C.float(f.Max))
}

// hostQuantizeTokens quantizes n rows of k values into a (Tokens' layout).
func hostQuantizeTokens(a *Tokens, x []float32, n, k int, t kernels.TokenScheme) {
	a.resize(n, k)
	C.host_quantize_tokens(bp(a.U), fp(a.Scale), fp(a.Zero), i32p(a.Sum), fp(x), C.long(n), C.int(k), C.int(a.KP), b2i(t.Symmetric), C.float(qminOf(t)))
}

func hostGemmChannel(y []float32, w *Channel, a *Tokens) {
	C.host_gemm_channel(fp(y), bp(w.W), fp(w.Scale), i32p(w.Sum), bp(a.U), fp(a.Scale), fp(a.Zero), C.int(w.Rows), C.int(w.KP), C.int(a.N), C.int(w.Bits))
}

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func hostRMSNormFwd(y, rstd, x, w []float32, rows, d int, eps float32) {
	C.host_rmsnorm_fwd(fp(y), fp(rstd), fp(x), fp(w), C.long(rows), C.int(d), C.float(eps))
}

func hostRMSNormBwd(dx, dw, dy, x, w, rstd []float32, rows, d int) {
	C.host_rmsnorm_bwd(fp(dx), fp(dw), fp(dy), fp(x), fp(w), fp(rstd), C.long(rows), C.int(d))
}

func hostRoPE(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd int, sign float32, acc bool) {
	a := 0
	if acc {
		a = 1
	}
	C.host_rope(fp(y), fp(x), i32p(pos), fp(cos), fp(sin), C.long(rows), C.int(heads), C.int(hd), C.float(sign), C.int(a))
}

func hostSwiGLUFwd(y, g, u []float32) { C.host_swiglu_fwd(fp(y), fp(g), fp(u), C.long(len(y))) }

func hostSwiGLUBwd(dg, du, dy, g, u []float32) {
	C.host_swiglu_bwd(fp(dg), fp(du), fp(dy), fp(g), fp(u), C.long(len(dy)))
}

func hostCrossEntropy(x []float32, t []int32, dx, loss []float32, rows, n int, gscale float32) {
	C.host_cross_entropy(fp(x), i32p(t), fp(dx), fp(loss), C.long(rows), C.int(n), C.float(gscale))
}

func hostAdamW(p, g, m, v []float32, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	step, decay, isb2 := adamScalars(lr, wd, bc1, bc2)
	C.host_adamw(fp(p), fp(g), fp(m), fp(v), C.long(len(p)), C.float(step), C.float(decay), C.float(b1), C.float(b2), C.float(eps), C.float(isb2))
}

func hostDynScales(scale, zero, lo, hi []float32, ngroups int, kind int32, qmin, qmax, fmax float32) {
	C.host_dyn_scales(fp(scale), fp(zero), fp(lo), fp(hi), C.long(ngroups), C.int(kind), C.float(qmin), C.float(qmax), C.float(fmax))
}

func hostF16Bits(f float32) uint16 { return uint16(C.host_f16_bits(C.float(f))) }

func hostF16Float(h uint16) float32 { return float32(C.host_f16_float(C.uint16_t(h))) }
