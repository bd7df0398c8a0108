package autograd

import (
	"fmt"
	"math"

	"qat/kernels"
)

// Ops is the op set model code is written against (the narrow tensor API
// of ollama's ml.Backend): *Tape implements it.
type Ops interface {
	Embedding(table *Var, ids []int32, shape ...int) *Var
	Linear(x, w *Var) *Var
	LinearAdd(x, w, res *Var) *Var
	LinearCat(x *Var, ws ...*Var) []*Var
	MatMul(a, b *Var, transA, transB bool) *Var
	RMSNorm(x, w *Var, eps float32) *Var
	RoPE(x *Var, r *RoPETable, pos []int32, heads int) *Var
	Attention(q, k, v *Var, heads, kvHeads int) *Var
	AttentionCat(x, wq, wk, wv *Var, r *RoPETable, pos []int32, heads, kvHeads int) *Var
	SwiGLU(gate, up *Var) *Var
	SwiGLUCat(x, gate, up *Var) *Var
	SiLU(x *Var) *Var
	Hadamard(x *Var, h *kernels.Hadamard) *Var
	Add(a, b *Var) *Var
	Scale(x *Var, s float32) *Var
	CrossEntropy(logits *Var, targets []int32, ignoreIndex int32) *Var
	Custom(shape []int, inputs []*Var, fwd func(out []float32), bwd func(dout []float32, dins [][]float32)) *Var
	Scratch(n int) []float32
	ScratchBytes(n int) []uint8
}

var _ Ops = (*Tape)(nil)

// rowGrain is the fewest rows worth a goroutine of their own.
const rowGrain = 8

func shapeErr(op string, a, b []int) string {
	return fmt.Sprintf("autograd: %s: shapes %v and %v do not match", op, a, b)
}

func lastDim(v *Var) int {
	s := v.Shape()
	return s[len(s)-1]
}

// Add returns a + b (same shapes; no broadcasting).
func (t *Tape) Add(a, b *Var) *Var {
	if !sameShape(a.Shape(), b.Shape()) {
		panic(shapeErr("Add", a.Shape(), b.Shape()))
	}
	out := t.newVar(a.Shape(), a, b)
	kernels.For(len(out.x), 1<<14, func(lo, hi int) {
		kernels.Active.Add(out.x[lo:hi], a.x[lo:hi], b.x[lo:hi])
	})
	t.record(out, func() {
		if out.g == nil {
			return
		}
		// b first, then a: a may borrow out's gradient.
		t.passGrad(b, out, false)
		t.passGrad(a, out, true)
	})
	return out
}

// passGrad adds out's gradient into in's, for an output that is in plus
// something. With borrow, a temporary in with no gradient yet takes out's
// gradient buffer itself (out's gradient is read by no one after its op's
// backward, which must call this last), saving a copy of the residual
// stream.
func (t *Tape) passGrad(in, out *Var, borrow bool) {
	if borrow && in.needGrad && in.temp && in.g == nil {
		in.g, in.gradBorrowed = out.g, true
		return
	}
	if in.needGrad {
		g, first := t.gradW(in)
		kernels.For(len(g), 1<<14, func(lo, hi int) {
			if first {
				copy(g[lo:hi], out.g[lo:hi])
			} else {
				kernels.Active.Axpy(g[lo:hi], out.g[lo:hi], 1)
			}
		})
	}
}

// Scale returns s*x.
func (t *Tape) Scale(x *Var, s float32) *Var {
	out := t.newVar(x.Shape(), x)
	kernels.Active.Scale(out.x, x.x, s)
	t.record(out, func() {
		if out.g != nil {
			kernels.Active.Axpy(t.grad(x), out.g, s)
		}
	})
	return out
}

// Linear returns x W^T: x (..., in), w (out, in) -> (..., out).
func (t *Tape) Linear(x, w *Var) *Var {
	rows, nin, nout, shape := linearShape("Linear", x, w)
	out := t.newVar(shape, x, w)
	kernels.Sgemm(false, true, rows, nout, nin, 1, x.x, nin, w.x, nin, 0, out.x, nout)
	t.record(out, func() {
		if out.g != nil {
			t.linearBackward(x, w, out.g)
		}
	})
	return out
}

// linearShape checks x (..., in) against w (out, in) for op and returns
// the rows of x, in, out and the product's shape (..., out).
func linearShape(op string, x, w *Var) (rows, nin, nout int, shape []int) {
	ws := w.Shape()
	if len(ws) != 2 || lastDim(x) != ws[1] {
		panic(shapeErr(op, x.Shape(), ws))
	}
	nout, nin = ws[0], ws[1]
	shape = append(append([]int(nil), x.Shape()[:len(x.Shape())-1]...), nout)
	return x.Size() / nin, nin, nout, shape
}

// linearBackward adds the gradients of x W^T given dy: dx += dy W and
// dW += dy^T x.
func (t *Tape) linearBackward(x, w *Var, dy []float32) {
	nout, nin := w.Shape()[0], w.Shape()[1]
	rows := x.Size() / nin
	if x.needGrad { // dx (rows,in) += dy (rows,out) W (out,in)
		dx, first := t.gradW(x)
		kernels.Sgemm(false, false, rows, nin, nout, 1, dy, nout, w.x, nin, beta(first), dx, nin)
	}
	if w.needGrad { // dW (out,in) += dy^T x
		dw, first := t.gradW(w)
		kernels.Sgemm(true, false, nout, nin, rows, 1, dy, nout, x.x, nin, beta(first), dw, nin)
	}
}

// LinearAdd returns res + x W^T: a residual connection's output
// projection as one product that adds into a copy of res, instead of
// Linear's product into a buffer OpenBLAS clears first and then an Add
// (forward: one pass over the residual stream less; backward: the
// product's gradient is the output's, not a copy of it).
func (t *Tape) LinearAdd(x, w, res *Var) *Var {
	rows, nin, nout, shape := linearShape("LinearAdd", x, w)
	if !sameShape(shape, res.Shape()) {
		panic(shapeErr("LinearAdd", shape, res.Shape()))
	}
	out := t.newVar(shape, x, w, res)
	copy(out.x, res.x)
	kernels.Sgemm(false, true, rows, nout, nin, 1, x.x, nin, w.x, nin, 1, out.x, nout)
	t.record(out, func() {
		if out.g == nil {
			return
		}
		t.linearBackward(x, w, out.g)
		t.passGrad(res, out, true) // last: res may borrow out's gradient
	})
	return out
}

// LinearCat returns x W_i^T for each weight (out_i, in) of ws: the
// projections that share an input (q/k/v, gate/up). When the weights lie
// next to each other in memory (Pack) they are one (sum out_i, in) matrix
// and forward and backward each run one larger sgemm instead of one per
// weight; the outputs are copied out of the joint product.
func (t *Tape) LinearCat(x *Var, ws ...*Var) []*Var {
	nin := lastDim(x)
	rows := x.Size() / nin
	outs := make([]*Var, len(ws))
	vals := make([][]float32, len(ws))
	sum := 0
	for i, w := range ws {
		s := w.Shape()
		if len(s) != 2 || s[1] != nin {
			panic(shapeErr("LinearCat", x.Shape(), s))
		}
		vals[i] = w.x
		sum += s[0]
	}
	if !adjacent(vals) {
		for i, w := range ws {
			outs[i] = t.Linear(x, w)
		}
		return outs
	}
	inputs := append([]*Var{x}, ws...)
	y := t.scratch(rows * sum)
	kernels.Sgemm(false, true, rows, sum, nin, 1, x.x, nin, joined(vals), nin, 0, y, sum)
	off := 0
	for i, w := range ws {
		no := w.Shape()[0]
		shape := append(append([]int(nil), x.Shape()[:len(x.Shape())-1]...), no)
		outs[i] = t.newVar(shape, inputs...)
		for r := 0; r < rows; r++ {
			copy(outs[i].x[r*no:(r+1)*no], y[r*sum+off:])
		}
		off += no
	}
	t.record(outs[0], func() {
		// Gather the outputs' gradients into one (rows, sum) matrix; an
		// output no gradient reached contributes zeros.
		dy := y // the forward product is no longer needed
		off := 0
		for i, w := range ws {
			no := w.Shape()[0]
			for r := 0; r < rows; r++ {
				if outs[i].g != nil {
					copy(dy[r*sum+off:r*sum+off+no], outs[i].g[r*no:])
				} else {
					clear(dy[r*sum+off : r*sum+off+no])
				}
			}
			off += no
		}
		t.jointBackward(x, ws, vals, dy, rows, sum)
	})
	return outs
}

// jointBackward adds the gradients of a joint product y = x [W_0; W_1;
// ...]^T given dy (rows, sum): dx += dy W, and dW_i += dy_i^T x in one
// product over the joint gradient when every weight takes a gradient, the
// gradients are adjacent too and all are equally fresh (beta 0) or not
// (beta 1); else one per weight.
func (t *Tape) jointBackward(x *Var, ws []*Var, vals [][]float32, dy []float32, rows, sum int) {
	nin := lastDim(x)
	if x.needGrad {
		dx, first := t.gradW(x)
		kernels.Sgemm(false, false, rows, nin, sum, 1, dy, sum, joined(vals), nin, beta(first), dx, nin)
	}
	grads, firsts := make([][]float32, len(ws)), make([]bool, len(ws))
	all, same := true, true
	for i, w := range ws {
		if !w.needGrad {
			all = false
			continue
		}
		grads[i], firsts[i] = t.gradW(w)
		same = same && firsts[i] == firsts[0]
	}
	if all && same && adjacent(grads) {
		kernels.Sgemm(true, false, sum, nin, rows, 1, dy, sum, x.x, nin, beta(firsts[0]), joined(grads), nin)
		return
	}
	off := 0
	for i, w := range ws {
		no := w.Shape()[0]
		if w.needGrad {
			kernels.Sgemm(true, false, no, nin, rows, 1, dy[off:], sum, x.x, nin, beta(firsts[i]), grads[i], nin)
		}
		off += no
	}
}

// SwiGLUCat returns SwiGLU(x Wg^T, x Wu^T): the feed-forward block's gated
// unit. With the two weights adjacent in memory (Pack) it is LinearCat
// without its copies: SwiGLU reads gate and up where the joint product put
// them, and its backward writes their gradients straight into the joint
// gradient (tiny: the copies were about 3% of a training step).
func (t *Tape) SwiGLUCat(x, wg, wu *Var) *Var {
	nin := lastDim(x)
	gs, us := wg.Shape(), wu.Shape()
	if len(gs) != 2 || !sameShape(gs, us) || gs[1] != nin {
		panic(shapeErr("SwiGLUCat", gs, us))
	}
	vals := [][]float32{wg.x, wu.x}
	if !adjacent(vals) {
		gu := t.LinearCat(x, wg, wu)
		return t.SwiGLU(gu[0], gu[1])
	}
	f, rows := gs[0], x.Size()/nin
	y := t.scratch(rows * 2 * f)
	kernels.Sgemm(false, true, rows, 2*f, nin, 1, x.x, nin, joined(vals), nin, 0, y, 2*f)
	shape := append(append([]int(nil), x.Shape()[:len(x.Shape())-1]...), f)
	out := t.newVar(shape, x, wg, wu)
	kernels.For(rows, rowGrain, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			g := y[2*r*f:]
			kernels.Active.SwiGLUFwd(out.x[r*f:(r+1)*f], g[:f], g[f:2*f])
		}
	})
	t.record(out, func() {
		if out.g == nil {
			return
		}
		dy := t.scratch(rows * 2 * f)
		kernels.For(rows, rowGrain, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				g, dg := y[2*r*f:], dy[2*r*f:2*(r+1)*f]
				kernels.Active.SwiGLUBwd(dg[:f], dg[f:], out.g[r*f:(r+1)*f], g[:f], g[f:2*f], false)
			}
		})
		t.jointBackward(x, []*Var{wg, wu}, vals, dy, rows, 2*f)
	})
	return out
}

// MatMul returns op(a) op(b) for 2-D operands or 3-D batches of equal
// batch size, op(X) = X^T when its flag is set.
func (t *Tape) MatMul(a, b *Var, transA, transB bool) *Var {
	as, bs := a.Shape(), b.Shape()
	if len(as) != len(bs) || len(as) < 2 || len(as) > 3 || (len(as) == 3 && as[0] != bs[0]) {
		panic(shapeErr("MatMul", as, bs))
	}
	batch := 1
	if len(as) == 3 {
		batch = as[0]
	}
	ar, ac := as[len(as)-2], as[len(as)-1]
	br, bc := bs[len(bs)-2], bs[len(bs)-1]
	m, k := ar, ac
	if transA {
		m, k = ac, ar
	}
	k2, n := br, bc
	if transB {
		k2, n = bc, br
	}
	if k != k2 {
		panic(shapeErr("MatMul", as, bs))
	}
	shape := []int{m, n}
	if len(as) == 3 {
		shape = []int{batch, m, n}
	}
	out := t.newVar(shape, a, b)
	sa, sb, sc := ar*ac, br*bc, m*n
	for i := 0; i < batch; i++ {
		kernels.Sgemm(transA, transB, m, n, k, 1, a.x[i*sa:], ac, b.x[i*sb:], bc, 0, out.x[i*sc:], n)
	}
	t.record(out, func() {
		if out.g == nil {
			return
		}
		var ga, gb []float32
		var fa, fb bool
		if a.needGrad {
			ga, fa = t.gradW(a)
		}
		if b.needGrad {
			gb, fb = t.gradW(b)
		}
		for i := 0; i < batch; i++ {
			dc := out.g[i*sc:]
			if a.needGrad {
				da := ga[i*sa:]
				if transA { // A is (k,m): dA += op(B) dC^T = (dC op(B)^T)^T
					kernels.Sgemm(transB, true, k, m, n, 1, b.x[i*sb:], bc, dc, n, beta(fa), da, ac)
				} else { // dA (m,k) += dC op(B)^T
					kernels.Sgemm(false, !transB, m, k, n, 1, dc, n, b.x[i*sb:], bc, beta(fa), da, ac)
				}
			}
			if b.needGrad {
				db := gb[i*sb:]
				if transB { // B is (n,k): dB += dC^T op(A)
					kernels.Sgemm(true, transA, n, k, m, 1, dc, n, a.x[i*sa:], ac, beta(fb), db, bc)
				} else { // dB (k,n) += op(A)^T dC
					kernels.Sgemm(!transA, false, k, n, m, 1, a.x[i*sa:], ac, dc, n, beta(fb), db, bc)
				}
			}
		}
	})
	return out
}

// Embedding gathers rows of table (vocab, dim) for ids into a tensor of the
// given shape (whose last dimension must be dim); backward scatter-adds.
// An id outside the table panics.
func (t *Tape) Embedding(table *Var, ids []int32, shape ...int) *Var {
	ts := table.Shape()
	if len(ts) != 2 || len(shape) == 0 || shape[len(shape)-1] != ts[1] || size(shape) != len(ids)*ts[1] {
		panic(fmt.Sprintf("autograd: Embedding: table %v, %d ids, output shape %v", ts, len(ids), shape))
	}
	vocab, d := ts[0], ts[1]
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			panic(fmt.Sprintf("autograd: Embedding: token id %d outside vocabulary of %d", id, vocab))
		}
	}
	out := t.newVar(shape, table)
	for i, id := range ids {
		copy(out.x[i*d:(i+1)*d], table.x[int(id)*d:])
	}
	t.record(out, func() {
		if out.g == nil {
			return
		}
		g := t.grad(table)
		for i, id := range ids {
			kernels.Active.Axpy(g[int(id)*d:(int(id)+1)*d], out.g[i*d:(i+1)*d], 1)
		}
	})
	return out
}

// RMSNorm returns x / sqrt(mean(x^2) + eps) * w over the last dimension.
func (t *Tape) RMSNorm(x, w *Var, eps float32) *Var {
	d := lastDim(x)
	if w.Size() != d || len(w.Shape()) != 1 {
		panic(shapeErr("RMSNorm", x.Shape(), w.Shape()))
	}
	rows := x.Size() / d
	out := t.newVar(x.Shape(), x, w)
	rstd := t.scratch(rows)
	kernels.For(rows, rowGrain, func(lo, hi int) {
		kernels.Active.RMSNormFwd(out.x[lo*d:hi*d], rstd[lo:hi], x.x[lo*d:hi*d], w.x, hi-lo, d, eps)
	})
	t.record(out, func() {
		if out.g == nil {
			return
		}
		// Rows go to separate goroutines, each with its own dw partial sum,
		// added at the end: no two goroutines write one element.
		nc := kernels.Chunks(rows, rowGrain)
		dws := t.scratch(nc * d)
		clear(dws)
		var dx []float32
		if x.needGrad {
			dx = t.grad(x)
		} else {
			dx = t.scratch(x.Size())
		}
		kernels.ForChunks(rows, rowGrain, func(c, lo, hi int) {
			kernels.Active.RMSNormBwd(dx[lo*d:hi*d], dws[c*d:(c+1)*d], out.g[lo*d:hi*d], x.x[lo*d:hi*d], w.x, rstd[lo:hi], hi-lo, d)
		})
		if w.needGrad {
			gw := t.grad(w)
			for c := 0; c < nc; c++ {
				kernels.Active.Axpy(gw, dws[c*d:(c+1)*d], 1)
			}
		}
	})
	return out
}

// SwiGLU returns silu(gate) * up (same shapes).
func (t *Tape) SwiGLU(gate, up *Var) *Var {
	if !sameShape(gate.Shape(), up.Shape()) {
		panic(shapeErr("SwiGLU", gate.Shape(), up.Shape()))
	}
	out := t.newVar(gate.Shape(), gate, up)
	kernels.For(len(out.x), 1<<13, func(lo, hi int) {
		kernels.Active.SwiGLUFwd(out.x[lo:hi], gate.x[lo:hi], up.x[lo:hi])
	})
	t.record(out, func() {
		if out.g == nil {
			return
		}
		// Two fresh gradients are written; otherwise both are added to
		// (gate and up the same input: one buffer, added to twice).
		var dg, du []float32
		acc := true
		if gate != up {
			var fg, fu bool
			dg, fg = t.gradW(gate)
			du, fu = t.gradW(up)
			acc = !fg || !fu
			if acc && fg {
				clear(dg)
			}
			if acc && fu {
				clear(du)
			}
		} else {
			dg, du = t.gradOrScratch(gate), t.gradOrScratch(up)
		}
		kernels.For(len(out.x), 1<<13, func(lo, hi int) {
			kernels.Active.SwiGLUBwd(dg[lo:hi], du[lo:hi], out.g[lo:hi], gate.x[lo:hi], up.x[lo:hi], acc)
		})
	})
	return out
}

// gradOrScratch gives a place to accumulate v's gradient even when v takes
// none (the fused kernels write both gradients in one pass).
func (t *Tape) gradOrScratch(v *Var) []float32 {
	if v.needGrad {
		return t.grad(v)
	}
	return t.scratch(v.Size())
}

// SiLU returns x*sigmoid(x).
func (t *Tape) SiLU(x *Var) *Var {
	out := t.newVar(x.Shape(), x)
	kernels.For(len(out.x), 1<<13, func(lo, hi int) {
		kernels.Active.SiLUFwd(out.x[lo:hi], x.x[lo:hi])
	})
	t.record(out, func() {
		if out.g == nil {
			return
		}
		dx := t.grad(x)
		kernels.For(len(out.x), 1<<13, func(lo, hi int) {
			kernels.Active.SiLUBwd(dx[lo:hi], out.g[lo:hi], x.x[lo:hi])
		})
	})
	return out
}

// RoPETable holds cos and sin of pos*theta^(-2j/hd) for the rotate-half
// rotary embedding of Hugging Face Llama.
type RoPETable struct {
	HeadDim, MaxPos int
	Theta           float64
	Cos, Sin        []float32 // (MaxPos, HeadDim/2)
}

// NewRoPETable computes the table in float64 and rounds once.
func NewRoPETable(headDim, maxPos int, theta float64) *RoPETable {
	if headDim%2 != 0 || headDim <= 0 || maxPos <= 0 || theta <= 0 {
		panic(fmt.Sprintf("autograd: NewRoPETable: head dim %d, max positions %d, theta %g", headDim, maxPos, theta))
	}
	h2 := headDim / 2
	r := &RoPETable{HeadDim: headDim, MaxPos: maxPos, Theta: theta,
		Cos: make([]float32, maxPos*h2), Sin: make([]float32, maxPos*h2)}
	for p := 0; p < maxPos; p++ {
		for j := 0; j < h2; j++ {
			a := float64(p) * math.Pow(theta, -float64(2*j)/float64(headDim))
			r.Cos[p*h2+j] = float32(math.Cos(a))
			r.Sin[p*h2+j] = float32(math.Sin(a))
		}
	}
	return r
}

// RoPE rotates each head of x (..., heads*hd) by its row's position
// pos[row] (len(pos) = rows).
func (t *Tape) RoPE(x *Var, r *RoPETable, pos []int32, heads int) *Var {
	d := lastDim(x)
	if d != heads*r.HeadDim || len(pos)*d != x.Size() {
		panic(fmt.Sprintf("autograd: RoPE: x %v, %d heads of %d, %d positions", x.Shape(), heads, r.HeadDim, len(pos)))
	}
	rows := len(pos)
	out := t.newVar(x.Shape(), x)
	kernels.For(rows, rowGrain, func(lo, hi int) {
		kernels.Active.RoPE(out.x[lo*d:hi*d], x.x[lo*d:hi*d], pos[lo:hi], r.Cos, r.Sin, hi-lo, heads, r.HeadDim, d, d, 1, false)
	})
	t.record(out, func() {
		if out.g == nil {
			return
		}
		dx, first := t.gradW(x)
		kernels.For(rows, rowGrain, func(lo, hi int) {
			kernels.Active.RoPE(dx[lo*d:hi*d], out.g[lo*d:hi*d], pos[lo:hi], r.Cos, r.Sin, hi-lo, heads, r.HeadDim, d, d, -1, !first)
		})
	})
	return out
}

// Attention is causal multi-head attention with grouped-query heads:
// q (B, T, heads*hd), k and v (B, T, kvHeads*hd) -> (B, T, heads*hd); query
// head h reads kv head h/(heads/kvHeads). It keeps no T x T tensor: each
// head's scores live in a per-goroutine scratch and backward recomputes
// them from q and k (as flash attention does): kernels.Attn.
func (t *Tape) Attention(q, k, v *Var, heads, kvHeads int) *Var {
	qs, ks := q.Shape(), k.Shape()
	if len(qs) != 3 || !sameShape(ks, v.Shape()) || len(ks) != 3 || qs[0] != ks[0] || qs[1] != ks[1] ||
		heads <= 0 || kvHeads <= 0 || heads%kvHeads != 0 || qs[2]%heads != 0 || ks[2] != qs[2]/heads*kvHeads {
		panic(fmt.Sprintf("autograd: Attention: q %v, k %v, v %v, heads %d, kv heads %d", qs, ks, v.Shape(), heads, kvHeads))
	}
	B, T := qs[0], qs[1]
	hd := qs[2] / heads
	scale := float32(1 / math.Sqrt(float64(hd)))
	out := t.newVar(qs, q, k, v)
	at := kernels.Attn{B: B, T: T, Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: scale}
	at.Forward(out.x, q.x, k.x, v.x, t.scratch(at.ForwardScratch()))
	t.record(out, func() {
		if out.g == nil {
			return
		}
		// The kernel writes or adds each gradient in its own order: an
		// input passed twice (Attention(x, x, x)) gets its second and third
		// gradients in scratch, added afterwards.
		grad := func(v *Var, earlier ...*Var) ([]float32, bool, bool) {
			for _, e := range earlier {
				if e == v {
					return t.scratch(v.Size()), true, true
				}
			}
			g, first := t.gradW(v)
			return g, first, false
		}
		dQ, fq, _ := grad(q)
		dK, fk, kTwice := grad(k, q)
		dV, fv, vTwice := grad(v, q, k)
		at.Backward(dQ, dK, dV, out.g, q.x, k.x, v.x, t.scratch(at.BackwardScratch()), fq, fk, fv)
		if kTwice {
			kernels.Active.Axpy(k.GradData(), dK, 1)
		}
		if vTwice {
			kernels.Active.Axpy(v.GradData(), dV, 1)
		}
	})
	return out
}

// AttentionCat returns Attention(RoPE(x Wq^T), RoPE(x Wk^T), x Wv^T) for
// x (B, T, d): the attention block up to its output projection. With the
// three weights adjacent in memory (Pack) it is one joint product, as in
// LinearCat, without LinearCat's copies: RoPE reads q and k where the
// product put them, attention reads v in place, and backward writes the
// three gradients straight into the joint gradient (tiny: the copies were
// about 2% of a training step).
func (t *Tape) AttentionCat(x, wq, wk, wv *Var, r *RoPETable, pos []int32, heads, kvHeads int) *Var {
	xs, qs, ks := x.Shape(), wq.Shape(), wk.Shape()
	if len(xs) != 3 || len(qs) != 2 || len(ks) != 2 || !sameShape(ks, wv.Shape()) || qs[1] != xs[2] || ks[1] != xs[2] ||
		heads <= 0 || kvHeads <= 0 || heads%kvHeads != 0 || qs[0] != heads*r.HeadDim || ks[0] != kvHeads*r.HeadDim ||
		len(pos) != xs[0]*xs[1] {
		panic(fmt.Sprintf("autograd: AttentionCat: x %v, q %v, k %v, v %v, %d heads and %d kv heads of %d, %d positions",
			xs, qs, ks, wv.Shape(), heads, kvHeads, r.HeadDim, len(pos)))
	}
	vals := [][]float32{wq.x, wk.x, wv.x}
	if !adjacent(vals) {
		qkv := t.LinearCat(x, wq, wk, wv)
		return t.Attention(t.RoPE(qkv[0], r, pos, heads), t.RoPE(qkv[1], r, pos, kvHeads), qkv[2], heads, kvHeads)
	}
	B, T, nin := xs[0], xs[1], xs[2]
	hd, dq, dk := r.HeadDim, qs[0], ks[0]
	rows, sum := B*T, dq+2*dk
	y := t.scratch(rows * sum)
	kernels.Sgemm(false, true, rows, sum, nin, 1, x.x, nin, joined(vals), nin, 0, y, sum)
	q, k := t.scratch(rows*dq), t.scratch(rows*dk)
	rope := func(dst []float32, ld int, src []float32, lds int, nh int, sign float32) {
		kernels.For(rows, rowGrain, func(lo, hi int) {
			kernels.Active.RoPE(dst[lo*ld:], src[lo*lds:], pos[lo:hi], r.Cos, r.Sin, hi-lo, nh, hd, ld, lds, sign, false)
		})
	}
	rope(q, dq, y, sum, heads, 1)
	rope(k, dk, y[dq:], sum, kvHeads, 1)
	out := t.newVar([]int{B, T, dq}, x, wq, wk, wv)
	at := kernels.Attn{B: B, T: T, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
		Scale: float32(1 / math.Sqrt(float64(hd))), VStride: sum}
	at.Forward(out.x, q, k, y[dq+dk:], t.scratch(at.ForwardScratch()))
	t.record(out, func() {
		if out.g == nil {
			return
		}
		// dV lands in the joint gradient's v columns; the rotated q and k
		// gradients are rotated back into its q and k columns.
		dy, dqr, dkr := t.scratch(rows*sum), t.scratch(rows*dq), t.scratch(rows*dk)
		at.Backward(dqr, dkr, dy[dq+dk:], out.g, q, k, y[dq+dk:], t.scratch(at.BackwardScratch()), true, true, true)
		rope(dy, sum, dqr, dq, heads, -1)
		rope(dy[dq:], sum, dkr, dk, kvHeads, -1)
		t.jointBackward(x, []*Var{wq, wk, wv}, vals, dy, rows, sum)
	})
	return out
}

// CrossEntropy returns the mean over non-ignored rows of
// -log softmax(logits)[target] for logits (..., vocab) and one target per
// row; rows whose target equals ignoreIndex do not count. A target outside
// [0, vocab) that is not ignoreIndex panics. The gradient is computed in the
// same pass as the loss and kept until backward.
func (t *Tape) CrossEntropy(logits *Var, targets []int32, ignoreIndex int32) *Var {
	V := lastDim(logits)
	rows := logits.Size() / V
	if len(targets) != rows {
		panic(fmt.Sprintf("autograd: CrossEntropy: logits %v, %d targets", logits.Shape(), len(targets)))
	}
	tg := t.scratchInt(rows)
	count := 0
	for i, y := range targets {
		switch {
		case y == ignoreIndex:
			tg[i] = -1
		case y < 0 || int(y) >= V:
			panic(fmt.Sprintf("autograd: CrossEntropy: target %d outside vocabulary of %d", y, V))
		default:
			tg[i] = y
			count++
		}
	}
	out := t.newVar([]int{1}, logits)
	loss := t.scratch(rows)
	dl := t.get(logits.Size())
	li := len(t.loose)
	t.loose = append(t.loose, dl)
	inv := float32(0)
	if count > 0 {
		inv = 1 / float32(count)
	}
	kernels.For(rows, rowGrain, func(lo, hi int) {
		kernels.Active.CrossEntropy(logits.x[lo*V:hi*V], tg[lo:hi], dl[lo*V:hi*V], loss[lo:hi], hi-lo, V, inv)
	})
	var sum float64
	for _, l := range loss {
		sum += float64(l)
	}
	out.x[0] = float32(sum) * inv
	t.record(out, func() {
		if out.g == nil {
			return
		}
		if logits.temp && logits.g == nil {
			// No other gradient reached the logits: the kept gradient
			// becomes theirs, saving a pass over (rows, vocab) values.
			if s := out.g[0]; s != 1 {
				kernels.For(rows, rowGrain, func(lo, hi int) {
					kernels.Active.Scale(dl[lo*V:hi*V], dl[lo*V:hi*V], s)
				})
			}
			logits.g = dl
			t.loose[li] = nil
			return
		}
		g, first := t.gradW(logits)
		kernels.For(rows, rowGrain, func(lo, hi int) {
			if first {
				kernels.Active.Scale(g[lo*V:hi*V], dl[lo*V:hi*V], out.g[0])
			} else {
				kernels.Active.Axpy(g[lo*V:hi*V], dl[lo*V:hi*V], out.g[0])
			}
		})
	})
	return out
}

// scratchInt returns a pooled []int32 of n that lives until Reset.
func (t *Tape) scratchInt(n int) []int32 {
	if cap(t.ints) < n {
		t.ints = make([]int32, n)
	}
	return t.ints[:n]
}
