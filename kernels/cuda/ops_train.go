//go:build gpu

package cuda

import (
	"fmt"

	"gorgonia.org/cu"
)

// The training kernels (train.h): device twins of kernels.Generic's
// RMSNorm, RoPE, SwiGLU, cross-entropy, AdamW, Add, Axpy and the embedding
// gather and scatter.

// RMSNormFwd: y = x * rstd * w per row of d, rstd = 1/sqrt(mean(x^2)+eps).
func (d *Device) RMSNormFwd(y, rstd, x, w Buffer, rows, dim int, eps float32) error {
	return d.launch("qat_rmsnorm_fwd", gridWarps(rows), threads, 0, y, rstd, x, w, rows, int32(dim), eps)
}

// RMSNormBwd: dx += rstd*(w*dy - xhat*mean(w*dy*xhat)), dw += sum over
// rows of dy*xhat.
func (d *Device) RMSNormBwd(dx, dw, dy, x, w, rstd Buffer, rows, dim int) error {
	if err := d.launch("qat_rmsnorm_dx", gridWarps(rows), threads, 0, dx, dy, x, w, rstd, rows, int32(dim)); err != nil {
		return err
	}
	return d.launch("qat_rmsnorm_dw", (dim+threads-1)/threads, threads, 0, dw, dy, x, rstd, rows, int32(dim))
}

// RoPE rotates pairs (j, j+hd/2) of each head of x (rows, heads, hd) by
// the angles of row r's position pos[r] (tables cos, sin of maxpos x
// hd/2); sign -1 rotates back (the backward); acc adds into y.
func (d *Device) RoPE(y, x, pos, cos, sin Buffer, rows, heads, hd int, sign float32, acc bool) error {
	a := int32(0)
	if acc {
		a = 1
	}
	return d.launch("qat_rope", grid1(rows*heads*hd/2), threads, 0, y, x, pos, cos, sin, rows, int32(heads), int32(hd), sign, a)
}

// SwiGLUFwd: y = silu(g) * u over n values.
func (d *Device) SwiGLUFwd(y, g, u Buffer, n int) error {
	return d.launch("qat_swiglu_fwd", grid1(n), threads, 0, y, g, u, n)
}

// SwiGLUBwd: dg += dy*u*s*(1+g*(1-s)), du += dy*silu(g).
func (d *Device) SwiGLUBwd(dg, du, dy, g, u Buffer, n int) error {
	return d.launch("qat_swiglu_bwd", grid1(n), threads, 0, dg, du, dy, g, u, n)
}

// CrossEntropy: loss[r] = logsumexp(x[r]) - x[r][t[r]], dx[r] =
// gscale*(softmax(x[r]) - onehot(t[r])); a negative target is ignored.
func (d *Device) CrossEntropy(x, t, dx, loss Buffer, rows, n int, gscale float32) error {
	return d.launch("qat_cross_entropy", rows, threads, 0, x, t, dx, loss, rows, int32(n), gscale)
}

// AdamW is one step of PyTorch's AdamW over n values (kernels' fp32 form).
func (d *Device) AdamW(p, g, m, v Buffer, n int, lr, b1, b2, eps, wd, bc1, bc2 float32) error {
	step, decay, isb2 := adamScalars(lr, wd, bc1, bc2)
	return d.launch("qat_adamw", grid1(n), threads, 0, p, g, m, v, n, step, decay, b1, b2, eps, isb2)
}

// Add: y = a + b over n values.
func (d *Device) Add(y, a, b Buffer, n int) error {
	return d.launch("qat_add", grid1(n), threads, 0, y, a, b, n)
}

// Axpy: y += a*x over n values.
func (d *Device) Axpy(y, x Buffer, a float32, n int) error {
	return d.launch("qat_axpy", grid1(n), threads, 0, y, x, a, n)
}

// EmbeddingFwd gathers rows ids of the table w (dim wide) into y.
func (d *Device) EmbeddingFwd(y, w, ids Buffer, rows, dim int) error {
	return d.launch("qat_embedding_fwd", grid1(rows*dim), threads, 0, y, w, ids, rows, int32(dim))
}

// EmbeddingBwd scatter-adds the rows of dy into dw at ids, in row order.
func (d *Device) EmbeddingBwd(dw, dy, ids Buffer, rows, dim int) error {
	return d.launch("qat_embedding_bwd", (dim+threads-1)/threads, threads, 0, dw, dy, ids, rows, int32(dim))
}

// Sgemm is C = alpha op(A) op(B) + beta C on the device, with
// kernels.Sgemm's row-major arguments.
func (d *Device) Sgemm(tA, tB bool, m, n, k int, alpha float32, a Buffer, lda int, b Buffer, ldb int, beta float32, c Buffer, ldc int) error {
	if m == 0 || n == 0 {
		return nil
	}
	return d.launchGrid("qat_sgemm", (n+63)/64, (m+63)/64, threads, 0,
		b2i32(tA), b2i32(tB), int32(m), int32(n), int32(k), alpha, a, int32(lda), b, int32(ldb), beta, c, int32(ldc))
}

func b2i32(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

func (a Attn) check() error {
	if a.HeadDim > 128 || a.T > 1024 || a.KVHeads < 1 || a.Heads%a.KVHeads != 0 {
		return fmt.Errorf("cuda: attention with %d heads, %d kv heads, head dim %d, %d tokens: the device kernels take head dim <= 128 and T <= 1024", a.Heads, a.KVHeads, a.HeadDim, a.T)
	}
	return nil
}

// Forward writes out and each query row's log-sum-exp lse (B*Heads*T),
// which Backward needs.
func (a Attn) Forward(d *Device, out, lse, q, k, v Buffer) error {
	if err := a.check(); err != nil {
		return err
	}
	rows := a.B * a.Heads * a.T
	return d.launch("qat_attn_fwd", gridWarps(rows), threads, 4*(threads/32)*a.T, out, lse, q, k, v,
		int32(a.B), int32(a.T), int32(a.Heads), int32(a.KVHeads), int32(a.HeadDim), a.Scale)
}

// Backward computes dQ, dK and dV from dout, the forward's out and lse;
// delta is scratch of B*Heads*T floats. Each gradient is written when its
// flag is set and added to otherwise, as kernels.Attn.Backward does.
func (a Attn) Backward(d *Device, dQ, dK, dV, dout, out, lse, delta, q, k, v Buffer, fq, fk, fv bool) error {
	if err := a.check(); err != nil {
		return err
	}
	rows := a.B * a.Heads * a.T
	dims := []any{int32(a.B), int32(a.T), int32(a.Heads), int32(a.KVHeads), int32(a.HeadDim), a.Scale}
	if err := d.launch("qat_attn_delta", gridWarps(rows), threads, 0, delta, dout, out, int32(a.B), int32(a.T), int32(a.Heads), int32(a.HeadDim)); err != nil {
		return err
	}
	if err := d.launch("qat_attn_dq", gridWarps(rows), threads, 0, append([]any{dQ, dout, q, k, v, lse, delta}, append(dims, 1-b2i32(fq))...)...); err != nil {
		return err
	}
	return d.launch("qat_attn_dkv", gridWarps(a.B*a.KVHeads*a.T), threads, 0,
		append([]any{dK, dV, dout, q, k, v, lse, delta}, append(dims, 1-b2i32(fk), 1-b2i32(fv))...)...)
}

// AttnForward is a.Forward on d (Host's method set).
func (d *Device) AttnForward(a Attn, out, lse, q, k, v Buffer) error {
	return a.Forward(d, out, lse, q, k, v)
}

// AttnBackward is a.Backward on d (Host's method set).
func (d *Device) AttnBackward(a Attn, dQ, dK, dV, dout, out, lse, delta, q, k, v Buffer, fq, fk, fv bool) error {
	return a.Backward(d, dQ, dK, dV, dout, out, lse, delta, q, k, v, fq, fk, fv)
}

// Floats allocates n zeroed floats.
func (d *Device) Floats(n int) (Buffer, error) {
	b, err := d.Alloc(int64(4 * n))
	if err != nil {
		return b, err
	}
	return b, d.Zero(b, n)
}

// Ints allocates n zeroed int32s.
func (d *Device) Ints(n int) (Buffer, error) { return d.Floats(n) }

// WriteFloats copies src to the start of dst.
func (d *Device) WriteFloats(dst Buffer, src []float32) error { return write(d, dst, src) }

// WriteInts copies src to the start of dst.
func (d *Device) WriteInts(dst Buffer, src []int32) error { return write(d, dst, src) }

// ReadFloats copies the start of src into dst.
func (d *Device) ReadFloats(dst []float32, src Buffer) error { return Download(d, dst, src) }

// Zero clears n floats of b.
func (d *Device) Zero(b Buffer, n int) error {
	if n == 0 {
		return nil
	}
	return d.on("cuMemsetD32", func() error { return cu.MemsetD32(b.Ptr, 0, int64(n)) })
}
