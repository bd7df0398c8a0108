//go:build gpu

package cuda

import (
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"qat/kernels"
)

// Bench measures the kernels on d beside a device copy of the same size
// (the bandwidth a memory-bound kernel can reach) and writes a table: per
// kernel the bytes it moves per call, its time, GB/s and its share of the
// copy's GB/s; the packed products also in integer GOP/s. n is the number
// of values of the elementwise cases (64M is well past any cache).
func Bench(d *Device, w io.Writer, n int) error {
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	var bufs []Buffer
	var err error
	alloc := func(bytes int) Buffer {
		if err != nil {
			return Buffer{}
		}
		var b Buffer
		b, err = d.Alloc(int64(bytes))
		bufs = append(bufs, b)
		return b
	}
	defer func() {
		for _, b := range bufs {
			d.Free(b)
		}
	}()
	xb, err := Upload(d, x)
	if err != nil {
		return err
	}
	bufs = append(bufs, xb)
	yb, mb, db := alloc(4*n), alloc(n), alloc(4*n)
	rows := 4096
	steps := make([]float32, rows)
	for i := range steps {
		steps[i] = 0.4 // about 2.5 sigma / 7 levels
	}
	dsb := alloc(4 * rows)
	if err != nil {
		return err
	}
	sb, err := Upload(d, steps)
	if err != nil {
		return err
	}
	zb, err := Upload(d, make([]float32, rows))
	if err != nil {
		return err
	}
	bufs = append(bufs, sb, zb)

	type row struct {
		name  string
		bytes float64
		ops   float64
		run   func() error
	}
	cases := []row{
		{"copy (yardstick)", 8 * float64(n), 0, func() error { return d.Copy(yb, xb, n) }},
		{"fake quant int4 per channel (y, mask)", 9 * float64(n), 0, func() error { return d.FakeQuantAffine(yb, mb, xb, sb, zb, n, n/rows, -8, 7) }},
		{"LSQ forward int4 per channel", 9 * float64(n), 0, func() error { return d.FakeQuantLSQ(yb, mb, xb, sb, n, n/rows, 8, 7) }},
		{"LSQ backward (dx, ds)", 16 * float64(n), 0, func() error { return d.LSQGrad(db, dsb, yb, xb, sb, n, n/rows, 8, 7, 1e-3) }},
		{"STE backward (mask)", 13 * float64(n), 0, func() error { return d.MaskGrad(db, yb, mb, n) }},
		{"fake quant Q4_0", 9 * float64(n), 0, func() error { return d.FakeQuantQ4_0(yb, mb, xb, n) }},
		{"fake quant Q8_0", 9 * float64(n), 0, func() error { return d.FakeQuantQ8_0(yb, mb, xb, n) }},
	}
	// 8-bit AdamW: p read and written, g read, two 8-bit moments read and
	// written: 14 bytes a parameter (the absmax is 2 floats a block)
	a8 := &kernels.Adam8{M: kernels.DynamicMap(true), V: kernels.DynamicMap(false), Block: 256}
	ga, err := d.UploadAdam8(a8)
	if err != nil {
		return err
	}
	mcodes, vcodes := alloc(n), alloc(n)
	nb := kernels.Blocks(n, 256)
	mab, vab := alloc(4*nb), alloc(4*nb)
	if err != nil {
		return err
	}
	cases = append(cases, row{"fake quant FP8 E4M3 per channel", 9 * float64(n), 0, func() error {
		return d.FakeQuantFP(yb, mb, xb, sb, n, n/rows, kernels.FP8E4M3.FP())
	}})
	cases = append(cases, row{"AdamW 8-bit states", 14 * float64(n), 0, func() error {
		return d.AdamW8(db, yb, mcodes, vcodes, mab, vab, n, ga, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1, 1)
	}})
	// packed products, 4096 x 4096 weights: decode (one column) is a read
	// of the weights; prefill (256 columns) is integer arithmetic
	for _, f := range []kernels.FormatID{kernels.Q4_0, kernels.Q8_0} {
		k := 4096
		wbytes := rows * f.RowBytes(k)
		wq := make([]byte, wbytes)
		for r := 0; r < rows; r++ {
			f.Pack(wq[r*f.RowBytes(k):], x[r*k:(r+1)*k])
		}
		wb, err := Upload(d, wq)
		if err != nil {
			return err
		}
		bufs = append(bufs, wb)
		for _, cols := range []int{1, 256} {
			a, err := d.NewQ8(cols, k)
			if err != nil {
				return err
			}
			defer a.Free(d)
			if err := d.QuantizeQ8(a, xb); err != nil {
				return err
			}
			f, cols, a := f, cols, a
			cases = append(cases, row{fmt.Sprintf("GEMM %s x Q8_0 %dx%d, %d columns", f, rows, k, cols),
				float64(wbytes + cols*k*33/32), 2 * float64(rows*k*cols), func() error { return d.GemmPacked(f, yb, wb, rows, k, a) }})
		}
	}
	// per-channel int4/int8 weights x per-token int8 activations (W4A8,
	// W8A8: QQQ's per-channel layout), the same shapes
	for _, bits := range []int{4, 8} {
		k := 4096
		codes := make([]int8, rows*k)
		for i := range codes {
			codes[i] = int8(rng.IntN(16) - 8)
		}
		ci, err := kernels.NewChannelInt(bits, codes, steps, rows, k)
		if err != nil {
			return err
		}
		wd, err := d.UploadChannel(NewChannel(ci))
		if err != nil {
			return err
		}
		bufs = append(bufs, wd.W, wd.Scale, wd.Sum)
		for _, cols := range []int{1, 256} {
			a, err := d.NewTokens(cols, k)
			if err != nil {
				return err
			}
			bufs = append(bufs, a.U, a.Scale, a.Zero, a.Sum)
			if err := d.QuantizeTokens(a, xb, kernels.TokenScheme{Symmetric: true, Restricted: true}); err != nil {
				return err
			}
			bits, cols, a := bits, cols, a
			cases = append(cases, row{fmt.Sprintf("GEMM W%dA8 per channel %dx%d, %d columns", bits, rows, k, cols),
				float64(rows*k*bits/8 + cols*k), 2 * float64(rows*k*cols), func() error { return d.GemmChannel(yb, wd, a) }})
		}
	}
	fmt.Fprintf(w, "device: %s; %d values (%.0f MiB of float32) for the elementwise kernels\n", d.Name, n, float64(4*n)/(1<<20))
	fmt.Fprintf(w, "%-44s %10s %10s %9s %9s %10s\n", "kernel", "MB/call", "us/call", "GB/s", "of copy", "GOP/s")
	var copyGBs float64
	for _, c := range cases {
		var runErr error
		res := testing.Benchmark(func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if runErr = c.run(); runErr != nil {
					b.Fatal(runErr)
				}
			}
			if runErr = d.Sync(); runErr != nil {
				b.Fatal(runErr)
			}
		})
		if runErr != nil {
			return fmt.Errorf("%s: %w", c.name, runErr)
		}
		sec := float64(res.T.Nanoseconds()) / 1e9 / float64(res.N)
		gbs := c.bytes / sec / 1e9
		if copyGBs == 0 {
			copyGBs = gbs
		}
		ops := ""
		if c.ops > 0 {
			ops = fmt.Sprintf("%.0f", c.ops/sec/1e9)
		}
		fmt.Fprintf(w, "%-44s %10.1f %10.1f %9.0f %8.0f%% %10s\n", c.name, c.bytes/1e6, sec*1e6, gbs, 100*gbs/copyGBs, ops)
	}
	return nil
}
