package kernels

import "fmt"

// Sparse is a matrix's few kept values (GWQ's fp16 outliers) in
// compressed-row form, added to a dense quantized product whose codes are
// 0 there: y = W_dense x + S x.
type Sparse struct {
	Rows, Cols int
	RowPtr     []int32 // Rows+1 offsets into Col and Val
	Col        []int32
	Val        []float32
}

// NewSparse builds the rows x cols matrix holding val at the flat
// indices idx (increasing).
func NewSparse(rows, cols int, idx []int32, val []float32) (*Sparse, error) {
	if len(idx) != len(val) {
		return nil, fmt.Errorf("sparse: %d indices, %d values", len(idx), len(val))
	}
	s := &Sparse{Rows: rows, Cols: cols, RowPtr: make([]int32, rows+1), Col: make([]int32, len(idx)), Val: append([]float32(nil), val...)}
	for k, i := range idx {
		if i < 0 || int(i) >= rows*cols || (k > 0 && i <= idx[k-1]) {
			return nil, fmt.Errorf("sparse: index %d at %d: outside %d x %d or not increasing", i, k, rows, cols)
		}
		s.RowPtr[int(i)/cols+1]++
		s.Col[k] = i % int32(cols)
	}
	for r := 0; r < rows; r++ {
		s.RowPtr[r+1] += s.RowPtr[r]
	}
	return s, nil
}

// AddTo adds S x_c to y[c*Rows:] for the n rows x_c of x (Cols values each).
func (s *Sparse) AddTo(y, x []float32, n int) {
	if len(x) < n*s.Cols || len(y) < n*s.Rows {
		panic(fmt.Sprintf("kernels: Sparse.AddTo: %d x %d, %d inputs of %d values, %d outputs", s.Rows, s.Cols, n, len(x)/max(n, 1), len(y)))
	}
	for c := 0; c < n; c++ {
		xc, yc := x[c*s.Cols:(c+1)*s.Cols], y[c*s.Rows:(c+1)*s.Rows]
		for r := 0; r < s.Rows; r++ {
			var acc float32
			for k := s.RowPtr[r]; k < s.RowPtr[r+1]; k++ {
				acc += s.Val[k] * xc[s.Col[k]]
			}
			yc[r] += acc
		}
	}
}

// Dequantize writes token c's values s_x*(u - z) into x (K values).
func (a *TokenU8) Dequantize(x []float32, c int) {
	u := a.U[c*a.KP:]
	for j := range x[:a.K] {
		x[j] = a.Scale[c] * (float32(u[j]) - a.Zero[c])
	}
}
