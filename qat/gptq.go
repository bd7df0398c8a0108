package qat

import (
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/gonum/mat"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

// GPTQConfig are GPTQ's settings (arXiv 2210.17323; defaults of the
// reference and of QQQ: damp 0.01, blocks of 128, act-order on, static
// groups when both groups and act-order are on).
type GPTQConfig struct {
	Bits int
	// Restricted drops the grid's most negative value (Spec.Restricted).
	Restricted bool
	// Group is the inputs per scale; 0: one scale per output channel.
	Group     int
	Damp      float64
	BlockSize int
	ActOrder  bool
	// Keep marks weights (flat, rows x cols) kept in fp16 beside the
	// quantized rest (GWQ's outliers): their code is 0, their value the
	// fp16 rounding of the compensated weight, and they are left out of
	// the scales' ranges. nil: none.
	Keep []bool
}

// DefaultGPTQ is the reference configuration at 4 bits per channel.
var DefaultGPTQ = GPTQConfig{Bits: 4, Damp: 0.01, BlockSize: 128, ActOrder: true}

// Hessian accumulates H = 2/N sum x x^T over the N input rows a linear
// sees (float64, cols x cols), as GPTQ's add_batch does, without keeping
// the inputs.
type Hessian struct {
	H       []float64
	Cols    int
	N       int
	scratch []float32
}

// NewHessian returns an empty accumulator for inputs of cols values.
func NewHessian(cols int) *Hessian { return &Hessian{H: make([]float64, cols*cols), Cols: cols} }

// Add accumulates rows input rows (row-major, Cols values each).
func (h *Hessian) Add(x []float32, rows int) {
	if rows == 0 {
		return
	}
	// H <- H*N/(N+rows) + 2/(N+rows) X^T X, the running mean of the reference
	n := float64(h.N + rows)
	keep := float64(h.N) / n
	for i := range h.H {
		h.H[i] *= keep
	}
	c := h.Cols
	f := 2 / n
	// X^T X of this batch through sgemm in float32 (a batch is a few
	// thousand rows), accumulated in float64 across batches
	if cap(h.scratch) < c*c {
		h.scratch = make([]float32, c*c)
	}
	g := h.scratch[:c*c]
	kernels.Sgemm(true, false, c, c, rows, 1, x, c, x, c, 0, g, c)
	for i, v := range g {
		h.H[i] += f * float64(v)
	}
	h.N += rows
}

// full returns the symmetric matrix (made exactly symmetric from its
// upper triangle).
func (h *Hessian) full() []float64 {
	c := h.Cols
	out := append([]float64(nil), h.H...)
	for i := 0; i < c; i++ {
		for j := 0; j < i; j++ {
			out[i*c+j] = out[j*c+i]
		}
	}
	return out
}

// GPTQ quantizes w (rows x cols, row-major) column by column, each
// column's rounding error compensated on the columns not yet quantized
// through the inverse Hessian's Cholesky factor, in blocks with lazy
// batch updates. Scales follow the symmetric int rule of Spec (s =
// amax/((qmax-qmin)/2) on Spec's grid): per channel from the
// original rows; per group from the original weights when act-order is
// on (static groups), else from the compensated weights at each group's
// first column. It returns the codes and the scales (rows x groups); w is
// left holding the dequantized result, on the grid exactly.
func GPTQ(w []float32, rows, cols int, h *Hessian, c GPTQConfig) ([]int8, []float32, error) {
	if h.Cols != cols || len(w) != rows*cols {
		return nil, nil, fmt.Errorf("gptq: %d weights and a %d-column Hessian for %d x %d", len(w), h.Cols, rows, cols)
	}
	if c.Bits < 2 || c.Bits > 8 {
		return nil, nil, fmt.Errorf("gptq: %d bits", c.Bits)
	}
	group := c.Group
	if group == 0 {
		group = cols
	}
	if cols%group != 0 {
		return nil, nil, fmt.Errorf("gptq: group %d does not divide %d inputs", group, cols)
	}
	bs := c.BlockSize
	if bs <= 0 {
		bs = 128
	}
	qmin, qmax := -math.Ldexp(1, c.Bits-1), math.Ldexp(1, c.Bits-1)-1
	if c.Restricted {
		qmin++
	}
	H := h.full()
	W := make([]float64, len(w))
	for i, v := range w {
		W[i] = float64(v)
	}
	// dead inputs (never nonzero): no information, weight 0
	for i := 0; i < cols; i++ {
		if H[i*cols+i] == 0 {
			H[i*cols+i] = 1
			for r := 0; r < rows; r++ {
				W[r*cols+i] = 0
			}
		}
	}
	ng := cols / group
	scales := make([]float64, rows*ng)
	scaleOf := func(vals func(r, j int) float64, r, j0, j1 int) float64 {
		var amax float64
		for j := j0; j < j1; j++ {
			amax = math.Max(amax, math.Abs(vals(r, j)))
		}
		return math.Max(amax/((qmax-qmin)/2), 1.1920929e-07)
	}
	keep := func(r, j int) bool { return c.Keep != nil && c.Keep[r*cols+j] }
	orig := func(r, j int) float64 {
		if keep(r, j) {
			return 0
		}
		return W[r*cols+j]
	}
	static := c.Group == 0 || c.ActOrder
	if static {
		for r := 0; r < rows; r++ {
			for g := 0; g < ng; g++ {
				scales[r*ng+g] = float64(float32(scaleOf(orig, r, g*group, (g+1)*group)))
			}
		}
	}
	perm := make([]int, cols)
	for i := range perm {
		perm[i] = i
	}
	if c.ActOrder {
		sort.SliceStable(perm, func(a, b int) bool { return H[perm[a]*cols+perm[a]] > H[perm[b]*cols+perm[b]] })
	}
	// permuted copies: Wp (rows x cols), Hp (cols x cols)
	Wp := make([]float64, len(W))
	Hp := mat.NewSymDense(cols, nil)
	var diag float64
	for i := 0; i < cols; i++ {
		diag += H[i*cols+i]
	}
	damp := c.Damp * diag / float64(cols)
	for i, pi := range perm {
		for r := 0; r < rows; r++ {
			Wp[r*cols+i] = W[r*cols+pi]
		}
		for j := i; j < cols; j++ {
			v := H[pi*cols+perm[j]]
			if i == j {
				v += damp
			}
			Hp.SetSym(i, j, v)
		}
	}
	// U: the upper Cholesky factor of H^-1
	var ch mat.Cholesky
	if !ch.Factorize(Hp) {
		return nil, nil, fmt.Errorf("gptq: the damped Hessian is not positive definite")
	}
	var hinv mat.SymDense
	if err := ch.InverseTo(&hinv); err != nil {
		return nil, nil, fmt.Errorf("gptq: inverting the Hessian: %v", err)
	}
	var ch2 mat.Cholesky
	if !ch2.Factorize(&hinv) {
		return nil, nil, fmt.Errorf("gptq: the inverse Hessian is not positive definite")
	}
	var U mat.TriDense
	ch2.UTo(&U)
	codes := make([]int8, rows*cols)
	kept := map[int]float32{}
	err := make([]float64, rows*bs)
	for i1 := 0; i1 < cols; i1 += bs {
		i2 := min(i1+bs, cols)
		for i := i1; i < i2; i++ {
			col := perm[i]
			g := col / group
			if !static && col%group == 0 {
				for r := 0; r < rows; r++ {
					scales[r*ng+g] = float64(float32(scaleOf(func(r, j int) float64 {
						if keep(r, perm[j]) {
							return 0
						}
						return Wp[r*cols+j]
					}, r, i, i+group)))
				}
			}
			d := U.At(i, i)
			for r := 0; r < rows; r++ {
				s := scales[r*ng+g]
				v := Wp[r*cols+i]
				q := math.Min(math.Max(math.RoundToEven(v/s), qmin), qmax)
				deq := q * s
				if keep(r, col) {
					q, deq = 0, float64(fp16(float32(v)))
					kept[r*cols+col] = float32(deq)
				}
				codes[r*cols+col] = int8(q)
				e := (v - deq) / d
				err[r*bs+i-i1] = e
				// compensate the rest of the block now
				for j := i + 1; j < i2; j++ {
					Wp[r*cols+j] -= e * U.At(i, j)
				}
			}
		}
		// and the columns after the block, in one batch
		for r := 0; r < rows; r++ {
			for j := i2; j < cols; j++ {
				var acc float64
				for i := i1; i < i2; i++ {
					acc += err[r*bs+i-i1] * U.At(i, j)
				}
				Wp[r*cols+j] -= acc
			}
		}
	}
	sc := make([]float32, len(scales))
	for i, s := range scales {
		sc[i] = float32(s)
	}
	for r := 0; r < rows; r++ {
		for j := 0; j < cols; j++ {
			w[r*cols+j] = float32(codes[r*cols+j]) * sc[r*ng+j/group]
		}
	}
	for i, v := range kept {
		w[i] = v
	}
	return codes, sc, nil
}

// hessianTap records a linear's inputs into a Hessian: an observer on the
// first linear of an input group (q/k/v, gate/up), whose input the others
// share.
type hessianTap struct {
	H *Hessian
}

func (t *hessianTap) Observe(_ autograd.Ops, x *autograd.Var) *autograd.Var {
	t.H.Add(x.Data(), x.Size()/t.H.Cols)
	return x
}

// Replica is the tap itself: calibration runs on one model.
func (t *hessianTap) Replica() layers.Observer { return t }

// observe attaches o to l's observers and returns the function that
// detaches it.
func observe(l *layers.Linear, o layers.Observer) (detach func()) {
	saved := l.Observers
	l.Observers = append(saved[:len(saved):len(saved)], o)
	return func() { l.Observers = saved }
}

// GPTQTarget reports the GPTQ settings for a weight quantizer: symmetric
// int per channel or per group.
func GPTQTarget(q *Quantizer, base GPTQConfig) (GPTQConfig, bool) {
	if q == nil || q.Format != kernels.Int || !q.Symmetric || (q.Granularity != "channel" && q.Granularity != "group") {
		return base, false
	}
	base.Bits, base.Restricted = q.Bits, q.Restricted
	base.Group = 0
	if q.Granularity == "group" {
		base.Group = q.GroupSize
	}
	return base, true
}

// ApplyGPTQ quantizes the weights of m's linears that have symmetric int
// weight quantizers with GPTQ, decoder block by decoder block as the
// reference does: run makes the calibration forward passes (the same
// batches every call), once per block, so each block's Hessians see the
// outputs of the blocks already quantized. Each quantized layer's weight
// quantizer becomes a fixed-step (lsq) one holding GPTQ's scales, so the
// model computes the GPTQ weights exactly; done is called after each
// block. It returns the number of layers quantized.
func ApplyGPTQ(m *layers.Model, base GPTQConfig, run func() error, done func(block int)) (int, error) {
	n := 0
	// the input groups of each decoder layer, then those outside (lm_head)
	var blocks [][]layers.InputGroup
	groups := m.InputGroups()
	for i, g := range groups {
		if i == 0 || g.Layer != groups[i-1].Layer {
			blocks = append(blocks, nil)
		}
		blocks[len(blocks)-1] = append(blocks[len(blocks)-1], g)
	}
	for bi, blk := range blocks {
		var taps []*hessianTap
		var detach []func()
		var targets []layers.InputGroup
		for _, g := range blk {
			var want bool
			for _, l := range g.Linears {
				_, ok := GPTQTarget(weightQuantizer(l), base)
				want = want || ok
			}
			if !want {
				continue
			}
			// The tap sees the input before any input quantizer (GPTQ's
			// Hessian of the full-precision input), so the linears of a
			// group share it whatever their input quantizers: learned
			// clip values differ from q to k to v.
			first := g.Linears[0]
			t := &hessianTap{H: NewHessian(first.Weight.Shape()[1])}
			detach = append(detach, observe(first, t))
			taps = append(taps, t)
			targets = append(targets, g)
		}
		if len(targets) == 0 {
			continue
		}
		err := run()
		for i := len(detach) - 1; i >= 0; i-- {
			detach[i]()
		}
		if err != nil {
			return n, err
		}
		for i, g := range targets {
			if taps[i].H.N == 0 {
				return n, fmt.Errorf("gptq: %s saw no calibration input", g.Name)
			}
			for _, l := range g.Linears {
				q := weightQuantizer(l)
				c, ok := GPTQTarget(q, base)
				if !ok {
					continue
				}
				sh := l.Weight.Shape()
				o, hasKept := l.WeightQuant.(*Outliers)
				if hasKept {
					c.Keep = make([]bool, sh[0]*sh[1])
					for _, i := range o.Idx {
						c.Keep[i] = true
					}
				}
				_, scales, err := GPTQ(l.Weight.Data(), sh[0], sh[1], taps[i].H, c)
				if err != nil {
					return n, fmt.Errorf("%s: %w", g.Name, err)
				}
				spec := q.Spec
				spec.Scale = "lsq"
				fixed, err := NewQuantizer(spec, sh[1], sh[0]*sh[1])
				if err != nil {
					return n, err
				}
				copy(fixed.Step.Data(), scales)
				l.WeightQuant = fixed
				if hasKept {
					l.WeightQuant = &Outliers{Inner: fixed, Idx: o.Idx, N: o.N}
				}
				if _, ok := l.WeightQuant.(*TwoLevel); ok || q.TwoLevel {
					l.WeightQuant = &TwoLevel{Inner: fixed}
				}
				n++
			}
		}
		if done != nil {
			done(bi)
		}
	}
	return n, nil
}

func sameQuant(a, b layers.Quantizer) bool {
	s, ok := a.(layers.InputSharer)
	return ok && b != nil && s.SameAs(b)
}

// FixedWeightSteps returns rules whose symmetric int weight specs per
// channel or group hold steps (lsq): what GPTQ's scales become, so a
// checkpoint keeps them and QAT trains them.
func FixedWeightSteps(rules []Rule) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		if w := r.Weights; w != nil && w.Format == kernels.Int && w.Symmetric && (w.Granularity == "channel" || w.Granularity == "group") {
			c := *w
			c.Scale = "lsq"
			r.Weights = &c
		}
		out[i] = r
	}
	return out
}

// weightQuantizer is l's int weight quantizer, under kept outliers too.
func weightQuantizer(l *layers.Linear) *Quantizer {
	switch q := l.WeightQuant.(type) {
	case *Quantizer:
		return q
	case *Outliers:
		return q.Inner
	case *TwoLevel:
		return q.Inner
	}
	return nil
}
