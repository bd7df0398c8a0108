package kernels

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestGemmChannel: the per-channel integer product (this CPU's kernel and
// the Go loop) against a float64 product of the dequantized weights and
// activations, for int4 and int8 codes, inputs that are not a multiple of
// 32, 1 to 11 tokens (tiles of 8 and a remainder), more tokens than one
// pass over the weights takes (tokenChunk: 20 at 14336 inputs), 1 and 2
// threads. The integer sums are exact; one float32 rounding of the sum and two scale
// products bound the difference.
func TestGemmChannel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 3))
	defer SetThreads(1)
	for _, bits := range []int{4, 8} {
		for _, sh := range []struct{ rows, k, n int }{{4, 32, 1}, {8, 40, 3}, {12, 688, 2}, {64, 4096, 1}, {20, 160, 9}, {8, 96, 11}, {8, 14336, 20}, {72, 4096, 2}} {
			lim := 1 << (bits - 1)
			codes := make([]int8, sh.rows*sh.k)
			for i := range codes {
				codes[i] = int8(rng.IntN(2*lim) - lim)
			}
			scale := make([]float32, sh.rows)
			for i := range scale {
				scale[i] = float32(0.01 + rng.Float64())
			}
			w, err := NewChannelInt(bits, codes, scale, sh.rows, sh.k)
			if err != nil {
				t.Fatal(err)
			}
			for r := 0; r < sh.rows; r++ {
				for j := 0; j < sh.k; j++ {
					if w.code(r, j) != codes[r*sh.k+j] {
						t.Fatalf("int%d %v: code(%d,%d) = %d, packed %d", bits, sh, r, j, w.code(r, j), codes[r*sh.k+j])
					}
				}
			}
			x := make([]float32, sh.n*sh.k)
			for i := range x {
				x[i] = float32(rng.NormFloat64()*2 + 0.5)
			}
			var a TokenU8
			QuantizeTokens(&a, x, sh.n, sh.k)
			for _, simd := range []bool{true, false} {
				for _, th := range []int{1, 2} {
					useSIMD = simd
					SetThreads(th)
					y := make([]float32, sh.n*sh.rows)
					GemmChannel(w, &a, y)
					useSIMD = true
					for c := 0; c < sh.n; c++ {
						for r := 0; r < sh.rows; r++ {
							var want, mag float64
							for j := 0; j < sh.k; j++ {
								xv := float64(a.Scale[c]) * (float64(a.U[c*a.KP+j]) - float64(a.Zero[c]))
								v := float64(codes[r*sh.k+j]) * float64(scale[r]) * xv
								want += v
								mag += math.Abs(v)
							}
							if got := float64(y[c*sh.rows+r]); math.Abs(got-want) > 1e-6*mag+1e-6 {
								t.Fatalf("int%d %v simd=%v threads=%d: y[%d,%d] = %g, want %g", bits, sh, simd, th, c, r, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// TestQuantizeTokens: codes within [0, 255], the token's range contains
// 0 and the dequantized values are within half a step of x; a constant
// row and an all-zero row do not divide by zero.
func TestQuantizeTokens(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 9))
	x := make([]float32, 3*50)
	for i := 0; i < 50; i++ {
		x[i] = float32(rng.NormFloat64() * 3)
		x[50+i] = 2.5
	}
	var a TokenU8
	QuantizeTokens(&a, x, 3, 50)
	if a.KP != 64 || len(a.U) != 3*64 {
		t.Fatalf("padded width %d, %d codes", a.KP, len(a.U))
	}
	for c := 0; c < 3; c++ {
		s, z := a.Scale[c], a.Zero[c]
		if !(s > 0) || z != float32(math.Round(float64(z))) || z < 0 || z > 255 {
			t.Fatalf("token %d: scale %g zero %g", c, s, z)
		}
		var sum int32
		for j := 0; j < 64; j++ {
			u := a.U[c*64+j]
			sum += int32(u)
			if j >= 50 {
				if u != 0 {
					t.Fatalf("token %d: padding code %d", c, u)
				}
				continue
			}
			if d := math.Abs(float64(s*(float32(u)-z) - x[c*50+j])); d > float64(s)/2*1.0001 {
				t.Fatalf("token %d, %d: %g dequantizes to %g (step %g)", c, j, x[c*50+j], s*(float32(u)-z), s)
			}
		}
		if sum != a.Sum[c] {
			t.Fatalf("token %d: code sum %d, stored %d", c, sum, a.Sum[c])
		}
	}
}

func BenchmarkGemmChannel(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, bits := range []int{4, 8} {
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
			w, _ := NewChannelInt(bits, codes, scale, rows, k)
			for _, n := range []int{1, 8, 32} {
				x := make([]float32, n*k)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				y := make([]float32, n*rows)
				var a TokenU8
				b.Run("int"+strconv.Itoa(bits)+"/4096x"+strconv.Itoa(k)+"/n="+strconv.Itoa(n), func(b *testing.B) {
					b.SetBytes(int64(len(w.W)))
					for i := 0; i < b.N; i++ {
						QuantizeTokens(&a, x, n, k)
						GemmChannel(w, &a, y)
					}
					b.ReportMetric(2*float64(rows)*float64(k)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
