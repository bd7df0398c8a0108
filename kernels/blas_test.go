package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/cpu"
)

func naiveGemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float64 {
	out := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for l := 0; l < k; l++ {
				var av, bv float32
				if tA {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if tB {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			out[i*n+j] = float64(alpha)*s + float64(beta)*float64(c[i*ldc+j])
		}
	}
	return out
}

func randSlice(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// TestSgemm checks every transpose combination, padded strides, alpha/beta
// and the split over threads against a float64 triple loop.
func TestSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, th := range []int{1, 2} {
		SetThreads(th)
		for _, sz := range [][3]int{{1, 1, 1}, {3, 5, 7}, {33, 17, 9}, {130, 70, 65}, {8, 300, 40}} {
			m, n, k := sz[0], sz[1], sz[2]
			for _, tA := range []bool{false, true} {
				for _, tB := range []bool{false, true} {
					ar, ac, br, bc := m, k, k, n
					if tA {
						ar, ac = k, m
					}
					if tB {
						br, bc = n, k
					}
					lda, ldb, ldc := ac+3, bc+1, n+2
					a, b, c := randSlice(rng, ar*lda), randSlice(rng, br*ldb), randSlice(rng, m*ldc)
					want := naiveGemm(tA, tB, m, n, k, 0.5, a, lda, b, ldb, -1.5, c, ldc)
					Sgemm(tA, tB, m, n, k, 0.5, a, lda, b, ldb, -1.5, c, ldc)
					var worst float64
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							worst = math.Max(worst, math.Abs(float64(c[i*ldc+j])-want[i*n+j]))
						}
					}
					if worst > 1e-4*float64(k+1) {
						t.Errorf("threads %d %dx%dx%d tA=%v tB=%v: max diff %g", th, m, n, k, tA, tB, worst)
					}
				}
			}
		}
	}
	SetThreads(1)
}

// BenchmarkSgemm runs the model's matmul shapes (tiny and small, forward
// and both backward products) through Sgemm and, as the machine's limit,
// through the backend called directly on one goroutine.
func BenchmarkSgemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := []struct {
		name    string
		tA, tB  bool
		m, n, k int
	}{
		{"tiny-fwd-qkvo", false, true, 1024, 256, 256},
		{"tiny-fwd-ffn", false, true, 1024, 704, 256},
		{"tiny-dW-ffn", true, false, 704, 256, 1024},
		{"tiny-dx-ffn", false, false, 1024, 256, 704},
		{"tiny-head", false, true, 1024, 4096, 256},
		{"tiny-dW-head", true, false, 4096, 256, 1024},
		{"small-fwd-ffn", false, true, 2048, 1376, 512},
		{"small-dW-ffn", true, false, 1376, 512, 2048},
		{"small-head", false, true, 2048, 8192, 512},
		{"square-1024", false, false, 1024, 1024, 1024},
	}
	for _, s := range shapes {
		a, bb, c := randSlice(rng, s.m*s.k), randSlice(rng, s.k*s.n), make([]float32, s.m*s.n)
		lda, ldb := s.k, s.n
		if s.tA {
			lda = s.m
		}
		if s.tB {
			ldb = s.k
		}
		flops := 2 * float64(s.m*s.n*s.k)
		for _, th := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/%s/threads=%d", s.name, Backend, th), func(b *testing.B) {
				SetThreads(th)
				defer SetThreads(1)
				for i := 0; i < b.N; i++ {
					Sgemm(s.tA, s.tB, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n)
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
		b.Run(fmt.Sprintf("%s/%s-direct/threads=1", s.name, Backend), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				sgemm1(s.tA, s.tB, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestCoreName: OpenBLAS runs the kernels OPENBLAS_CORETYPE names, or,
// unset (as make test and make run leave it), an AVX-512 core on an
// AVX-512 CPU: the preset Haswell halves sgemm there.
func TestCoreName(t *testing.T) {
	core := CoreName()
	t.Logf("sgemm backend %s, core %s", Backend, core)
	if Backend != "openblas" {
		if core != "pure-Go (gonum)" {
			t.Errorf("backend %s reports core %q", Backend, core)
		}
		return
	}
	if want := os.Getenv("OPENBLAS_CORETYPE"); want != "" {
		if !strings.EqualFold(core, want) {
			t.Errorf("OPENBLAS_CORETYPE=%s but OpenBLAS runs %s", want, core)
		}
		return
	}
	if cpu.X86.HasAVX512F {
		switch strings.ToLower(core) {
		case "skylakex", "cooperlake", "sapphirerapids":
		default:
			t.Errorf("AVX-512 CPU, OPENBLAS_CORETYPE unset, but OpenBLAS runs %s", core)
		}
	}
}

// TestForChunksPanic: a panic in a parallel chunk reaches the caller's
// goroutine (where a recover can turn it into an error report) instead of
// ending the process from a worker.
func TestForChunksPanic(t *testing.T) {
	SetThreads(2)
	defer SetThreads(1)
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(fmt.Sprint(r), "boom") {
			t.Fatalf("recovered %v, want the chunk's panic", r)
		}
	}()
	ForChunks(1<<16, 1, func(chunk, lo, hi int) { panic(fmt.Sprintf("boom in chunk %d", chunk)) })
	t.Fatal("ForChunks returned")
}
