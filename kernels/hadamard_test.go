package kernels

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// Orders the rotation papers use (QuaRot ships matrices of 12, 20, 28,
// 36, 40, 44, 52, 60, 108, 140, 156 and 172), 312 = 311 + 1 and 344 = 7^3
// + 1; each must come out of a Paley construction here. 40 = 2 x 20 needs
// none of its own (NewHadamard puts the 2 into the Walsh-Hadamard part);
// 156 = 4 x 39 and 172 = 4 x 43 have no Paley matrix (QuaRot's are of
// Williamson type), but 312 and 344 have, so sizes 39 x 2^k and 43 x 2^k
// are supported from k = 3 (1376, Llama 2's 11008).
var wantOrders = []int{1, 2, 4, 8, 12, 20, 28, 36, 44, 52, 60, 108, 140, 148, 312, 344}

// TestHadamardOrders: every order HadamardOrder builds up to 256, and
// those of wantOrders, is a ±1 matrix with H Hᵀ = m I exactly (integer
// arithmetic); the orders the papers use are among them.
func TestHadamardOrders(t *testing.T) {
	built := map[int]string{}
	orders := append([]int(nil), wantOrders...)
	for m := 1; m <= 256; m++ {
		orders = append(orders, m)
	}
	for _, m := range orders {
		if _, ok := built[m]; ok {
			continue
		}
		h, how := HadamardOrder(m)
		if h == nil {
			continue
		}
		built[m] = how
		if len(h) != m*m {
			t.Fatalf("order %d (%s): %d entries", m, how, len(h))
		}
		for i, v := range h {
			if v != 1 && v != -1 {
				t.Fatalf("order %d (%s): entry %d is %g", m, how, i, v)
			}
		}
		for i := 0; i < m; i++ {
			for j := 0; j < m; j++ {
				var s int
				for k := 0; k < m; k++ {
					s += int(h[i*m+k]) * int(h[j*m+k])
				}
				want := 0
				if i == j {
					want = m
				}
				if s != want {
					t.Fatalf("order %d (%s): (H Hᵀ)[%d,%d] = %d, want %d", m, how, i, j, s, want)
				}
			}
		}
	}
	for _, m := range wantOrders {
		if _, ok := built[m]; !ok {
			t.Errorf("no Hadamard matrix of order %d", m)
		}
	}
	t.Logf("%d orders: %v", len(built), built)
}

// hadamardRef is x H / sqrt(n) (or x Hᵀ) in float64 from the definition
// H = H_m ⊗ H_p, H_p[j,b] = (-1)^popcount(j&b), summed over every input
// (O(n) an output: no butterflies, no blocked mixing), at the outputs
// cols; hm nil: the block-diagonal transform.
func hadamardRef(h *Hadamard, x []float64, transpose bool, cols []int) []float64 {
	n, m, p := h.N, h.m, h.p
	hm := h.hm
	scale := 1 / math.Sqrt(float64(n))
	if hm == nil {
		scale = 1 / math.Sqrt(float64(p))
	}
	y := make([]float64, n)
	for _, c := range cols {
		a, b := c/p, c%p
		var s float64
		for r := 0; r < n; r++ {
			i, j := r/p, r%p
			var e float64
			switch {
			case hm == nil && i != a:
				continue
			case hm == nil:
				e = 1
			case transpose:
				e = float64(hm[a*m+i])
			default:
				e = float64(hm[i*m+a])
			}
			if bits.OnesCount(uint(j&b))&1 == 1 {
				e = -e
			}
			s += e * x[r]
		}
		y[c] = s * scale
	}
	return y
}

// hadamardBound is a first-order bound on the float32 transform's error
// at any output: each output is a sum of the n inputs (±) computed through
// log2(p) butterfly additions and m-1 mixing additions, then one scaling,
// each rounding by at most u = 2^-24 relative, so |err| <= (d+1) u
// sum|x| / sqrt(n) with d the additions on a path.
func hadamardBound(h *Hadamard, x []float32) float64 {
	var l1 float64
	for _, v := range x {
		l1 += math.Abs(float64(v))
	}
	d := float64(log2(h.p) + h.m - 1 + 1)
	n := h.N
	if h.hm == nil {
		n, d = h.p, float64(log2(h.p)+1)
	}
	return 1.01 * d * 0x1p-24 * l1 / math.Sqrt(float64(n))
}

func hadamardSizes() []int {
	var s []int
	for k := 0; k <= 14; k++ {
		s = append(s, 1<<k)
	}
	return append(s, 12, 44*16, 12*64, 20*8, 28*512, 44*128, 36*4, 60*2, 108*8, 148*2, 140*4, 52, 344*4, 344*32)
}

func randRows(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// TestHadamardApply: Apply and ApplyT against the float64 definition
// within the rounding bound, ApplyT(Apply(x)) = x, norms kept, Apply64 to
// float64 rounding; for every size the rotations use, on one row of
// Gaussian values with a few outliers.
func TestHadamardApply(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range hadamardSizes() {
		h, err := NewHadamard(n)
		if err != nil {
			t.Fatalf("NewHadamard(%d): %v", n, err)
		}
		if m, p := h.Factors(); h.N != n || m*p != n || !HadamardSupported(n) {
			t.Fatalf("NewHadamard(%d): N %d, Factors %d x %d, HadamardSupported %v", n, h.N, m, p, HadamardSupported(n))
		}
		x := randRows(rng, n)
		x[rng.IntN(n)] = 40 // an outlier channel
		checkHadamard(t, h, x)
	}
}

// checkHadamard checks h on x with the Go loop and with the SIMD kernel.
func checkHadamard(t *testing.T, h *Hadamard, x []float32) {
	t.Helper()
	saved := useSIMD
	defer func() { useSIMD = saved }()
	x64 := to64(x)
	// every output up to 2048, else 512 of them at random (the reference
	// costs O(n) an output)
	cols := make([]int, h.N)
	for i := range cols {
		cols[i] = i
	}
	if h.N > 2048 {
		rng := rand.New(rand.NewPCG(uint64(h.N), 1))
		rng.Shuffle(len(cols), func(a, b int) { cols[a], cols[b] = cols[b], cols[a] })
		cols = append(cols[:510], 0, h.N-1)
	}
	refs := [2][]float64{hadamardRef(h, x64, false, cols), hadamardRef(h, x64, true, cols)}
	for _, simd := range []bool{false, true} {
		useSIMD = simd
		checkHadamardOnce(t, h, x, refs, cols, simd)
	}
}

func checkHadamardOnce(t *testing.T, h *Hadamard, x []float32, refs [2][]float64, cols []int, simd bool) {
	t.Helper()
	name := fmt.Sprintf("%v simd %v", h, simd)
	x64 := to64(x)
	bound := hadamardBound(h, x)
	for ti, tr := range []bool{false, true} {
		want := refs[ti]
		y := append([]float32(nil), x...)
		if tr {
			h.ApplyT(y)
		} else {
			h.Apply(y)
		}
		var maxd, maxw float64
		for _, i := range cols {
			maxd = math.Max(maxd, math.Abs(float64(y[i])-want[i]))
			maxw = math.Max(maxw, math.Abs(want[i]))
		}
		if maxd > bound || maxd > 1e-6*maxw {
			t.Errorf("%s transpose %v: max diff %.3g from the float64 product (bound %.3g, 1e-6 of the largest %.3g)", name, tr, maxd, bound, 1e-6*maxw)
		}
		y64 := append([]float64(nil), x64...)
		if tr {
			h.ApplyT64(y64)
		} else {
			h.Apply64(y64)
		}
		for _, i := range cols {
			if d := math.Abs(y64[i] - want[i]); d > 1e-13*(1+maxw) {
				t.Fatalf("%s transpose %v: Apply64 [%d] = %g, float64 product %g", name, tr, i, y64[i], want[i])
			}
		}
	}
	// norms and the round trip
	y := append([]float32(nil), x...)
	h.Apply(y)
	var nx, ny float64
	for i := range x {
		nx += float64(x[i]) * float64(x[i])
		ny += float64(y[i]) * float64(y[i])
	}
	if math.Abs(ny/nx-1) > 1e-6 {
		t.Errorf("%s: |xH|²/|x|² = %.9f", name, ny/nx)
	}
	h.ApplyT(y)
	for i := range x {
		if d := math.Abs(float64(y[i] - x[i])); d > 2*bound {
			t.Fatalf("%s: ApplyT(Apply(x))[%d] = %g, x %g (bound %.3g)", name, i, y[i], x[i], 2*bound)
		}
	}
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// TestHadamardMatrix: Matrix() is orthogonal (M Mᵀ = I), Apply(x) = x M
// and ApplyT(x) = x Mᵀ, for small sizes of each construction and the
// block-diagonal transform.
func TestHadamardMatrix(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var hs []*Hadamard
	for _, n := range []int{1, 2, 8, 12, 24, 28, 44 * 4, 36, 128} {
		h, err := NewHadamard(n)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for _, n := range []int{1376 / 8, 6, 7, 96} {
		h, err := NewBlockHadamard(n)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		n := h.N
		M := h.Matrix()
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for k := 0; k < n; k++ {
					s += M[i*n+k] * M[j*n+k]
				}
				want := 0.0
				if i == j {
					want = 1
				}
				if math.Abs(s-want) > 1e-12 {
					t.Fatalf("%v: (M Mᵀ)[%d,%d] = %g", h, i, j, s)
				}
			}
		}
		x := randRows(rng, 3*n) // three rows at once
		for _, tr := range []bool{false, true} {
			y := append([]float32(nil), x...)
			if tr {
				h.ApplyT(y)
			} else {
				h.Apply(y)
			}
			for r := 0; r < 3; r++ {
				for c := 0; c < n; c++ {
					var s float64
					for k := 0; k < n; k++ {
						e := M[k*n+c]
						if tr {
							e = M[c*n+k]
						}
						s += float64(x[r*n+k]) * e
					}
					if d := math.Abs(float64(y[r*n+c]) - s); d > 1e-6*(1+math.Abs(s)) {
						t.Fatalf("%v transpose %v: row %d [%d] = %g, x M %g", h, tr, r, c, y[r*n+c], s)
					}
				}
			}
		}
	}
}

// TestHadamardUnsupported: a size with no construction is refused, naming
// the size and the factorisations tried, and the block-diagonal transform
// takes it.
func TestHadamardUnsupported(t *testing.T) {
	for _, n := range []int{172, 156, 6, 0, -4} {
		_, err := NewHadamard(n)
		if err == nil {
			t.Fatalf("NewHadamard(%d) succeeded", n)
		}
		if !strings.Contains(err.Error(), fmt.Sprint(n)) {
			t.Errorf("NewHadamard(%d): %v does not name the size", n, err)
		}
		if HadamardSupported(n) {
			t.Errorf("HadamardSupported(%d)", n)
		}
	}
	_, err := NewHadamard(172)
	if !strings.Contains(err.Error(), "172 = 43 x 2^2") || !strings.Contains(err.Error(), "172 x 1") {
		t.Errorf("NewHadamard(172): %v does not name 43 x 2^2 and 172 x 1", err)
	}
	for _, c := range [][3]int{{172, 43, 4}, {1376, 43, 32}} {
		h, err := NewBlockHadamard(c[0])
		if err != nil {
			t.Fatal(err)
		}
		if h.m != c[1] || h.p != c[2] {
			t.Fatalf("NewBlockHadamard(%d): %d blocks of %d", c[0], h.m, h.p)
		}
		checkHadamard(t, h, randRows(rand.New(rand.NewPCG(5, 6)), c[0]))
	}
}

// TestHadamardRows: many rows, split over two goroutines, give each row's
// own transform.
func TestHadamardRows(t *testing.T) {
	defer SetThreads(Threads())
	SetThreads(2)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{64, 704, 768} {
		h, err := NewHadamard(n)
		if err != nil {
			t.Fatal(err)
		}
		rows := 3 * (1 << 14) / n
		x := randRows(rng, rows*n)
		y := append([]float32(nil), x...)
		h.Apply(y)
		for r := 0; r < rows; r++ {
			one := append([]float32(nil), x[r*n:(r+1)*n]...)
			h.applyGo(one, h.hmT) // Apply's coefficients
			for i := range one {
				if one[i] != y[r*n+i] {
					t.Fatalf("%v: row %d of %d [%d] = %g, alone %g", h, r, rows, i, y[r*n+i], one[i])
				}
			}
		}
	}
}

// TestHadamardSIMD: each kernel this CPU runs (AVX-512, AVX2) gives the
// Go loop's bits (same operations in the same order: butterflies stage by
// stage, mixing in block order by exact ±1 products, then the scale), for
// every size, both directions and several rows.
func TestHadamardSIMD(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	ran := map[int]int{}
	sizes := append(hadamardSizes(), 172, 96, 3*16, 12*8)
	for _, n := range sizes {
		for _, block := range []bool{false, true} {
			var h *Hadamard
			var err error
			if block {
				h, err = NewBlockHadamard(n)
			} else {
				h, err = NewHadamard(n)
			}
			if err != nil {
				continue // 172, 96: only the block-diagonal
			}
			for _, coef := range [][]float32{h.hmT, h.hm} {
				x := randRows(rng, 3*n)
				want := append([]float32(nil), x...)
				h.applyGo(want, coef)
				for isa := 1; isa <= hadamardISA; isa++ {
					y := append([]float32(nil), x...)
					if !hadamardISASIMD(isa, h, y, coef) {
						continue
					}
					ran[isa]++
					for i := range y {
						if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%v: isa %d [%d] = %g, Go %g", h, isa, i, y[i], want[i])
						}
					}
				}
			}
		}
	}
	t.Logf("SIMD comparisons by isa (1 AVX2, 2 AVX-512): %v; in use: %s", ran, hadamardKernel())
}

// BenchmarkHadamard: ns/row and GB/s (the rows' bytes) of the transform
// (H_m mixing included) by the Go loop and each kernel, beside a copy of
// the same bytes.
func BenchmarkHadamard(b *testing.B) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{704, 4096, 14336} {
		h, err := NewHadamard(n)
		if err != nil {
			b.Fatal(err)
		}
		for _, rows := range []int{1, 64} {
			x := randRows(rng, rows*n)
			dst := make([]float32, rows*n)
			b.Run(fmt.Sprintf("n=%d/rows=%d/copy", n, rows), func(b *testing.B) {
				b.SetBytes(int64(4 * rows * n))
				for b.Loop() {
					copy(dst, x)
				}
			})
			// the Go loop, then each kernel this CPU runs, on one goroutine
			for isa := 0; isa <= hadamardISA; isa++ {
				b.Run(fmt.Sprintf("n=%d/rows=%d/%s", n, rows, [...]string{"go", "avx2", "avx512"}[isa]), func(b *testing.B) {
					b.SetBytes(int64(4 * rows * n))
					for b.Loop() {
						if isa == 0 || !hadamardISASIMD(isa, h, x, h.hmT) {
							h.applyGo(x, h.hmT)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
				})
			}
		}
	}
}
