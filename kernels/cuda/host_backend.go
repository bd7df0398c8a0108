//go:build cgo

package cuda

import (
	"unsafe"

	"qat/kernels"
)

// Host runs the training kernels' arithmetic (train.h, the host build) on
// the CPU, with buffers that are plain slices; products and attention are
// package kernels' (kernels.Sgemm, kernels.Attn). It has Device's methods,
// so code written against both (the Llama step of layers/device) is
// checked on any machine, and on a GPU differs only in the kernels' thread
// mapping, which the device tests check op by op.
type Host struct{}

// Floats returns n zeros.
func (Host) Floats(n int) ([]float32, error) { return make([]float32, n), nil }

// Ints returns n zeros.
func (Host) Ints(n int) ([]int32, error) { return make([]int32, n), nil }

// WriteFloats copies src into dst.
func (Host) WriteFloats(dst, src []float32) error { copy(dst, src); return nil }

// WriteInts copies src into dst.
func (Host) WriteInts(dst, src []int32) error { copy(dst, src); return nil }

// ReadFloats copies src into dst.
func (Host) ReadFloats(dst, src []float32) error { copy(dst, src); return nil }

// Zero clears n values of b.
func (Host) Zero(b []float32, n int) error { clear(b[:n]); return nil }

// Copy copies n values.
func (Host) Copy(dst, src []float32, n int) error { copy(dst[:n], src[:n]); return nil }

// Sgemm is kernels.Sgemm.
func (Host) Sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) error {
	if m > 0 && n > 0 {
		kernels.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	}
	return nil
}

// RMSNormFwd is the host build of qat_rmsnorm_fwd.
func (Host) RMSNormFwd(y, rstd, x, w []float32, rows, dim int, eps float32) error {
	hostRMSNormFwd(y, rstd, x, w, rows, dim, eps)
	return nil
}

// RMSNormBwd is the host build of qat_rmsnorm_dx and qat_rmsnorm_dw.
func (Host) RMSNormBwd(dx, dw, dy, x, w, rstd []float32, rows, dim int) error {
	hostRMSNormBwd(dx, dw, dy, x, w, rstd, rows, dim)
	return nil
}

// RoPE is the host build of qat_rope.
func (Host) RoPE(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd int, sign float32, acc bool) error {
	hostRoPE(y, x, pos, cos, sin, rows, heads, hd, sign, acc)
	return nil
}

// SwiGLUFwd is the host build of qat_swiglu_fwd.
func (Host) SwiGLUFwd(y, g, u []float32, n int) error { hostSwiGLUFwd(y[:n], g, u); return nil }

// SwiGLUBwd is the host build of qat_swiglu_bwd.
func (Host) SwiGLUBwd(dg, du, dy, g, u []float32, n int) error {
	hostSwiGLUBwd(dg, du, dy[:n], g, u)
	return nil
}

// CrossEntropy is the host build of qat_cross_entropy.
func (Host) CrossEntropy(x []float32, t []int32, dx, loss []float32, rows, n int, gscale float32) error {
	hostCrossEntropy(x, t, dx, loss, rows, n, gscale)
	return nil
}

// Add is y = a + b.
func (Host) Add(y, a, b []float32, n int) error {
	for i := range y[:n] {
		y[i] = a[i] + b[i]
	}
	return nil
}

// EmbeddingFwd gathers rows.
func (Host) EmbeddingFwd(y, w []float32, ids []int32, rows, dim int) error {
	for r, id := range ids[:rows] {
		copy(y[r*dim:(r+1)*dim], w[int(id)*dim:])
	}
	return nil
}

// EmbeddingBwd scatter-adds rows in order.
func (Host) EmbeddingBwd(dw, dy []float32, ids []int32, rows, dim int) error {
	for r, id := range ids[:rows] {
		row := dw[int(id)*dim : (int(id)+1)*dim]
		for j := range row {
			row[j] += dy[r*dim+j]
		}
	}
	return nil
}

// AttnForward is kernels.Attn's forward; lse is not needed on the host
// (its backward recomputes everything).
func (Host) AttnForward(a Attn, out, lse, q, k, v []float32) error {
	c := a.cpu()
	c.Forward(out, q, k, v, make([]float32, c.ForwardScratch()))
	return nil
}

// AttnBackward is kernels.Attn's backward.
func (Host) AttnBackward(a Attn, dQ, dK, dV, dout, out, lse, delta, q, k, v []float32, fq, fk, fv bool) error {
	c := a.cpu()
	c.Backward(dQ, dK, dV, dout, q, k, v, make([]float32, c.BackwardScratch()), fq, fk, fv)
	return nil
}

// Masks returns room for n mask bytes: the backends have one buffer type,
// and a mask is a float buffer of n/4 values read as bytes.
func (Host) Masks(n int) ([]float32, error) { return make([]float32, (n+3)/4), nil }

func maskBytes(m []float32, n int) []uint8 {
	return unsafe.Slice((*uint8)(unsafe.Pointer(&m[0])), 4*len(m))[:n]
}

// DynamicScales computes the minmax scale and zero point of each group of
// x's first n values (qat.Spec's dynamic scales; kind ScaleSym, ScaleAsym
// or ScaleFP); lo is scratch for the asymmetric ranges.
func (Host) DynamicScales(scale, zero, lo, x []float32, n, group int, kind int32, qmin, qmax, fmax float32) error {
	ng := n / group
	if kind == ScaleAsym {
		kernels.MinMaxGroups(lo[:ng], scale[:ng], x[:n], group)
	} else {
		kernels.AbsMaxGroups(scale[:ng], x[:n], group)
	}
	hostDynScales(scale, zero, lo, scale, ng, kind, qmin, qmax, fmax)
	return nil
}

// FakeQuantAffine is the host build of qat_fq_affine.
func (Host) FakeQuantAffine(y, mask, x, scale, zero []float32, n, group int, qmin, qmax float32) error {
	hostFakeQuantAffine(y[:n], maskBytes(mask, n), x[:n], scale, zero, group, qmin, qmax)
	return nil
}

// FakeQuantFP is the host build of qat_fq_fp.
func (Host) FakeQuantFP(y, mask, x, scale []float32, n, group int, f kernels.FPFormat) error {
	hostFakeQuantFP(y[:n], maskBytes(mask, n), x[:n], scale, group, f)
	return nil
}

// FakeQuantQ4_0 is the host build of qat_fq_q4_0.
func (Host) FakeQuantQ4_0(y, mask, x []float32, n int) error {
	hostFakeQuantQ4_0(y[:n], maskBytes(mask, n), x[:n])
	return nil
}

// FakeQuantQ8_0 is the host build of qat_fq_q8_0.
func (Host) FakeQuantQ8_0(y, mask, x []float32, n int) error {
	hostFakeQuantQ8_0(y[:n], maskBytes(mask, n), x[:n])
	return nil
}

// MaskGrad is dx += dy where mask is set.
func (Host) MaskGrad(dx, dy, mask []float32, n int) error {
	kernels.MaskGrad(dx[:n], dy[:n], maskBytes(mask, n))
	return nil
}

// FakeQuantLSQ is the host build of qat_fq_lsq.
func (Host) FakeQuantLSQ(y, mask, x, step []float32, n, group int, qn, qp float32) error {
	hostFakeQuantLSQ(y[:n], maskBytes(mask, n), x[:n], step, group, qn, qp)
	return nil
}

// LSQGrad is the host build of qat_lsq_grad (dx may be nil).
func (Host) LSQGrad(dx, dstep, dy, x, step []float32, n, group int, qn, qp, gscale float32) error {
	if dx != nil {
		dx = dx[:n]
	}
	hostLSQGrad(dx, dstep, dy[:n], x[:n], step, group, qn, qp, gscale)
	return nil
}
