package autograd

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"qat/kernels"
)

// hadamardProduct is x M for the rows of x, M = h.Matrix() (float64,
// from the Kronecker definition rather than the butterflies).
func hadamardProduct(h *kernels.Hadamard, x []float64, transpose bool) []float64 {
	n := h.N
	M := h.Matrix()
	y := make([]float64, len(x))
	for r := 0; r < len(x)/n; r++ {
		for c := 0; c < n; c++ {
			var s float64
			for k := 0; k < n; k++ {
				e := M[k*n+c]
				if transpose {
					e = M[c*n+k]
				}
				s += x[r*n+k] * e
			}
			y[r*n+c] = s
		}
	}
	return y
}

// TestHadamardAgainstFloat64: the op's values against x H/sqrt(n) in
// float64 and its gradient against finite differences, through the Ops
// interface; sizes with a non-symmetric H_m (Paley I: 12, 44x4), where a
// backward that applied H instead of Hᵀ fails, a symmetric one (Paley II:
// 36), Walsh-Hadamard alone and the block-diagonal transform; an input
// used twice and a temporary input (its gradient borrowed); many rows
// split over goroutines.
func TestHadamardAgainstFloat64(t *testing.T) {
	forEachKernelSet(t, func(t *testing.T) {
		defer kernels.SetThreads(1)
		kernels.SetThreads(2)
		rng := rand.New(rand.NewPCG(21, 22))
		var cs []gradCase
		for _, sh := range [][3]int{{1, 1, 12}, {2, 3, 12}, {2, 2, 36}, {3, 1, 44 * 4}, {1, 5, 16}, {4, 1, 1}, {2, 1, 24}} {
			b, rows, n := sh[0], sh[1], sh[2]
			h, err := kernels.NewHadamard(n)
			if n == 24 {
				h, err = kernels.NewBlockHadamard(n) // 3 blocks of 8
			}
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, gradCase{
				name:   fmt.Sprintf("Hadamard %dx%dx%d (%v)", b, rows, n, h),
				inputs: []*Var{randVar(rng, 1, b, rows, n)},
				run:    func(t *Tape, v []*Var) *Var { var o Ops = t; return o.Hadamard(v[0], h) },
				ref:    func(v [][]float64) []float64 { return hadamardProduct(h, v[0], false) },
				vtol:   1e-6, gtol: 1e-5,
			})
		}
		h12, _ := kernels.NewHadamard(12)
		cs = append(cs, gradCase{
			name:   "Hadamard(x) + x",
			inputs: []*Var{randVar(rng, 1, 3, 12)},
			run:    func(t *Tape, v []*Var) *Var { return t.Add(t.Hadamard(v[0], h12), v[0]) },
			ref: func(v [][]float64) []float64 {
				y := hadamardProduct(h12, v[0], false)
				for i := range y {
					y[i] += v[0][i]
				}
				return y
			},
			vtol: 1e-6, gtol: 1e-5,
		}, gradCase{
			name:   "Hadamard of a temporary, twice",
			inputs: []*Var{randVar(rng, 1, 3, 12)},
			run: func(t *Tape, v []*Var) *Var {
				return t.Hadamard(t.Hadamard(t.Scale(v[0], 2), h12), h12)
			},
			ref: func(v [][]float64) []float64 {
				y := hadamardProduct(h12, hadamardProduct(h12, v[0], false), false)
				for i := range y {
					y[i] *= 2
				}
				return y
			},
			vtol: 1e-6, gtol: 1e-5,
		})
		// 600 rows: Apply splits them over the two goroutines; the
		// reference is kernels' float64 transform (Matrix is O(n²) a row).
		h64, _ := kernels.NewHadamard(64)
		cs = append(cs, gradCase{
			name:   "Hadamard 600x64",
			inputs: []*Var{randVar(rng, 1, 600, 64)},
			run:    func(t *Tape, v []*Var) *Var { return t.Hadamard(v[0], h64) },
			ref: func(v [][]float64) []float64 {
				y := append([]float64(nil), v[0]...)
				h64.Apply64(y)
				return y
			},
			vtol: 1e-6, gtol: 1e-5,
		})
		for _, c := range cs {
			c.check(t, rng)
		}
	})
}

// TestHadamardShape: a last dimension other than the transform's size
// panics naming both.
func TestHadamardShape(t *testing.T) {
	h, _ := kernels.NewHadamard(16)
	defer func() {
		if r := recover(); r == nil || fmt.Sprint(r) != "autograd: Hadamard: shape [2 12], transform of size 16" {
			t.Fatalf("panic %v", r)
		}
	}()
	NewTape().Hadamard(NewParam(2, 12), h)
}
