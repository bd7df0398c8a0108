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
// matrix built from the quadratic residues of GF(q), q an odd prime or its
// square or cube (Paley I, q ≡ 3 mod 4: order q+1; Paley II, q ≡ 1 mod 4:
// order 2(q+1)), applied as a dense m x m product over the 2^k-blocks.
//
// Row layout: element i*p + j of a row (p = 2^k) is position j of block i.
// Then (x (H_m ⊗ H_p))[a*p + b] = sum_i H_m[i,a] (x_i H_p)[b]: every block
// goes through the butterflies, then output block a is the ±1-weighted sum
// of the transformed blocks i, then everything is scaled by 1/sqrt(n).
//
// Rounding. The butterflies run stage by stage with the half-width h
// doubling from 1 (a+b, a-b); the mixing sums its m terms in block order i
// = 0..m-1 starting from zero, a ±1 coefficient changing only a sign
// (exact); the scale is one multiplication at the end. The AVX-512 and
// AVX2 kernels (hadamard.c) perform the same operations in the same order
// on every element, so they give the Go loop's bits.

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

// maxHadamardOrder bounds the dense factor H_m: its product costs m
// additions per element where the butterflies cost log2(p) (at m = 1024
// the transform costs as much as a 1024-wide linear layer), and its two
// m x m float32 matrices take 8m² bytes.
const maxHadamardOrder = 1 << 10

// NewHadamard returns the transform of size n, or an error naming n (and
// the factorisations tried) when no construction is known: n = m 2^k with
// m = 1 or m of a Paley construction (m = q+1, q ≡ 3 mod 4; m = 2(q+1),
// q ≡ 1 mod 4; q an odd prime or its square or cube; m <= 1024). The
// smallest such m is used: the mixing costs m additions per element
// (Factors reports it).
func NewHadamard(n int) (*Hadamard, error) {
	m, err := hadamardFactor(n)
	if err != nil {
		return nil, err
	}
	if m == 1 {
		return newHadamard(n, 1, nil, fmt.Sprintf("Walsh-Hadamard %d", n)), nil
	}
	hm, how := paley(m)
	return newHadamard(n, m, hm, fmt.Sprintf("%s x Walsh-Hadamard %d", how, n/m)), nil
}

// hadamardFactor returns the order m of NewHadamard(n)'s dense factor
// without building it.
func hadamardFactor(n int) (int, error) {
	if n <= 0 {
		return 0, fmt.Errorf("kernels: Hadamard size %d: want a positive size", n)
	}
	p := n & -n // largest power of two dividing n
	odd := n / p
	var tried []string
	for m := odd; m <= n && m <= maxHadamardOrder; m *= 2 {
		if m == 1 || paleyQ(m) != 0 {
			return m, nil
		}
		tried = append(tried, fmt.Sprintf("%d x %d", m, n/m))
	}
	return 0, fmt.Errorf("kernels: no Hadamard matrix of size %d = %d x 2^%d is known here: tried %v (H_m needs m = q+1 with q ≡ 3 mod 4, or m = 2(q+1) with q ≡ 1 mod 4, q an odd prime, its square or cube, m <= %d; NewBlockHadamard gives a block-diagonal transform of every size)",
		n, odd, log2(p), tried, maxHadamardOrder)
}

// HadamardSupported reports whether NewHadamard(n) succeeds (without
// building the transform).
func HadamardSupported(n int) bool {
	_, err := hadamardFactor(n)
	return err == nil
}

// Factors returns the transform's m and p: m blocks of p = 2^k, mixed by
// H_m (m = 1: Walsh-Hadamard alone) or not at all (the block-diagonal
// transform). The mixing costs m additions per element, the butterflies
// log2(p).
func (h *Hadamard) Factors() (m, p int) { return h.m, h.p }

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
	q := paleyQ(m)
	if q == 0 {
		return nil, ""
	}
	c, o := conference(q), q+1
	h := make([]float32, m*m)
	if q == m-1 {
		for i := range h {
			h[i] = float32(c[i])
		}
		for i := 0; i < m; i++ {
			h[i*m+i] += 1
		}
		return h, fmt.Sprintf("Paley I %d (q=%d)", m, q)
	}
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

// paleyQ returns the q of m's Paley construction (m-1 for Paley I, m/2-1
// for Paley II), 0 for none.
func paleyQ(m int) int {
	if m < 4 || m%4 != 0 || m > maxHadamardOrder {
		return 0
	}
	if q := m - 1; q%4 == 3 && newGF(q) != nil {
		return q
	}
	if q := m/2 - 1; q%4 == 1 && newGF(q) != nil {
		return q
	}
	return 0
}

// conference returns the (q+1) x (q+1) conference matrix of the odd
// prime power q (see paley), row-major.
func conference(q int) []int8 {
	f := newGF(q)
	chi := make([]int8, q) // quadratic character
	for x := range chi {
		chi[x] = -1
	}
	chi[0] = 0
	for x := 1; x < q; x++ {
		chi[f.mul(x, x)] = 1
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
			c[(x+1)*o+y+1] = chi[f.sub(y, x)]
		}
	}
	return c
}

// gf is the finite field GF(p^k), p an odd prime and k <= 3: an element is
// the polynomial of degree < k over GF(p) whose coefficients are its
// base-p digits (lowest first), products are taken modulo an irreducible
// monic polynomial of degree k. Degree 3 at most, because a polynomial of
// degree 2 or 3 is irreducible exactly when it has no root, which is all
// the search for one checks. (Prime powers give Paley matrices the primes
// do not: 344 = 7^3 + 1, so 1376 = 344 x 4; 52 = 2(5^2 + 1).)
type gf struct {
	p, k int
	poly []int // the modulus' coefficients below x^k
}

// newGF returns GF(q), or nil when q is not p^k with p an odd prime and
// k <= 3.
func newGF(q int) *gf {
	for p := 3; p <= q; p += 2 {
		if q%p != 0 {
			continue
		}
		if !isPrime(p) {
			return nil
		}
		k, r := 0, q
		for r%p == 0 {
			r /= p
			k++
		}
		if r != 1 || k > 3 {
			return nil
		}
		f := &gf{p: p, k: k}
		if k > 1 {
			f.poly = irreducible(p, k)
		}
		return f
	}
	return nil
}

// irreducible returns the first monic polynomial of degree k (2 or 3)
// over GF(p) with no root, by its coefficients below x^k.
func irreducible(p, k int) []int {
	c := make([]int, k)
	for {
		root := false
		for x := 0; x < p && !root; x++ {
			v := 1 // Horner: x^k + c[k-1] x^(k-1) + ... + c[0]
			for i := k - 1; i >= 0; i-- {
				v = (v*x + c[i]) % p
			}
			root = v == 0
		}
		if !root {
			return c
		}
		for i := 0; ; i++ { // next coefficients, counting base p
			c[i]++
			if c[i] < p {
				break
			}
			c[i] = 0
		}
	}
}

func (f *gf) digits(x int) [3]int {
	var d [3]int
	for i := 0; i < f.k; i++ {
		d[i], x = x%f.p, x/f.p
	}
	return d
}

func (f *gf) value(d [3]int) int {
	x := 0
	for i := f.k - 1; i >= 0; i-- {
		x = x*f.p + d[i]
	}
	return x
}

// sub returns x - y.
func (f *gf) sub(x, y int) int {
	dx, dy := f.digits(x), f.digits(y)
	for i := 0; i < f.k; i++ {
		dx[i] = (dx[i] - dy[i] + f.p) % f.p
	}
	return f.value(dx)
}

// mul returns x y.
func (f *gf) mul(x, y int) int {
	if f.k == 1 {
		return x * y % f.p
	}
	dx, dy := f.digits(x), f.digits(y)
	var prod [5]int // degree < 2k-1 <= 5
	for i := 0; i < f.k; i++ {
		for j := 0; j < f.k; j++ {
			prod[i+j] = (prod[i+j] + dx[i]*dy[j]) % f.p
		}
	}
	// reduce: x^k = -poly(x)
	for d := 2*f.k - 2; d >= f.k; d-- {
		c := prod[d]
		prod[d] = 0
		for i := 0; i < f.k; i++ {
			prod[d-f.k+i] = (prod[d-f.k+i] + (f.p-c)*f.poly[i]) % f.p
		}
	}
	return f.value([3]int{prod[0], prod[1], prod[2]})
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
