//go:build gpu

package cuda

import (
	"fmt"

	"qat/kernels"
)

// The device twins of package kernels' CPU kernels: the same arguments
// with Buffers for slices and explicit sizes (int is a kernel's long,
// int32 its int). Launches are asynchronous; Sync or a Download waits.

const threads = 256

// elementwise grids: enough blocks to fill the GPU, grid-stride beyond.
func grid1(n int) int { return min((n+threads-1)/threads, 1<<16) }

// warp-per-group grids: 8 groups a block of 256 threads.
func gridWarps(groups int) int { return (groups*32 + threads - 1) / threads }

func checkGroups(op string, n, group int) error {
	if group <= 0 || n%group != 0 {
		return fmt.Errorf("cuda: %s: %d values in groups of %d", op, n, group)
	}
	return nil
}

// Copy is dst = src for n floats: the bandwidth yardstick.
func (d *Device) Copy(dst, src Buffer, n int) error {
	return d.launch("qat_copy", grid1(n), threads, 0, dst, src, n)
}

// AbsMaxGroups writes max |x| of each group of group values to out.
func (d *Device) AbsMaxGroups(out, x Buffer, n, group int) error {
	if err := checkGroups("AbsMaxGroups", n, group); err != nil {
		return err
	}
	return d.launch("qat_absmax_groups", gridWarps(n/group), threads, 0, out, x, n/group, int32(group))
}

// MinMaxGroups writes each group's minimum and maximum.
func (d *Device) MinMaxGroups(lo, hi, x Buffer, n, group int) error {
	if err := checkGroups("MinMaxGroups", n, group); err != nil {
		return err
	}
	return d.launch("qat_minmax_groups", gridWarps(n/group), threads, 0, lo, hi, x, n/group, int32(group))
}

// FakeQuantAffine is kernels.FakeQuantAffine on the device.
func (d *Device) FakeQuantAffine(y, mask, x, scale, zero Buffer, n, group int, qmin, qmax float32) error {
	if err := checkGroups("FakeQuantAffine", n, group); err != nil {
		return err
	}
	return d.launch("qat_fq_affine", grid1(n), threads, 0, y, mask, x, scale, zero, n, int32(group), qmin, qmax)
}

// FakeQuantLSQ is kernels.FakeQuantLSQ on the device.
func (d *Device) FakeQuantLSQ(y, mask, x, scale Buffer, n, group int, qn, qp float32) error {
	if err := checkGroups("FakeQuantLSQ", n, group); err != nil {
		return err
	}
	return d.launch("qat_fq_lsq", grid1(n), threads, 0, y, mask, x, scale, n, int32(group), qn, qp)
}

// MaskGrad is kernels.MaskGrad on the device: dx += dy where mask is set.
func (d *Device) MaskGrad(dx, dy, mask Buffer, n int) error {
	return d.launch("qat_mask_grad", grid1(n), threads, 0, dx, dy, mask, n)
}

// LSQGrad is kernels.LSQGrad on the device; dx may be the zero Buffer.
func (d *Device) LSQGrad(dx, ds, dy, x, scale Buffer, n, group int, qn, qp, gscale float32) error {
	if err := checkGroups("LSQGrad", n, group); err != nil {
		return err
	}
	return d.launch("qat_lsq_grad", gridWarps(n/group), threads, 0, dx, ds, dy, x, scale, n/group, int32(group), qn, qp, gscale)
}

// FakeQuantQ4_0 is kernels.FakeQuantQ4_0 on the device.
func (d *Device) FakeQuantQ4_0(y, mask, x Buffer, n int) error {
	if err := checkGroups("FakeQuantQ4_0", n, 32); err != nil {
		return err
	}
	return d.launch("qat_fq_q4_0", gridWarps(n/32), threads, 0, y, mask, x, n/32)
}

// FakeQuantQ8_0 is kernels.FakeQuantQ8_0 on the device.
func (d *Device) FakeQuantQ8_0(y, mask, x Buffer, n int) error {
	if err := checkGroups("FakeQuantQ8_0", n, 32); err != nil {
		return err
	}
	return d.launch("qat_fq_q8_0", gridWarps(n/32), threads, 0, y, mask, x, n/32)
}

// Q8 is activations quantized to Q8_0 blocks on the device, in Q8Host's
// layout: N columns of NB blocks.
type Q8 struct {
	D, C4, C8, Q Buffer
	N, NB        int
}

// NewQ8 allocates n columns of k values (k a multiple of 32).
func (d *Device) NewQ8(n, k int) (*Q8, error) {
	if k%32 != 0 {
		return nil, fmt.Errorf("cuda: Q8 columns of %d values: not a multiple of 32", k)
	}
	a := &Q8{N: n, NB: k / 32}
	nb := int64(n * a.NB)
	var err error
	for _, b := range []*Buffer{&a.D, &a.C4, &a.C8} {
		if *b, err = d.Alloc(4 * nb); err != nil {
			return nil, err
		}
	}
	if a.Q, err = d.Alloc(32 * nb); err != nil {
		return nil, err
	}
	return a, nil
}

// Free releases a's buffers.
func (a *Q8) Free(d *Device) {
	for _, b := range []Buffer{a.D, a.C4, a.C8, a.Q} {
		d.Free(b)
	}
}

// QuantizeQ8 is kernels.QuantizeQ8 on the device: x holds a.N columns of
// 32*a.NB values.
func (d *Device) QuantizeQ8(a *Q8, x Buffer) error {
	nb := a.N * a.NB
	return d.launch("qat_quantize_q8", gridWarps(nb), threads, 0, a.D, a.C4, a.C8, a.Q, x, nb)
}

// GemmPacked is kernels.GemmPacked on the device: y[c*rows + r] = sum_k
// W[r,k] x_c[k] for a Q4_0 or Q8_0 weight w (rows packed rows of k values)
// and the columns of a, one warp per output through dp4a.
func (d *Device) GemmPacked(f kernels.FormatID, y, w Buffer, rows, k int, a *Q8) error {
	if f != kernels.Q4_0 && f != kernels.Q8_0 {
		return fmt.Errorf("cuda: GemmPacked: format %s", f)
	}
	if k != 32*a.NB || w.Bytes < int64(rows*f.RowBytes(k)) || y.Bytes < int64(4*rows*a.N) {
		return fmt.Errorf("cuda: GemmPacked: %d x %d weight (%d bytes), %d columns of %d blocks, %d output bytes", rows, k, w.Bytes, a.N, a.NB, y.Bytes)
	}
	return d.launch("qat_gemm_packed", gridWarps(rows*a.N), threads, 0, y, w, a.D, a.C4, a.Q,
		int32(rows), int32(a.NB), int32(a.N), q4(f))
}

// Adam8 is kernels.Adam8's maps on the device.
type Adam8 struct {
	MVals, MBucket, MBound Buffer
	VVals, VBucket, VBound Buffer
	MZero, VZero           int32
	Block                  int
}

// UploadAdam8 copies a's maps and lookup tables to the device.
func (d *Device) UploadAdam8(a *kernels.Adam8) (*Adam8, error) {
	if a.Block < 1 || a.Block > kernels.MaxBlock8 {
		return nil, fmt.Errorf("cuda: Adam8 block %d outside 1..%d", a.Block, kernels.MaxBlock8)
	}
	g := &Adam8{MZero: int32(a.M.Zero), VZero: int32(a.V.Zero), Block: a.Block}
	var err error
	up := func(dst *Buffer, f func() (Buffer, error)) {
		if err == nil {
			*dst, err = f()
		}
	}
	up(&g.MVals, func() (Buffer, error) { return Upload(d, a.M.Values[:]) })
	up(&g.MBucket, func() (Buffer, error) { return Upload(d, a.M.Bucket) })
	up(&g.MBound, func() (Buffer, error) { return Upload(d, a.M.Bound) })
	up(&g.VVals, func() (Buffer, error) { return Upload(d, a.V.Values[:]) })
	up(&g.VBucket, func() (Buffer, error) { return Upload(d, a.V.Bucket) })
	up(&g.VBound, func() (Buffer, error) { return Upload(d, a.V.Bound) })
	return g, err
}

// AdamW8 is kernels.AdamW8 on the device for n parameters: one thread
// block per state block.
func (d *Device) AdamW8(p, g, m, v, mAbs, vAbs Buffer, n int, a *Adam8, lr, b1, b2, eps, wd, bc1, bc2 float32) error {
	step, decay, isb2 := adamScalars(lr, wd, bc1, bc2)
	block := min((a.Block+31)/32*32, 1024)
	shared := 4 * (2*a.Block + 64)
	return d.launch("qat_adamw8", kernels.Blocks(n, a.Block), block, shared,
		p, g, m, v, mAbs, vAbs, a.MVals, a.MBucket, a.MBound, a.MZero, a.VVals, a.VBucket, a.VBound, a.VZero,
		n, int32(a.Block), step, decay, b1, b2, eps, isb2)
}

// FakeQuantFP is kernels.FakeQuantFP on the device.
func (d *Device) FakeQuantFP(y, mask, x, scale Buffer, n, group int, f kernels.FPFormat) error {
	if err := checkGroups("FakeQuantFP", n, group); err != nil {
		return err
	}
	return d.launch("qat_fq_fp", grid1(n), threads, 0, y, mask, x, scale, n, int32(group), int32(f.Man), int32(f.Bias), f.Max)
}

// ChannelDev is a Channel weight on the device.
type ChannelDev struct {
	W, Scale, Sum     Buffer
	Bits, Rows, K, KP int
}

// UploadChannel copies a per-channel weight in the device layout.
func (d *Device) UploadChannel(c *Channel) (*ChannelDev, error) {
	g := &ChannelDev{Bits: c.Bits, Rows: c.Rows, K: c.K, KP: c.KP}
	var err error
	if g.W, err = Upload(d, c.W); err != nil {
		return nil, err
	}
	if g.Scale, err = Upload(d, c.Scale); err != nil {
		return nil, err
	}
	if g.Sum, err = Upload(d, c.Sum); err != nil {
		return nil, err
	}
	return g, nil
}

// TokensDev is activations quantized per token on the device (Tokens'
// layout).
type TokensDev struct {
	U, Scale, Zero, Sum Buffer
	N, K, KP            int
}

// NewTokens allocates n rows of k values.
func (d *Device) NewTokens(n, k int) (*TokensDev, error) {
	a := &TokensDev{N: n, K: k, KP: (k + 31) / 32 * 32}
	var err error
	for _, b := range []struct {
		p     *Buffer
		bytes int
	}{{&a.U, n * a.KP}, {&a.Scale, 4 * n}, {&a.Zero, 4 * n}, {&a.Sum, 4 * n}} {
		if *b.p, err = d.Alloc(int64(b.bytes)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// QuantizeTokens is kernels.TokenScheme.Quantize on the device: x holds
// a.N rows of a.K values.
func (d *Device) QuantizeTokens(a *TokensDev, x Buffer, t kernels.TokenScheme) error {
	sym := int32(0)
	if t.Symmetric {
		sym = 1
	}
	return d.launch("qat_quantize_tokens", gridWarps(a.N), threads, 0, a.U, a.Scale, a.Zero, a.Sum, x, a.N, int32(a.K), int32(a.KP), sym, qminOf(t))
}

// GemmChannel is kernels.GemmChannel on the device: y[c*Rows + r] =
// s_w[r] s_x[c] sum_k w[r,k] (u_c[k] - z_c), exact integer dot products
// through dp4a, one warp per output.
func (d *Device) GemmChannel(y Buffer, w *ChannelDev, a *TokensDev) error {
	if a.K != w.K || y.Bytes < int64(4*a.N*w.Rows) {
		return fmt.Errorf("cuda: GemmChannel: %d x %d weight, %d tokens of %d, %d output bytes", w.Rows, w.K, a.N, a.K, y.Bytes)
	}
	return d.launch("qat_gemm_channel", gridWarps(w.Rows*a.N), threads, 0, y, w.W, w.Scale, w.Sum, a.U, a.Scale, a.Zero,
		int32(w.Rows), int32(w.KP), int32(a.N), int32(w.Bits))
}

// Masks allocates room for n mask bytes (Host's method set: a mask is a
// float buffer read as bytes).
func (d *Device) Masks(n int) (Buffer, error) { return d.Floats((n + 3) / 4) }

// DynamicScales computes the minmax scale and zero point of each group of
// x's n values (qat.Spec's dynamic scales; kind ScaleSym, ScaleAsym or
// ScaleFP); lo is scratch for the asymmetric ranges.
func (d *Device) DynamicScales(scale, zero, lo, x Buffer, n, group int, kind int32, qmin, qmax, fmax float32) error {
	var err error
	if kind == ScaleAsym {
		err = d.MinMaxGroups(lo, scale, x, n, group)
	} else {
		err = d.AbsMaxGroups(scale, x, n, group)
	}
	if err != nil {
		return err
	}
	return d.launch("qat_dyn_scales", grid1(n/group), threads, 0, scale, zero, lo, scale, n/group, kind, qmin, qmax, fmax)
}
