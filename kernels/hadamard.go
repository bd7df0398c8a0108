package kernels

import (
	"fmt"
	"math"
	"sync"
)

// Hadamard transforms (QuaRot, SpinQuant: rotations that spread outlier
// channels before quantization). A Hadamard matrix of order n has entries
// ±1 and H Hᵀ = n I, so H/sqrt(n) is orthogonal. Sizes of the form
// n = m 2^k use H = H_m ⊗ H_{2^k}: H_{2^k} is Sylvester's (Walsh-Hadamard,
// entry (j, b) = (-1)^popcount(j&b)), applied by the in-place butterflies
// of the fast Walsh-Hadamard transform in O(n log n); H_m is a Paley
// matrix built from the quadratic residues mod a prime q (Paley I, q ≡ 3
// mod 4: order q+1; Paley II, q ≡ 1 mod 4: order 2(q+1)), applied as a
// dense m x m product over the 2^k-blocks.
//
// Row layout: element i*p + j of a row (p = 2^k) is position j of block i.
// Then (x (H_m ⊗ H_p))[a*p + b] = sum_i H_m[i,a] (x_i H_p)[b]: every block
// goes through the butterflies, then output block a is the ±1-weighted sum
// of the transformed blocks i, then everything is scaled by 1/sqrt(n).
//
// Rounding. The butterflies run stage by stage with the half-width h
// doubling from 1 (a+b, a-b); the mixing sums its m terms in block order i
// = 0..m-1 starting from zero, a ±1 coefficient changing only a sign
// (exact); the scale is one multiplication at the end. The AVX-512 kernel
// performs the same operations in the same order on every element, so it
// gives the Go loop's bits.

// Hadamard is the orthonormal transform x -> x H / sqrt(n) (row vectors)
// of size N, H = H_m ⊗ H_{2^k}; a block-diagonal one (NewBlockHadamard)
// is I_m ⊗ H_{2^k} / sqrt(2^k). It holds no per-call state: one value may
// be applied from several goroutines at once.
type Hadamard struct {
	N int
	m int // blocks (the order of H_m, or of the identity for a block-diagonal transform)
	p int // 2^k, the Walsh-Hadamard size
	// hm and hmT: H_m and its transpose, row-major m x m, ±1; nil for the
	// block-diagonal transform (no mixing between blocks).
	hm, hmT []float32
	scale   float32 // 1/sqrt(N), or 1/sqrt(p) for the block-diagonal transform
	name    string
	pool    sync.Pool // *[]float32: the mixing's scratch
}

// maxHadamardOrder bounds the dense factor H_m: its m x m product costs m
// additions per element where the butterflies cost log2(p), and its
// matrix is built in O(m^2) at construction.
const maxHadamardOrder = 1 << 12

// NewHadamard returns the transform of size n, or an error naming n (and
// the factorisations tried) when no construction is known: n = m 2^k with
// m = 1 or m of a Paley construction (m = q+1, q prime ≡ 3 mod 4; m =
// 2(q+1), q prime ≡ 1 mod 4). The smallest such m is used.
func NewHadamard(n int) (*Hadamard, error) {
	if n <= 0 {
		return nil, fmt.Errorf("kernels: Hadamard size %d: want a positive size", n)
	}
	p := n & -n // largest power of two dividing n
	odd := n / p
	var tried []string
	for m := odd; m <= n && m <= maxHadamardOrder; m *= 2 {
		if m == 1 {
			return newHadamard(n, 1, nil, fmt.Sprintf("Walsh-Hadamard %d", n)), nil
		}
		hm, how := paley(m)
		if hm != nil {
			return newHadamard(n, m, hm, fmt.Sprintf("%s x Walsh-Hadamard %d", how, n/m)), nil
		}
		tried = append(tried, fmt.Sprintf("%d x %d", m, n/m))
	}
	return nil, fmt.Errorf("kernels: no Hadamard matrix of size %d = %d x 2^%d is known here: tried %v (H_m needs m = q+1 with a prime q ≡ 3 mod 4, or m = 2(q+1) with a prime q ≡ 1 mod 4; NewBlockHadamard gives a block-diagonal transform of every size)",
		n, odd, log2(p), tried)
}

// HadamardSupported reports whether NewHadamard(n) succeeds.
func HadamardSupported(n int) bool {
	_, err := NewHadamard(n)
	return err == nil
}

// NewBlockHadamard returns the block-diagonal transform of size n: blocks
// of p = the largest power of two dividing n, each x -> x H_p / sqrt(p).
// It is orthogonal for every n but spreads a channel over only p others
// (for odd n it is the identity).
func NewBlockHadamard(n int) (*Hadamard, error) {
	if n <= 0 {
		return nil, fmt.Errorf("kernels: Hadamard size %d: want a positive size", n)
	}
	p := n & -n
	h := &Hadamard{N: n, m: n / p, p: p, scale: float32(1 / math.Sqrt(float64(p))),
		name: fmt.Sprintf("block-diagonal Walsh-Hadamard %d x %d", n/p, p)}
	return h, nil
}

func newHadamard(n, m int, hm []float32, name string) *Hadamard {
	h := &Hadamard{N: n, m: m, p: n / m, scale: float32(1 / math.Sqrt(float64(n))), name: name}
	if m > 1 {
		h.hm = hm
		h.hmT = make([]float32, m*m)
		for i := 0; i < m; i++ {
			for a := 0; a < m; a++ {
				h.hmT[a*m+i] = hm[i*m+a]
			}
		}
	}
	return h
}

func log2(p int) int {
	k := 0
	for p > 1 {
		p >>= 1
		k++
	}
	return k
}

// String says how the transform is built (for logs and errors).
func (h *Hadamard) String() string { return fmt.Sprintf("Hadamard %d (%s)", h.N, h.name) }

// Apply transforms every consecutive row of length N of x in place:
// row <- row H / sqrt(n). len(x) must be a multiple of N.
//
// Output block a of row H is sum_i H_m[i,a] z_i: its coefficients are
// column a of H_m, row a of H_mᵀ. The loops take the matrix whose row a
// holds them (coef): H_mᵀ for Apply, H_m for ApplyT.
func (h *Hadamard) Apply(x []float32) { h.apply(x, h.hmT) }

// ApplyT applies the transpose, which is the inverse: row <- row Hᵀ/sqrt(n).
func (h *Hadamard) ApplyT(x []float32) { h.apply(x, h.hm) }

// Apply64 is Apply in float64 (the Go loop; for folding into weights and
// for references).
func (h *Hadamard) Apply64(x []float64) { h.check(len(x)); hadamardRows(h, x, h.hmT, nil) }

// ApplyT64 is ApplyT in float64.
func (h *Hadamard) ApplyT64(x []float64) { h.check(len(x)); hadamardRows(h, x, h.hm, nil) }

func (h *Hadamard) check(n int) {
	if n%h.N != 0 {
		panic(fmt.Sprintf("kernels: Hadamard %d applied to %d values, not a whole number of rows", h.N, n))
	}
}

func (h *Hadamard) apply(x []float32, coef []float32) {
	h.check(len(x))
	rows := len(x) / h.N
	// at least 16K values per task
	grain := max(1, (1<<14)/h.N)
	run := func(lo, hi int) {
		y := x[lo*h.N : hi*h.N]
		if !hadamardSIMD(h, y, coef) {
			h.applyGo(y, coef)
		}
	}
	if Serial(rows, grain) {
		run(0, rows)
	} else {
		For(rows, grain, run)
	}
}

// applyGo is the reference loop (float32).
func (h *Hadamard) applyGo(x []float32, coef []float32) {
	var z []float32
	if coef != nil {
		c := h.scratch(h.N)
		defer h.pool.Put(c)
		z = *c
	}
	hadamardRows(h, x, coef, z)
}

// scratch returns at least n floats from h's pool; the caller puts them
// back.
func (h *Hadamard) scratch(n int) *[]float32 {
	c, _ := h.pool.Get().(*[]float32)
	if c == nil || len(*c) < n {
		s := make([]float32, n)
		c = &s
	}
	return c
}

// hadamardRows transforms the rows of x: the butterflies of every block,
// the mixing with coef (row a: output block a's coefficients; nil: none),
// then the scale. z is N values of scratch (allocated when nil).
func hadamardRows[T float32 | float64](h *Hadamard, x []T, coef []float32, z []T) {
	m, p := h.m, h.p
	if coef != nil && z == nil {
		z = make([]T, h.N)
	}
	scale := T(h.scale)
	if _, ok := any(x).([]float64); ok {
		// float64: the exact scale, not float32's rounding of it
		if h.hm == nil && m > 1 {
			scale = T(1 / math.Sqrt(float64(p)))
		} else {
			scale = T(1 / math.Sqrt(float64(h.N)))
		}
	}
	for r := 0; r+h.N <= len(x); r += h.N {
		row := x[r : r+h.N]
		for i := 0; i < m; i++ {
			wht(row[i*p : (i+1)*p])
		}
		if coef != nil {
			copy(z, row)
			for a := 0; a < m; a++ {
				out := row[a*p : (a+1)*p]
				clear(out)
				for i, c := range coef[a*m : (a+1)*m] {
					// ±1: the product is exact, so each element is the
					// sum of ±z_i in block order from +0, rounded once a
					// term
					c := T(c)
					for j, v := range z[i*p : (i+1)*p] {
						out[j] += c * v
					}
				}
			}
		}
		for i := range row {
			row[i] *= scale
		}
	}
}

// wht is the unnormalised fast Walsh-Hadamard transform of x (len a power
// of two) in place: x <- x H_p, stages of half-width h = 1, 2, 4, ...
func wht[T float32 | float64](x []T) {
	n := len(x)
	for h := 1; h < n; h *= 2 {
		for i := 0; i < n; i += 2 * h {
			a, b := x[i:i+h], x[i+h:i+2*h]
			for j := range a {
				u, v := a[j], b[j]
				a[j], b[j] = u+v, u-v
			}
		}
	}
}

// Matrix returns the n x n float64 matrix the transform applies
// (row-major, scale included): Apply(x) = x Matrix(), ApplyT(x) = x
// Matrix()ᵀ. It allocates n² values (1.6 GB at n = 14336): for tests and
// small sizes; fold into weights with Apply64 on their rows instead.
func (h *Hadamard) Matrix() []float64 {
	n, m, p := h.N, h.m, h.p
	scale := 1 / math.Sqrt(float64(n))
	if h.hm == nil && m > 1 {
		scale = 1 / math.Sqrt(float64(p))
	}
	out := make([]float64, n*n)
	for i := 0; i < m; i++ {
		for a := 0; a < m; a++ {
			var c float64
			switch {
			case h.hm != nil:
				c = float64(h.hm[i*m+a])
			case i == a:
				c = 1
			default:
				continue
			}
			for j := 0; j < p; j++ {
				for b := 0; b < p; b++ {
					s := c * scale
					if popcount(j&b)%2 == 1 {
						s = -s
					}
					out[(i*p+j)*n+a*p+b] = s
				}
			}
		}
	}
	return out
}

func popcount(v int) int {
	c := 0
	for ; v != 0; v &= v - 1 {
		c++
	}
	return c
}

// HadamardOrder returns a ±1 Hadamard matrix of order m (row-major m x m,
// H Hᵀ = m I) from a Paley construction and how it was built, or nil when
// m has none here. m = 1 and m = 2 are Sylvester's.
func HadamardOrder(m int) ([]float32, string) {
	switch m {
	case 1:
		return []float32{1}, "order 1"
	case 2:
		return []float32{1, 1, 1, -1}, "Sylvester 2"
	}
	return paley(m)
}

// paley returns a Hadamard matrix of order m by Paley's constructions, or
// nil. With χ the quadratic character of GF(q) (0 at 0, 1 on the nonzero
// squares, -1 elsewhere) and Q[x,y] = χ(y-x) the Jacobsthal matrix, the
// conference matrix C = [[0, 1ᵀ], [ε1, Q]] of order q+1 (ε = -1 for q ≡ 3
// mod 4, where Q is skew, and 1 for q ≡ 1 mod 4, where Q is symmetric)
// satisfies C Cᵀ = q I. Paley I (q ≡ 3 mod 4): H = I + C. Paley II (q ≡ 1
// mod 4): H = I ⊗ [[1,-1],[-1,-1]] + C ⊗ [[1,1],[1,-1]], order 2(q+1).
func paley(m int) ([]float32, string) {
	if m < 4 || m%4 != 0 || m > maxHadamardOrder {
		return nil, ""
	}
	if q := m - 1; q%4 == 3 && isPrime(q) {
		c := conference(q)
		h := make([]float32, m*m)
		for i := range h {
			h[i] = float32(c[i])
		}
		for i := 0; i < m; i++ {
			h[i*m+i] += 1
		}
		return h, fmt.Sprintf("Paley I %d (q=%d)", m, q)
	}
	if q := m/2 - 1; q%4 == 1 && isPrime(q) {
		c, o := conference(q), q+1
		h := make([]float32, m*m)
		for i := 0; i < o; i++ {
			for j := 0; j < o; j++ {
				// the 2x2 block of (i, j)
				var b [4]float32
				if i == j {
					b = [4]float32{1, -1, -1, -1}
				} else {
					s := float32(c[i*o+j])
					b = [4]float32{s, s, s, -s}
				}
				h[(2*i)*m+2*j], h[(2*i)*m+2*j+1] = b[0], b[1]
				h[(2*i+1)*m+2*j], h[(2*i+1)*m+2*j+1] = b[2], b[3]
			}
		}
		return h, fmt.Sprintf("Paley II %d (q=%d)", m, q)
	}
	return nil, ""
}

// conference returns the (q+1) x (q+1) conference matrix of the prime q
// (see paley), row-major.
func conference(q int) []int8 {
	chi := make([]int8, q) // quadratic character
	for x := range chi {
		chi[x] = -1
	}
	chi[0] = 0
	for x := 1; x < q; x++ {
		chi[x*x%q] = 1
	}
	eps := int8(1)
	if q%4 == 3 {
		eps = -1
	}
	o := q + 1
	c := make([]int8, o*o)
	for j := 1; j < o; j++ {
		c[j] = 1
		c[j*o] = eps
	}
	for x := 0; x < q; x++ {
		for y := 0; y < q; y++ {
			c[(x+1)*o+y+1] = chi[((y-x)%q+q)%q]
		}
	}
	return c
}

func isPrime(q int) bool {
	if q < 2 {
		return false
	}
	for d := 2; d*d <= q; d++ {
		if q%d == 0 {
			return false
		}
	}
	return true
}
