package kernels

// Set is one implementation of every elementwise kernel. Arguments follow
// llm.c's convention: outputs first, shapes as lengths; backward kernels
// accumulate (+=) into their gradient outputs.
type Set struct {
	Name string
	// Exp replaces x with exp(x).
	Exp func(x []float32)
	// CausalSoftmax: see Generic's documentation in generic.go.
	CausalSoftmax func(s []float32, rows, i0, n, ld int, scale float32, lse []float32)
	SoftmaxBwd    func(p, dp []float32, rows, n, ld int, scale float32)
	CrossEntropy  func(x []float32, t []int32, dx, loss []float32, rows, n int, gscale float32)
	RMSNormFwd    func(y, rstd, x, w []float32, rows, d int, eps float32)
	RMSNormBwd    func(dx, dw, dy, x, w, rstd []float32, rows, d int)
	SwiGLUFwd     func(y, g, u []float32)
	SwiGLUBwd     func(dg, du, dy, g, u []float32, acc bool)
	SiLUFwd       func(y, x []float32)
	SiLUBwd       func(dx, dy, x []float32)
	RoPE          func(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd, ldy, ldx int, sign float32, acc bool)
	Axpy          func(y, x []float32, a float32)
	Add           func(y, a, b []float32)
	Scale         func(y, x []float32, a float32)
	// AdamW: see Generic's documentation.
	AdamW func(p, g, m, v []float32, lr, b1, b2, eps, wd, bc1, bc2 float32)
	SumSq func(x []float32) float64
}

// Active is the set the ops use: the fastest this CPU runs, chosen at start.
var Active = Generic

// Variants returns every set this machine can run, Generic first.
func Variants() []Set {
	v := []Set{Generic}
	return append(v, simdVariants()...)
}

// Use makes s the active set (for benchmarks and for forcing the portable
// path); it is meant to be called by main before any training starts.
func Use(s Set) { Active = s }

func init() {
	v := Variants()
	Active = v[len(v)-1]
}
