//go:build gpu

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"qat/kernels"
)

// The device against the host build (the same float operations: bit for
// bit, sums in double within their order's rounding) and through it
// against package kernels. Run on a GPU: `make cuda-test` builds the test
// binary and prints how to run it on the lent machine.

var dev *Device

func TestMain(m *testing.M) {
	var err error
	if dev, err = Open(0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "device: %s, %.1f GiB\n", dev.Name, float64(dev.Mem)/(1<<30))
	code := m.Run()
	dev.Close()
	os.Exit(code)
}

func up[T any](t testing.TB, s []T) Buffer {
	t.Helper()
	b, err := Upload(dev, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Free(b) })
	return b
}

func down[T any](t testing.TB, dst []T, b Buffer) []T {
	t.Helper()
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := Download(dev, dst, b); err != nil {
		t.Fatal(err)
	}
	return dst
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeviceGroups(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, sh := range shapes {
		ng, g := sh[0], sh[1]
		n := ng * g
		x := testValues(rng, n, 0.1)
		for i := range x {
			if x[i] == 0 { // the C kernels of package kernels may order -0 and +0 either way
				x[i] = 1e-3
			}
		}
		xb, out, lo, hi := up(t, x), up(t, make([]float32, ng)), up(t, make([]float32, ng)), up(t, make([]float32, ng))
		must(t, dev.AbsMaxGroups(out, xb, n, g))
		must(t, dev.MinMaxGroups(lo, hi, xb, n, g))
		want, wl, wh := make([]float32, ng), make([]float32, ng), make([]float32, ng)
		kernels.AbsMaxGroups(want, x, g)
		kernels.MinMaxGroups(wl, wh, x, g)
		sameBits(t, "absmax", down(t, make([]float32, ng), out), want)
		sameBits(t, "min", down(t, make([]float32, ng), lo), wl)
		sameBits(t, "max", down(t, make([]float32, ng), hi), wh)
	}
}

func TestDeviceFakeQuant(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for _, sh := range shapes {
		ng, g := sh[0], sh[1]
		n := ng * g
		x := testValues(rng, n, 0.0625)
		scale, zero := make([]float32, ng), make([]float32, ng)
		for k := range scale {
			scale[k] = 0.0625 * float32(1+rng.IntN(3))
			zero[k] = float32(rng.IntN(16))
		}
		xb, sb, zb := up(t, x), up(t, scale), up(t, zero)
		yb, mb := up(t, make([]float32, n)), up(t, make([]uint8, n))
		y, m := make([]float32, n), make([]uint8, n)

		// affine, asymmetric int4
		must(t, dev.FakeQuantAffine(yb, mb, xb, sb, zb, n, g, 0, 15))
		hostFakeQuantAffine(y, m, x, scale, zero, g, 0, 15)
		sameBits(t, "affine y", down(t, make([]float32, n), yb), y)
		sameBytes(t, "affine mask", down(t, make([]uint8, n), mb), m)

		// LSQ forward and backward
		must(t, dev.FakeQuantLSQ(yb, mb, xb, sb, n, g, 8, 7))
		hostFakeQuantLSQ(y, m, x, scale, g, 8, 7)
		sameBits(t, "lsq y", down(t, make([]float32, n), yb), y)
		sameBytes(t, "lsq mask", down(t, make([]uint8, n), mb), m)
		dy, dx := testValues(rng, n, 1), testValues(rng, n, 1)
		ds := make([]float32, ng)
		dyb, dxb, dsb := up(t, dy), up(t, dx), up(t, ds)
		gs := float32(1 / math.Sqrt(float64(g)*7))
		must(t, dev.LSQGrad(dxb, dsb, dyb, xb, sb, n, g, 8, 7, gs))
		hostLSQGrad(dx, ds, dy, x, scale, g, 8, 7, gs)
		sameBits(t, "lsq dx", down(t, make([]float32, n), dxb), dx)
		gotDs := down(t, make([]float32, ng), dsb)
		for k := range ds { // a sum in double, in another order
			if math.Abs(float64(gotDs[k]-ds[k])) > 1e-6*(1+math.Abs(float64(ds[k]))) {
				t.Fatalf("lsq ds[%d]: device %g, host %g", k, gotDs[k], ds[k])
			}
		}

		// the straight-through backward
		must(t, dev.MaskGrad(dxb, dyb, mb, n))
		kernels.MaskGrad(dx, dy, m)
		sameBits(t, "mask grad", down(t, make([]float32, n), dxb), dx)
	}
}

func TestDeviceBlockGrids(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	for _, nb := range []int{4, 5, 33, 300, 4097} {
		x := blocks(rng, nb)
		n := len(x)
		xb, yb, mb := up(t, x), up(t, make([]float32, n)), up(t, make([]uint8, n))
		y, m := make([]float32, n), make([]uint8, n)
		// the host build (checked against package kernels everywhere)
		must(t, dev.FakeQuantQ4_0(yb, mb, xb, n))
		hostFakeQuantQ4_0(y, m, x)
		sameBits(t, "q4_0 y", down(t, make([]float32, n), yb), y)
		sameBytes(t, "q4_0 mask", down(t, make([]uint8, n), mb), m)
		must(t, dev.FakeQuantQ8_0(yb, mb, xb, n))
		hostFakeQuantQ8_0(y, m, x)
		sameBits(t, "q8_0 y", down(t, make([]float32, n), yb), y)
		sameBytes(t, "q8_0 mask", down(t, make([]uint8, n), mb), m)
	}
}

func TestDevicePacked(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 28))
	for _, f := range []kernels.FormatID{kernels.Q4_0, kernels.Q8_0} {
		for _, sh := range [][3]int{{1, 32, 1}, {7, 96, 3}, {33, 320, 8}, {64, 4096, 1}, {256, 2048, 17}} {
			rows, k, ncols := sh[0], sh[1], sh[2]
			nb := k / 32
			w := packedRows(rng, f, rows, k)
			x := blocks(rng, ncols*nb)
			h := NewQ8Host(ncols * nb)
			hostQuantizeQ8(h, x)
			a, err := dev.NewQ8(ncols, k)
			must(t, err)
			defer a.Free(dev)
			must(t, dev.QuantizeQ8(a, up(t, x)))
			sameBits(t, "dx", down(t, make([]float32, ncols*nb), a.D), h.D)
			sameBits(t, "c4", down(t, make([]float32, ncols*nb), a.C4), h.C4)
			sameBits(t, "c8", down(t, make([]float32, ncols*nb), a.C8), h.C8)
			sameBytes(t, "q", down(t, make([]int8, ncols*k), a.Q), h.Q)

			yb := up(t, make([]float32, rows*ncols))
			must(t, dev.GemmPacked(f, yb, up(t, w), rows, k, a))
			got := down(t, make([]float32, rows*ncols), yb)
			want := make([]float32, rows*ncols)
			hostGemmPacked(f, want, w, rows, nb, h)
			// the same float32 terms summed in double in another order
			for i := range want {
				if math.Abs(float64(got[i]-want[i])) > 1e-6*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("%s %v y[%d]: device %g, host %g", f, sh, i, got[i], want[i])
				}
			}
		}
	}
}

func TestDeviceAdamW8(t *testing.T) {
	rng := rand.New(rand.NewPCG(29, 30))
	for _, block := range []int{256, 2048} {
		a := &kernels.Adam8{M: kernels.DynamicMap(true), V: kernels.DynamicMap(false), Block: block}
		ga, err := dev.UploadAdam8(a)
		must(t, err)
		for _, n := range []int{1, 255, 256, 1000, 100003} {
			nb := kernels.Blocks(n, block)
			p, g, m, v, ma, va := adam8State(rng, n, block)
			pb, gb, mb, vb, mab, vab := up(t, p), up(t, g), up(t, m), up(t, v), up(t, ma), up(t, va)
			for step := 0; step < 3; step++ {
				must(t, dev.AdamW8(pb, gb, mb, vb, mab, vab, n, ga, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3))
				hostAdamW8(p, g, m, v, ma, va, a, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
			}
			sameBits(t, "p", down(t, make([]float32, n), pb), p)
			sameBytes(t, "m", down(t, make([]uint8, n), mb), m)
			sameBytes(t, "v", down(t, make([]uint8, n), vb), v)
			sameBits(t, "m absmax", down(t, make([]float32, nb), mab), ma)
			sameBits(t, "v absmax", down(t, make([]float32, nb), vab), va)
		}
	}
}

func TestDeviceErrors(t *testing.T) {
	if err := dev.FakeQuantAffine(Buffer{}, Buffer{}, Buffer{}, Buffer{}, Buffer{}, 10, 3, 0, 15); err == nil {
		t.Error("10 values in groups of 3: no error")
	}
	if _, err := Open(1 << 20); err == nil {
		t.Error("device 1<<20: no error")
	}
	if err := dev.launch("no_such_kernel", 1, 32, 0); err == nil {
		t.Error("unknown kernel: no error")
	}
}

func TestDeviceFakeQuantFP(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, id := range []kernels.FormatID{kernels.FP8E4M3, kernels.FP8E5M2, kernels.FP4E2M1} {
		f := id.FP()
		for _, sh := range shapes {
			ng, g := sh[0], sh[1]
			n := ng * g
			x := testValues(rng, n, f.Max/64)
			scale := make([]float32, ng)
			for k := range scale {
				scale[k] = float32(math.Ldexp(1, rng.IntN(5)-2)) * (1 + float32(rng.IntN(2))/3)
			}
			yb, mb := up(t, make([]float32, n)), up(t, make([]uint8, n))
			must(t, dev.FakeQuantFP(yb, mb, up(t, x), up(t, scale), n, g, f))
			y, m := make([]float32, n), make([]uint8, n)
			hostFakeQuantFP(y, m, x, scale, g, f)
			sameBits(t, id.String()+" y", down(t, make([]float32, n), yb), y)
			sameBytes(t, id.String()+" mask", down(t, make([]uint8, n), mb), m)
		}
	}
}

func TestDeviceGemmChannel(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	for _, bits := range []int{4, 8} {
		for _, sh := range [][3]int{{4, 1, 1}, {8, 100, 3}, {12, 1376, 2}, {256, 4096, 17}} {
			rows, k, n := sh[0], sh[1], sh[2]
			c := NewChannel(randomChannel(t, rng, bits, rows, k))
			wd, err := dev.UploadChannel(c)
			must(t, err)
			for _, sc := range schemes {
				x := testValues(rng, n*k, 0.5)
				var h Tokens
				hostQuantizeTokens(&h, x, n, k, sc)
				a, err := dev.NewTokens(n, k)
				must(t, err)
				must(t, dev.QuantizeTokens(a, up(t, x), sc))
				sameBytes(t, "u", down(t, make([]uint8, n*a.KP), a.U), h.U)
				sameBits(t, "scale", down(t, make([]float32, n), a.Scale), h.Scale)
				sameBits(t, "zero", down(t, make([]float32, n), a.Zero), h.Zero)
				yb := up(t, make([]float32, n*rows))
				must(t, dev.GemmChannel(yb, wd, a))
				y := make([]float32, n*rows)
				hostGemmChannel(y, c, &h)
				sameBits(t, fmt.Sprintf("int%d %v %+v y", bits, sh, sc), down(t, make([]float32, n*rows), yb), y)
			}
		}
	}
}
