package kernels

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestGemmPacked: the packed products (this CPU's kernel and the Go loops)
// against a float64 product of the unpacked weights and the dequantized
// activations, for Q4_0 and Q8_0, odd block and row counts, 1 to 9
// columns, 1 and 2 threads. The block dot products are exact integers;
// the float32 scaling and accumulation bound the difference (relative to
// the sum of |terms|).
func TestGemmPacked(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 4))
	defer SetThreads(1)
	for _, f := range []FormatID{Q4_0, Q8_0} {
		for _, sh := range []struct{ rows, k, n int }{{1, 32, 1}, {13, 96, 1}, {7, 96, 3}, {33, 160, 9}, {130, 64 * 32, 2}, {64, 4096, 1}} {
			w := make([]float32, sh.rows*sh.k)
			for i := range w {
				w[i] = float32(rng.NormFloat64())
			}
			packed := make([]byte, sh.rows*f.RowBytes(sh.k))
			for r := 0; r < sh.rows; r++ {
				f.Pack(packed[r*f.RowBytes(sh.k):], w[r*sh.k:(r+1)*sh.k])
			}
			wu := make([]float32, len(w))
			f.Unpack(wu, packed)
			x := make([]float32, sh.n*sh.k)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * 3)
			}
			var a PackedQ8
			QuantizeQ8(&a, x, sh.n, sh.k)
			for _, simd := range []bool{true, false} {
				for _, th := range []int{1, 2} {
					useSIMD = simd
					SetThreads(th)
					y := make([]float32, sh.n*sh.rows)
					GemmPacked(f, packed, sh.rows, sh.k, &a, y)
					useSIMD = true
					for c := 0; c < sh.n; c++ {
						dx, _, _, qx := a.col(c)
						for r := 0; r < sh.rows; r++ {
							var want, mag float64
							for j := 0; j < sh.k; j++ {
								v := float64(wu[r*sh.k+j]) * float64(qx[j]) * float64(dx[j/32])
								want += v
								mag += math.Abs(v)
							}
							if got := float64(y[c*sh.rows+r]); math.Abs(got-want) > 1e-5*mag+1e-6 {
								t.Fatalf("%s %v simd=%v threads=%d: y[%d,%d] = %g, want %g (sum |terms| %g)", f, sh, simd, th, c, r, got, want, mag)
							}
						}
					}
				}
			}
		}
	}
}

// TestQuantizeQ8: the kernel's activation quantizer (AVX-512 where the
// CPU has it, else the C loop) agrees with the Go loop and its
// definition: d = amax/127, q = x/d rounded half to even (ties included),
// and a block of zeros gives zeros.
func TestQuantizeQ8(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 3*96)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	x[5] = 0.5 * x[0] // some ties are unlikely; the definition is checked below
	// a block with d = 1: ties at every half, rounded to even; a block of
	// zeros (d = 0)
	tie := x[96+64 : 96+96]
	for j := range tie {
		tie[j] = float32(j-16) + 0.5
	}
	tie[31] = -127
	clear(x[2*96 : 2*96+32])
	var a, b PackedQ8
	QuantizeQ8(&a, x, 3, 96)
	useSIMD = false
	QuantizeQ8(&b, x, 3, 96)
	useSIMD = true
	for c := 0; c < 3; c++ {
		da, ca, c8a, qa := a.col(c)
		db, cb, c8b, qb := b.col(c)
		for k := range da {
			if da[k] != db[k] || ca[k] != cb[k] || c8a[k] != c8b[k] {
				t.Fatalf("column %d block %d: scales %g/%g %g/%g", c, k, da[k], db[k], ca[k], cb[k])
			}
			var amax float64
			for _, v := range x[c*96+32*k : c*96+32*k+32] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			if float32(amax)/127 != da[k] {
				t.Fatalf("d = %g, amax/127 = %g", da[k], amax/127)
			}
		}
		for j := range qa {
			if qa[j] != qb[j] {
				t.Fatalf("column %d value %d: %d vs %d", c, j, qa[j], qb[j])
			}
		}
		if c == 1 {
			for j := 0; j < 31; j++ {
				if want := int8(math.RoundToEven(float64(j-16) + 0.5)); qa[64+j] != want {
					t.Fatalf("tie %g: %d, want %d", float64(j-16)+0.5, qa[64+j], want)
				}
			}
		}
	}
}

// BenchmarkGemmPacked: weight GB/s and GFLOP/s of the packed products at
// llama.cpp's microbenchmark shapes (4096x4096 and 14336 rows x 4096),
// n = 1, 8 and 32 columns.
func BenchmarkGemmPacked(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, f := range []FormatID{Q4_0, Q8_0} {
		for _, rows := range []int{4096, 14336} {
			const k = 4096
			w := randomRows(rng, f, rows, k)
			for _, n := range []int{1, 8, 32} {
				x := make([]float32, n*k)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				y := make([]float32, n*rows)
				var a PackedQ8
				b.Run(f.String()+"/"+strconv.Itoa(rows)+"x4096/n"+strconv.Itoa(n), func(b *testing.B) {
					b.SetBytes(int64(len(w)))
					for i := 0; i < b.N; i++ {
						QuantizeQ8(&a, x, n, k)
						GemmPacked(f, w, rows, k, &a, y)
					}
					b.ReportMetric(2*float64(rows)*k*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// TestGemmR4: the repacked kernel gives the bits of its Go reference
// (gemmR4Go, the kernel's summation order), and agrees with the plain
// packed product within float32 accumulation (both exact per block), for
// Q4_0 and Q8_0, 1 to 17 columns (quads of columns in tiles of one or two
// quads by one or two groups of rows, with 0 to 3 columns left over; below
// four, tiles of up to 8 columns and a column alone), 1 and 2 threads; and
// repacking is exact (Unpack gives the blocks back).
func TestGemmR4(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 4))
	defer SetThreads(1)
	for _, f := range []FormatID{Q4_0, Q8_0} {
		for _, sh := range []struct{ rows, k, n int }{{4, 32, 1}, {12, 96, 3}, {64, 4096, 1}, {36, 14336, 2}, {20, 160, 8}, {8, 64, 11}, {72, 4096, 9}, {16, 1024, 17}, {12, 96, 4}, {20, 160, 13}, {36, 288, 6}, {4, 14336, 12}} {
			w := make([]float32, sh.rows*sh.k)
			for i := range w {
				w[i] = float32(rng.NormFloat64())
			}
			packed := make([]byte, sh.rows*f.RowBytes(sh.k))
			for r := 0; r < sh.rows; r++ {
				f.Pack(packed[r*f.RowBytes(sh.k):], w[r*sh.k:(r+1)*sh.k])
			}
			r := Repack(f, packed, sh.rows, sh.k)
			if r == nil {
				t.Skip("no AVX-512 VNNI: no repacked kernel")
			}
			back := make([]byte, len(packed))
			r.Unpack(back)
			if string(back) != string(packed) {
				t.Fatalf("%s %v: Unpack(Repack(w)) != w", f, sh)
			}
			x := make([]float32, sh.n*sh.k)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * 2)
			}
			var a PackedQ8
			QuantizeQ8(&a, x, sh.n, sh.k)
			plain := make([]float32, sh.n*sh.rows)
			gemmPackedGo(f, packed, 0, sh.rows, &a, plain, sh.rows)
			for _, th := range []int{1, 2} {
				SetThreads(th)
				got := make([]float32, sh.n*sh.rows)
				GemmR4(r, &a, got)
				useSIMD = false
				want := make([]float32, sh.n*sh.rows)
				GemmR4(r, &a, want)
				useSIMD = true
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s %v threads %d: y[%d]: kernel %g, Go reference %g", f, sh, th, i, got[i], want[i])
					}
					if math.Abs(float64(got[i]-plain[i])) > 1e-4*(1+math.Abs(float64(plain[i]))) {
						t.Fatalf("%s %v threads %d: y[%d]: %g repacked, %g plain", f, sh, th, i, got[i], plain[i])
					}
				}
			}
		}
	}
}

func BenchmarkGemmR4(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, f := range []FormatID{Q4_0, Q8_0} {
		for _, k := range []int{4096, 14336} {
			const rows = 4096
			packed := randomRows(rng, f, rows, k)
			r := Repack(f, packed, rows, k)
			if r == nil {
				b.Skip("no AVX-512 VNNI")
			}
			for _, n := range []int{1, 8, 32, 128} {
				x := make([]float32, n*k)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				y := make([]float32, n*rows)
				var a PackedQ8
				b.Run(f.String()+"/4096x"+strconv.Itoa(k)+"/n="+strconv.Itoa(n), func(b *testing.B) {
					b.SetBytes(int64(len(packed)))
					for i := 0; i < b.N; i++ {
						QuantizeQ8(&a, x, n, k)
						GemmR4(r, &a, y)
					}
					b.ReportMetric(2*float64(rows)*float64(k)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// randomRows packs rows of k standard normal values in format f.
func randomRows(rng *rand.Rand, f FormatID, rows, k int) []byte {
	out := make([]byte, rows*f.RowBytes(k))
	row := make([]float32, k)
	for r := 0; r < rows; r++ {
		for i := range row {
			row[i] = float32(rng.NormFloat64())
		}
		f.Pack(out[r*f.RowBytes(k):], row)
	}
	return out
}
