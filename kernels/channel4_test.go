package kernels

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// tokensU4 builds a TokenU4 from explicit codes (n rows of k), scales and
// zero points.
func tokensU4(codes []byte, scale, zero []float32, n, k int) *TokenU4 {
	a := &TokenU4{}
	a.prepare(make([]float32, n*k), n, k)
	for r := 0; r < n; r++ {
		a.Sum[r] = 0
		for j := 0; j < k; j++ {
			a.U[r*a.KP+j] = codes[r*k+j]
			a.Sum[r] += int32(codes[r*k+j])
		}
		a.Scale[r], a.Zero[r] = scale[r], zero[r]
	}
	return a
}

// TestGemmChannel4: the W4A4 kernels (AVX-512 VNNI and AVX2 where this
// CPU has them) give the Go loop's bits, and all of them agree with a
// float64 product of the dequantized codes. Inputs that are not a
// multiple of 32 (1 to 688), 1 to 11 tokens (the VNNI tiles of 8, the
// AVX2 tiles of 4, remainders), more tokens than one pass over the
// weights takes (tokenChunk: 20 at 14336 inputs, 70 at 8200), 1 and 2
// threads; every weight code -8..7 and activation code 0..15 appears, and
// zero points sit at both ends of the grid (0, 15), in between, off the
// integers (a clip grid's), and the same on every row (a static
// quantizer). The extreme rows (all codes -8 times all 15) check the
// integer sums do not overflow or saturate.
func TestGemmChannel4(t *testing.T) {
	if packedISA < 2 {
		t.Logf("this CPU runs kernel %q: the AVX-512 VNNI kernel is not checked here", PackedKernel())
	}
	rng := rand.New(rand.NewPCG(11, 5))
	defer SetThreads(1)
	zeros := []func(r int) float32{
		func(r int) float32 { return 0 },
		func(r int) float32 { return 15 },
		func(r int) float32 { return float32(r % 16) },
		func(r int) float32 { return 7.318 + float32(r)*0.61 },
		func(r int) float32 { return 3 }, // static: every row the same
	}
	shapes := []struct{ rows, k, n int }{{4, 1, 1}, {4, 31, 2}, {8, 33, 3}, {12, 40, 5}, {20, 96, 9}, {8, 160, 11}, {16, 688, 4}, {64, 4096, 1}, {8, 14336, 20}, {4, 8200, 70}, {4, 14336, 8}, {72, 4096, 2}}
	for si, sh := range shapes {
		for zi, zf := range zeros {
			codes := make([]int8, sh.rows*sh.k)
			for i := range codes {
				codes[i] = int8(i%16 - 8) // every code on every row
				if rng.IntN(2) == 0 {
					codes[i] = int8(rng.IntN(16) - 8)
				}
			}
			u := make([]byte, sh.n*sh.k)
			for i := range u {
				u[i] = byte((i + 5) % 16)
				if rng.IntN(2) == 0 {
					u[i] = byte(rng.IntN(16))
				}
			}
			if si == len(shapes)-1 {
				// the largest products: row 0 all -8, token 0 all 15
				for j := 0; j < sh.k; j++ {
					codes[j], u[j] = -8, 15
				}
			}
			scale := make([]float32, sh.rows)
			for i := range scale {
				scale[i] = float32(0.01 + rng.Float64())
			}
			sx, zx := make([]float32, sh.n), make([]float32, sh.n)
			for c := range sx {
				sx[c], zx[c] = float32(0.02+rng.Float64()), zf(c)
				if zi == len(zeros)-1 {
					sx[c] = 0.37
				}
			}
			w, err := NewChannelInt(4, codes, scale, sh.rows, sh.k)
			if err != nil {
				t.Fatal(err)
			}
			a := tokensU4(u, sx, zx, sh.n, sh.k)
			ref := make([]float32, sh.n*sh.rows)
			gemmChannel4Go(w, 0, sh.rows/4, a, ref)
			for c := 0; c < sh.n; c++ {
				for r := 0; r < sh.rows; r++ {
					var want, mag float64
					for j := 0; j < sh.k; j++ {
						v := float64(codes[r*sh.k+j]) * float64(scale[r]) * float64(sx[c]) * (float64(u[c*sh.k+j]) - float64(zx[c]))
						want += v
						mag += math.Abs(v)
					}
					if got := float64(ref[c*sh.rows+r]); math.Abs(got-want) > 1e-6*mag+1e-6 {
						t.Fatalf("%v zero %d: Go loop y[%d,%d] = %g, float64 %g", sh, zi, c, r, got, want)
					}
				}
			}
			for isa := 1; isa <= packedISA; isa++ {
				for _, th := range []int{1, 2} {
					SetThreads(th)
					y := make([]float32, sh.n*sh.rows)
					groups := sh.rows / 4
					For(groups, 1, func(g0, g1 int) { gemmChannel4(isa, w, g0, g1, a, y) })
					for i := range y {
						if math.Float32bits(y[i]) != math.Float32bits(ref[i]) {
							t.Fatalf("%v zero %d isa %d threads %d: y[%d] = %g, Go loop %g", sh, zi, isa, th, i, y[i], ref[i])
						}
					}
				}
			}
			// the exported entry point, on whichever kernel this CPU runs
			y := make([]float32, sh.n*sh.rows)
			GemmChannel4(w, a, y)
			for i := range y {
				if math.Float32bits(y[i]) != math.Float32bits(ref[i]) {
					t.Fatalf("%v zero %d: GemmChannel4 y[%d] = %g, Go loop %g", sh, zi, i, y[i], ref[i])
				}
			}
		}
	}
}

// TestQuantize4: the 4-bit per-token codes dequantize to exactly what
// FakeQuantAffine computes with the scales and zero points of qat's
// minmax rule (torchao's: the range widened to contain 0, s =
// (hi-lo)/(qmax-qmin), z = qmin - rne(lo/s) clamped; symmetric s =
// amax/((qmax-qmin)/2), z = 0), written out here; the stored code sums
// hold; padding is 0; constant and all-zero rows do not divide by zero.
func TestQuantize4(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	const n, k = 5, 75
	x := make([]float32, n*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64()*3 + 0.7)
	}
	for j := 0; j < k; j++ {
		x[2*k+j] = 2.5 // constant
		x[3*k+j] = 0   // zero
		x[4*k+j] = -float32(rng.Float64()) - 0.1
	}
	for _, sc := range []TokenScheme{{Bits: 4}, {Bits: 4, Symmetric: true}, {Bits: 4, Symmetric: true, Restricted: true}} {
		// a reused buffer: the padding must be cleared
		a := TokenU4{U: make([]byte, n*96)}
		for i := range a.U {
			a.U[i] = 0xff
		}
		sc.Quantize4(&a, x, n, k)
		if a.KP != 96 || len(a.U) != n*96 {
			t.Fatalf("%+v: padded width %d, %d bytes", sc, a.KP, len(a.U))
		}
		qmin, qmax := float32(0), float32(15)
		if sc.Symmetric {
			qmin, qmax = -8, 7
			if sc.Restricted {
				qmin = -7
			}
		}
		for r := 0; r < n; r++ {
			row := x[r*k : (r+1)*k]
			var s, z float32
			if sc.Symmetric {
				var amax float32
				for _, v := range row {
					amax = max(amax, float32(math.Abs(float64(v))))
				}
				s = max(amax/((qmax-qmin)/2), 1.1920929e-07)
			} else {
				lo, hi := row[0], row[0]
				for _, v := range row {
					lo, hi = min(lo, v), max(hi, v)
				}
				lo, hi = min(lo, 0), max(hi, 0)
				s = max((hi-lo)/(qmax-qmin), 1.1920929e-07)
				z = min(max(qmin-float32(math.RoundToEven(float64(lo/s))), qmin), qmax)
			}
			want := make([]float32, k)
			FakeQuantAffine(want, make([]uint8, k), row, []float32{s}, []float32{z}, k, qmin, qmax)
			got := make([]float32, k)
			a.Dequantize(got, r)
			var sum int32
			for j := 0; j < a.KP; j++ {
				c := a.U[r*a.KP+j]
				sum += int32(c)
				if j >= k {
					if c != 0 {
						t.Fatalf("%+v row %d: padding code %d at %d", sc, r, c, j)
					}
					continue
				}
				if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
					t.Fatalf("%+v row %d, %d: %g dequantizes to %g, fake-quant %g", sc, r, j, row[j], got[j], want[j])
				}
			}
			if sum != a.Sum[r] {
				t.Fatalf("%+v row %d: code sum %d, stored %d", sc, r, sum, a.Sum[r])
			}
			if !(a.Scale[r] > 0) {
				t.Fatalf("%+v row %d: scale %g", sc, r, a.Scale[r])
			}
		}
	}
}

// TestQuantizeClip4: the static clip grid: codes rne((clamp(x) - lo)*15/(hi-lo))
// dequantize (s*(u - z), every row the same s and z) to lo + u*(hi-lo)/15
// within float32 rounding, and to within half a step of the clamped x.
func TestQuantizeClip4(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 1))
	const n, k = 3, 70
	x := make([]float32, n*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 2)
	}
	for _, c := range []struct{ lo, hi float32 }{{-1.5, 2.25}, {0.3, 1.1}, {-3, -0.5}} {
		var a TokenU4
		QuantizeClip4(&a, x, n, k, c.lo, c.hi)
		step := float64(c.hi-c.lo) / 15
		for r := 0; r < n; r++ {
			if a.Scale[r] != a.Scale[0] || a.Zero[r] != a.Zero[0] {
				t.Fatalf("%v: row %d has scale %g zero %g, row 0 %g %g", c, r, a.Scale[r], a.Zero[r], a.Scale[0], a.Zero[0])
			}
			got := make([]float32, k)
			a.Dequantize(got, r)
			for j := 0; j < k; j++ {
				v := min(max(float64(x[r*k+j]), float64(c.lo)), float64(c.hi))
				u := a.U[r*a.KP+j]
				grid := float64(c.lo) + float64(u)*step
				if math.Abs(float64(got[j])-grid) > 1e-5*(math.Abs(float64(c.lo))+math.Abs(float64(c.hi))) {
					t.Fatalf("%v row %d, %d: code %d dequantizes to %g, grid value %g", c, r, j, u, got[j], grid)
				}
				if math.Abs(grid-v) > step/2*1.0001 {
					t.Fatalf("%v row %d, %d: %g (clamped %g) on grid value %g, step %g", c, r, j, x[r*k+j], v, grid, step)
				}
			}
		}
	}
}

// BenchmarkGemmChannel4 beside BenchmarkGemmChannel's int4 cases: W4A4
// against W4A8 at the same shapes, quantization included.
func BenchmarkGemmChannel4(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, k := range []int{4096, 14336} {
		const rows = 4096
		codes := make([]int8, rows*k)
		for i := range codes {
			codes[i] = int8(rng.IntN(16) - 8)
		}
		scale := make([]float32, rows)
		for i := range scale {
			scale[i] = 0.01
		}
		w, _ := NewChannelInt(4, codes, scale, rows, k)
		for _, n := range []int{1, 8, 32} {
			x := make([]float32, n*k)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			y := make([]float32, n*rows)
			var a TokenU4
			b.Run("4096x"+strconv.Itoa(k)+"/n="+strconv.Itoa(n), func(b *testing.B) {
				b.SetBytes(int64(len(w.W)))
				for i := 0; i < b.N; i++ {
					TokenScheme{Bits: 4}.Quantize4(&a, x, n, k)
					GemmChannel4(w, &a, y)
				}
				b.ReportMetric(2*float64(rows)*float64(k)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
