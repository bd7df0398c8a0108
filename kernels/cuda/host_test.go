//go:build cgo

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"

	"qat/kernels"
)

// The host build of the device arithmetic against package kernels, bit for
// bit: these tests run everywhere and fail if the device code's float
// operations, rounding or order differ from the CPU path's.

// testValues returns n values: normal ones scaled by a random power of
// two, with exact rounding ties (k + 1/2 steps of scale), zeros, negative
// zeros and values far outside the range mixed in.
func testValues(rng *rand.Rand, n int, step float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch rng.IntN(10) {
		case 0:
			x[i] = (float32(rng.IntN(31)-15) + 0.5) * step // a tie of rne
		case 1:
			x[i] = float32(math.Copysign(0, float64(rng.IntN(2)*2-1)))
		case 2:
			x[i] = float32(rng.NormFloat64()) * 40 * step // clipped
		default:
			x[i] = float32(rng.NormFloat64()) * 4 * step
		}
	}
	return x
}

// sameBits fails unless got and want are the same bits. Where package
// kernels runs its C kernels, their vector paths may give +0 where the Go
// loop (and the device) give -0; only that is let through there.
func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) && (cpuIsGo || got[i] != 0 || want[i] != 0) {
			t.Fatalf("%s[%d]: host build %g (%08x), CPU %g (%08x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func sameBytes[T int8 | uint8](t *testing.T, what string, got, want []T) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s[%d]: host build %d, CPU %d", what, i, got[i], want[i])
		}
	}
}

// sameSum compares sums: bit for bit with the Go loops, and within 1e-6
// of each sum's magnitude mag[i] (its terms' absolute values added) where
// the C kernels of package kernels sum in float32 vector lanes.
func sameSum(t *testing.T, what string, got, want, mag []float32) {
	t.Helper()
	if cpuIsGo {
		sameBits(t, what, got, want)
		return
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-6*float64(mag[i])+1e-30 {
			t.Fatalf("%s[%d]: host build %g, CPU %g (sum of |terms| %g)", what, i, got[i], want[i], mag[i])
		}
	}
}

// shapes are (groups, group size) pairs with odd sizes.
var shapes = [][2]int{{1, 1}, {3, 7}, {5, 32}, {17, 33}, {64, 128}, {2, 1000}, {1, 4099}}

func TestHostF16(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		want := float16.Frombits(uint16(h)).Float32()
		got := hostF16Float(uint16(h))
		if math.Float32bits(got) != math.Float32bits(want) && !(want != want && got != got) {
			t.Fatalf("f16 %04x: host %g, float16 %g", h, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(f float32) {
		if got, want := hostF16Bits(f), uint16(float16.Fromfloat32(f)); got != want {
			t.Fatalf("f16 of %g (%08x): host %04x, float16 %04x", f, math.Float32bits(f), got, want)
		}
	}
	// every float32 exponent from below half's subnormals to past its
	// overflow, random mantissas, and the exact ties of every binade
	for e := 90; e <= 150; e++ {
		for k := 0; k < 20000; k++ {
			b := uint32(e)<<23 | uint32(rng.IntN(1<<23)) | uint32(rng.IntN(2))<<31
			check(math.Float32frombits(b))
		}
		for _, m := range []uint32{0, 0x1000, 0x3000, 0x1fff, 0x2000, 0x7fffff, 0x7ff000} {
			check(math.Float32frombits(uint32(e)<<23 | m))
		}
	}
	for _, f := range []float32{0, float32(math.Copysign(0, -1)), 65504, 65519.99, 65520, 1e10, float32(math.Inf(1)), float32(math.Inf(-1)), 5.96e-8, 2.98e-8, 2.99e-8} {
		check(f)
	}
}

func TestHostFakeQuantAffine(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, sh := range shapes {
		for _, grid := range [][2]float32{{-8, 7}, {-7, 7}, {0, 15}, {-128, 127}, {0, 255}} {
			ng, g := sh[0], sh[1]
			n := ng * g
			// scales of 1/16 make testValues' ties exact ties of rne
			x := testValues(rng, n, 0.0625)
			scale, zero := make([]float32, ng), make([]float32, ng)
			for k := range scale {
				scale[k] = 0.0625 * float32(1+rng.IntN(3))
				if grid[0] == 0 {
					zero[k] = float32(rng.IntN(int(grid[1]) + 1))
				}
			}
			y1, y2 := make([]float32, n), make([]float32, n)
			m1, m2 := make([]uint8, n), make([]uint8, n)
			hostFakeQuantAffine(y1, m1, x, scale, zero, g, grid[0], grid[1])
			kernels.FakeQuantAffine(y2, m2, x, scale, zero, g, grid[0], grid[1])
			sameBits(t, "y", y1, y2)
			sameBytes(t, "mask", m1, m2)
		}
	}
}

func TestHostLSQ(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, sh := range shapes {
		for _, q := range [][2]float32{{8, 7}, {128, 127}, {0, 15}} {
			ng, g := sh[0], sh[1]
			n := ng * g
			x := testValues(rng, n, 0.03125)
			scale := make([]float32, ng)
			for k := range scale {
				scale[k] = 0.02 + 0.03*float32(rng.Float64())
				if rng.IntN(2) == 0 {
					scale[k] = 0.03125 // exact ties
				}
			}
			y1, y2 := make([]float32, n), make([]float32, n)
			m1, m2 := make([]uint8, n), make([]uint8, n)
			hostFakeQuantLSQ(y1, m1, x, scale, g, q[0], q[1])
			kernels.FakeQuantLSQ(y2, m2, x, scale, g, q[0], q[1])
			sameBits(t, "y", y1, y2)
			sameBytes(t, "mask", m1, m2)

			dy := testValues(rng, n, 1)
			dx1, dx2 := testValues(rng, n, 1), make([]float32, n)
			copy(dx2, dx1)
			ds1, ds2 := make([]float32, ng), make([]float32, ng)
			for k := range ds1 {
				ds1[k] = float32(rng.NormFloat64())
				ds2[k] = ds1[k]
			}
			gs := float32(1 / math.Sqrt(float64(g)*float64(q[1])))
			mag := make([]float32, ng)
			for i := range x {
				v := x[i] / scale[i/g]
				e := min(max(v, -q[0]), q[1])
				mag[i/g] += gs * float32(math.Abs(float64(dy[i]*e)))
			}
			for k := range mag {
				mag[k] += 2 * float32(math.Abs(float64(ds1[k]))) // the value added to
			}
			hostLSQGrad(dx1, ds1, dy, x, scale, g, q[0], q[1], gs)
			kernels.LSQGrad(dx2, ds2, dy, x, scale, g, q[0], q[1], gs)
			sameBits(t, "dx", dx1, dx2)
			sameSum(t, "ds", ds1, ds2, mag)
			hostLSQGrad(nil, ds1, dy, x, scale, g, q[0], q[1], gs) // dx may be nil
			kernels.LSQGrad(nil, ds2, dy, x, scale, g, q[0], q[1], gs)
			sameSum(t, "ds (no dx)", ds1, ds2, mag)
		}
	}
}

// blocks returns nb blocks of 32 with the cases that decide a block scale:
// an all-zero block, one of negative zeros, equal magnitudes of both signs
// (the first wins), one large value, exact ties of Q8_0's rounding, and
// random ones.
func blocks(rng *rand.Rand, nb int) []float32 {
	x := testValues(rng, 32*nb, 0.1)
	if nb < 4 {
		return x
	}
	neg0 := float32(math.Copysign(0, -1))
	for j := 0; j < 32; j++ {
		x[j], x[32+j] = 0, neg0
	}
	x[64+5], x[64+9] = -3, 3
	x[96+30] = 1e3
	if nb >= 5 { // Q8_0's d = 127/127 = 1 makes every k + 1/2 a tie
		x[128] = 127
		for j := 1; j < 32; j++ {
			x[128+j] = float32(rng.IntN(200)-100) + 0.5
		}
	}
	return x
}

func TestHostBlockGrids(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, nb := range []int{4, 5, 33, 300} {
		x := blocks(rng, nb)
		n := len(x)
		y1, y2 := make([]float32, n), make([]float32, n)
		m1, m2 := make([]uint8, n), make([]uint8, n)
		hostFakeQuantQ4_0(y1, m1, x)
		kernels.FakeQuantQ4_0(y2, m2, x)
		sameBits(t, "q4_0 y", y1, y2)
		sameBytes(t, "q4_0 mask", m1, m2)
		hostFakeQuantQ8_0(y1, m1, x)
		kernels.FakeQuantQ8_0(y2, m2, x)
		sameBits(t, "q8_0 y", y1, y2)
		sameBytes(t, "q8_0 mask", m1, m2)
	}
}

func TestHostPacked(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, f := range []kernels.FormatID{kernels.Q4_0, kernels.Q8_0} {
		for _, sh := range [][3]int{{1, 32, 1}, {7, 96, 3}, {33, 320, 8}, {64, 1024, 2}} {
			rows, k, ncols := sh[0], sh[1], sh[2]
			nb := k / 32
			w := packedRows(rng, f, rows, k)
			x := blocks(rng, ncols*nb)
			var a kernels.PackedQ8
			kernels.QuantizeQ8(&a, x, ncols, k)
			h := NewQ8Host(ncols * nb)
			hostQuantizeQ8(h, x)
			for c := 0; c < ncols; c++ {
				d, c4, c8, q := a.Column(c)
				sameBits(t, "dx", h.D[c*nb:(c+1)*nb], d)
				sameBits(t, "c4", h.C4[c*nb:(c+1)*nb], c4)
				sameBits(t, "c8", h.C8[c*nb:(c+1)*nb], c8)
				sameBytes(t, "q", h.Q[c*k:(c+1)*k], q)
			}
			y1, y2 := make([]float32, rows*ncols), make([]float32, rows*ncols)
			hostGemmPacked(f, y1, w, rows, nb, h)
			kernels.GemmPacked(f, w, rows, k, &a, y2)
			if cpuIsGo {
				sameBits(t, f.String()+" y", y1, y2)
			}
			// Against the exact sum, both the host build and the CPU's.
			// Both round the Q4_0 offset form (codes 0..15 and a
			// correction per block), whose terms are larger than the
			// true products, so the yardstick is that form's sum of
			// magnitudes: 1e-6 of it for the host build (float32 terms
			// summed in double, as the Go loop does) and 1e-5 for the C
			// kernels of package kernels (float32 sums in their own
			// order).
			wu := make([]float32, rows*k)
			f.Unpack(wu, w)
			for c := 0; c < ncols; c++ {
				for r := 0; r < rows; r++ {
					var exact, magOff float64
					for j := 0; j < k; j++ {
						dw := float64(f16At(w, f, r*nb+j/32))
						v := float64(wu[r*k+j]) * float64(h.Q[c*k+j]) * float64(h.D[c*nb+j/32])
						exact += v
						magOff += math.Abs(v) + 8*math.Abs(dw*float64(h.Q[c*k+j])*float64(h.D[c*nb+j/32]))
					}
					got, cpu := float64(y1[c*rows+r]), float64(y2[c*rows+r])
					if math.Abs(got-exact) > 1e-6*magOff+1e-7 {
						t.Fatalf("%s y[%d,%d]: host build %g, exact %g (offset form's sum |terms| %g)", f, c, r, got, exact, magOff)
					}
					if math.Abs(cpu-exact) > 1e-5*magOff+1e-6 {
						t.Fatalf("%s y[%d,%d]: CPU %g, exact %g (offset form's sum |terms| %g)", f, c, r, cpu, exact, magOff)
					}
				}
			}
		}
	}
}

// f16At is the half-precision scale of packed block b.
func f16At(w []byte, f kernels.FormatID, b int) float32 {
	bb := kernels.Formats[f].BlockBytes
	return float16.Frombits(uint16(w[b*bb]) | uint16(w[b*bb+1])<<8).Float32()
}

// adam8State is a random 8-bit AdamW state of n values in blocks of block:
// parameters, gradients, moment codes and the blocks' absmaxes.
func adam8State(rng *rand.Rand, n, block int) (p, g []float32, m, v []uint8, ma, va []float32) {
	nb := kernels.Blocks(n, block)
	p, g = testValues(rng, n, 0.1), testValues(rng, n, 0.01)
	m, v = make([]uint8, n), make([]uint8, n)
	for i := range m {
		m[i], v[i] = uint8(rng.IntN(256)), uint8(rng.IntN(256))
	}
	ma, va = make([]float32, nb), make([]float32, nb)
	for k := range ma {
		ma[k], va[k] = float32(rng.Float64()), float32(rng.Float64())
	}
	return p, g, m, v, ma, va
}

func TestHostAdamW8(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	a := &kernels.Adam8{M: kernels.DynamicMap(true), V: kernels.DynamicMap(false), Block: 256}
	for _, n := range []int{1, 255, 256, 1000, 5000} {
		p, g, m, v, ma, va := adam8State(rng, n, a.Block)
		p2, m2, v2 := append([]float32(nil), p...), append([]uint8(nil), m...), append([]uint8(nil), v...)
		ma2, va2 := append([]float32(nil), ma...), append([]float32(nil), va...)
		for step := 0; step < 3; step++ {
			hostAdamW8(p, g, m, v, ma, va, a, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
			kernels.AdamW8(p2, g, m2, v2, ma2, va2, a, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
		}
		if cpuIsGo {
			sameBits(t, "p", p, p2)
			sameBytes(t, "m", m, m2)
			sameBytes(t, "v", v, v2)
			sameBits(t, "m absmax", ma, ma2)
			sameBits(t, "v absmax", va, va2)
			continue
		}
		diff := 0
		for i := range p {
			if math.Abs(float64(p[i]-p2[i])) > 1e-5*(1+math.Abs(float64(p2[i]))) {
				t.Fatalf("p[%d]: host build %g, CPU %g", i, p[i], p2[i])
			}
			if m[i] != m2[i] || v[i] != v2[i] {
				diff++
			}
		}
		if diff > 1+n/500 {
			t.Errorf("n=%d: %d codes differ from the CPU's C kernel (an FMA there flips rare ties; not this many)", n, diff)
		}
	}
}

func TestHostFakeQuantFP(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, id := range []kernels.FormatID{kernels.FP8E4M3, kernels.FP8E5M2, kernels.FP4E2M1} {
		f := id.FP()
		for _, sh := range shapes {
			ng, g := sh[0], sh[1]
			n := ng * g
			x := testValues(rng, n, f.Max/64)
			for i := range x {
				if rng.IntN(20) == 0 { // far below the smallest subnormal, and a NaN
					x[i] *= 1e-6
				}
			}
			x[n/2] = float32(math.NaN())
			scale := make([]float32, ng)
			for k := range scale {
				scale[k] = float32(math.Ldexp(1, rng.IntN(5)-2)) * (1 + float32(rng.IntN(2))/3)
			}
			y1, y2 := make([]float32, n), make([]float32, n)
			m1, m2 := make([]uint8, n), make([]uint8, n)
			hostFakeQuantFP(y1, m1, x, scale, g, f)
			kernels.FakeQuantFP(y2, m2, x, scale, g, f)
			for i := range y2 {
				if y2[i] != y2[i] && y1[i] != y1[i] {
					y1[i], y2[i] = 0, 0 // NaN stays NaN; payloads may differ
				}
			}
			sameBits(t, id.String()+" y", y1, y2)
			sameBytes(t, id.String()+" mask", m1, m2)
		}
	}
}

// schemes are the per-token activation schemes of the packed products.
var schemes = []kernels.TokenScheme{{}, {Symmetric: true}, {Symmetric: true, Restricted: true}}

func TestHostTokens(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, sc := range schemes {
		for _, k := range []int{1, 31, 32, 100, 1376} {
			n := 5
			x := testValues(rng, n*k, 0.1)
			for j := 0; j < k; j++ { // a row of zeros, and one with no negatives
				x[j] = 0
				x[k+j] = float32(math.Abs(float64(x[k+j])))
			}
			var a kernels.TokenU8
			sc.Quantize(&a, x, n, k)
			var h Tokens
			hostQuantizeTokens(&h, x, n, k, sc)
			sameBytes(t, "u", h.U, a.U)
			sameBits(t, "scale", h.Scale, a.Scale)
			sameBits(t, "zero", h.Zero, a.Zero)
			for r := range a.Sum {
				if h.Sum[r] != a.Sum[r] {
					t.Fatalf("%+v k=%d: sum[%d] host %d, CPU %d", sc, k, r, h.Sum[r], a.Sum[r])
				}
			}
		}
	}
}

func TestHostGemmChannel(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, bits := range []int{4, 8} {
		for _, sh := range [][3]int{{4, 1, 1}, {8, 100, 3}, {12, 1376, 2}, {64, 512, 9}} {
			rows, k, n := sh[0], sh[1], sh[2]
			w := randomChannel(t, rng, bits, rows, k)
			c := NewChannel(w)
			for r := 0; r < rows; r++ { // the device layout holds the codes
				for j := 0; j < c.KP; j++ {
					var got int8
					if bits == 8 {
						got = int8(c.W[r*c.KP+j])
					} else {
						got = int8(c.W[r*c.KP/2+j/2]>>(4*(j&1))&15) - 8
					}
					if got != w.Code(r, j) {
						t.Fatalf("int%d layout: row %d input %d: %d, want %d", bits, r, j, got, w.Code(r, j))
					}
				}
			}
			for _, sc := range schemes {
				x := testValues(rng, n*k, 0.5)
				var a kernels.TokenU8
				sc.Quantize(&a, x, n, k)
				var h Tokens
				hostQuantizeTokens(&h, x, n, k, sc)
				y1, y2 := make([]float32, n*rows), make([]float32, n*rows)
				hostGemmChannel(y1, c, &h)
				kernels.GemmChannel(w, &a, y2)
				sameBits(t, fmt.Sprintf("int%d %v y", bits, sh), y1, y2)
			}
		}
	}
}

// randomChannel is a per-channel weight of random codes and scales.
func randomChannel(t testing.TB, rng *rand.Rand, bits, rows, k int) *kernels.ChannelInt {
	lim := 1 << (bits - 1)
	codes := make([]int8, rows*k)
	for i := range codes {
		codes[i] = int8(rng.IntN(2*lim) - lim)
	}
	scale := make([]float32, rows)
	for r := range scale {
		scale[r] = 0.01 * (1 + float32(rng.Float64()))
	}
	w, err := kernels.NewChannelInt(bits, codes, scale, rows, k)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// packedRows is rows random rows of k values packed in format f.
func packedRows(rng *rand.Rand, f kernels.FormatID, rows, k int) []byte {
	w := make([]byte, rows*f.RowBytes(k))
	wf := testValues(rng, rows*k, 0.02)
	for r := 0; r < rows; r++ {
		f.Pack(w[r*f.RowBytes(k):], wf[r*k:(r+1)*k])
	}
	return w
}
