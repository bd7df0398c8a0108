package gorgonia

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"qat/autograd"
	"qat/kernels"
)

// The ops a Llama needs that Gorgonia v0.9.18 lacks or gets wrong
// (docs/gorgonia.md): a token-table lookup and cross-entropy with integer
// targets, RMSNorm, rotary embeddings and a causal softmax (tensor.SoftMax
// takes the wrong row maximum). Token ids travel as float32 nodes (exact
// below 2^24) so ids change between runs without rebuilding the graph.

// Embedding looks up ids (a vector of float32 token ids) in table (vocab,
// d): the result is (len(ids), d). The table takes the gradient.
func Embedding(table, ids *G.Node) (*G.Node, error) {
	ts, is := table.Shape(), ids.Shape()
	if len(ts) != 2 || len(is) != 1 {
		return nil, fmt.Errorf("gorgonia: Embedding: table %v, ids %v", ts, is)
	}
	vocab, d, n := ts[0], ts[1], is[0]
	op := newOp("Embedding", []*G.Node{table, ids}, tensor.Shape{n, d}, table.Type(), []bool{true, false},
		func(in [][]float32, out []float32) {
			for i, id := range in[1] {
				k := tokenID(id, vocab)
				copy(out[i*d:(i+1)*d], in[0][k*d:(k+1)*d])
			}
		},
		func(_ int, in [][]float32, _, dout, din []float32) {
			for i, id := range in[1] {
				k := tokenID(id, vocab)
				kernels.Active.Axpy(din[k*d:(k+1)*d], dout[i*d:(i+1)*d], 1)
			}
		})
	return apply(op, table, ids)
}

func tokenID(v float32, vocab int) int {
	k := int(v)
	if float32(k) != v || k < 0 || k >= vocab {
		panic(fmt.Sprintf("gorgonia: token id %v outside vocabulary of %d", v, vocab))
	}
	return k
}

// RMSNorm is x / sqrt(mean(x^2) + eps) * w over the last dimension of x;
// x and w take gradients.
func RMSNorm(x, w *G.Node, eps float32) (*G.Node, error) {
	xs := x.Shape()
	if len(xs) == 0 || w.Shape().TotalSize() != xs[len(xs)-1] {
		return nil, fmt.Errorf("gorgonia: RMSNorm: x %v, w %v", xs, w.Shape())
	}
	d := xs[len(xs)-1]
	rows := xs.TotalSize() / d
	op := newOp("RMSNorm", []*G.Node{x, w}, xs, nil, []bool{true, true},
		func(in [][]float32, out []float32) {
			kernels.Active.RMSNormFwd(out, make([]float32, rows), in[0], in[1], rows, d, eps)
		},
		func(i int, in [][]float32, _, dout, din []float32) {
			rstd := make([]float32, rows)
			kernels.Active.RMSNormFwd(make([]float32, rows*d), rstd, in[0], in[1], rows, d, eps)
			dx, dw := din, make([]float32, d)
			if i == 1 {
				dx, dw = make([]float32, rows*d), din
			}
			kernels.Active.RMSNormBwd(dx, dw, dout, in[0], in[1], rstd, rows, d)
		})
	return apply(op, x, w)
}

// BiasAdd is x + b for x (rows, n) and b (n), b added to every row (the
// q/k/v biases of Qwen2); b's gradient is the column sum of dout.
func BiasAdd(x, b *G.Node) (*G.Node, error) {
	xs, bs := x.Shape(), b.Shape()
	if len(xs) != 2 || bs.TotalSize() != xs[1] || len(bs) != 1 {
		return nil, fmt.Errorf("gorgonia: BiasAdd: x %v, bias %v", xs, bs)
	}
	n := xs[1]
	op := newOp("BiasAdd", []*G.Node{x, b}, xs, nil, []bool{true, true},
		func(in [][]float32, out []float32) {
			for r := 0; r < len(out); r += n {
				for j := range n {
					out[r+j] = in[0][r+j] + in[1][j]
				}
			}
		},
		func(i int, _ [][]float32, _, dout, din []float32) {
			if i == 0 {
				copy(din, dout)
				return
			}
			clear(din)
			for r := 0; r < len(dout); r += n {
				for j := range n {
					din[j] += dout[r+j]
				}
			}
		})
	return apply(op, x, b)
}

// RoPE rotates each of the heads of x (batch*seq, heads*hd), row r at
// position r % seq, by the table's angles (rotate-half, as Hugging Face's
// Llama).
func RoPE(x *G.Node, r *autograd.RoPETable, seq, heads int) (*G.Node, error) {
	xs := x.Shape()
	if len(xs) != 2 || xs[1] != heads*r.HeadDim || seq <= 0 || seq > r.MaxPos || xs[0]%seq != 0 {
		return nil, fmt.Errorf("gorgonia: RoPE: x %v, %d heads of %d, sequence %d", xs, heads, r.HeadDim, seq)
	}
	rows := xs[0]
	pos := make([]int32, rows)
	for i := range pos {
		pos[i] = int32(i % seq)
	}
	op := newOp("RoPE", []*G.Node{x}, xs, nil, []bool{true},
		func(in [][]float32, out []float32) {
			kernels.Active.RoPE(out, in[0], pos, r.Cos, r.Sin, rows, heads, r.HeadDim, xs[1], xs[1], 1, false)
		},
		func(_ int, _ [][]float32, _, dout, din []float32) {
			// The rotation's transpose is the rotation by -angle.
			kernels.Active.RoPE(din, dout, pos, r.Cos, r.Sin, rows, heads, r.HeadDim, xs[1], xs[1], -1, false)
		})
	return apply(op, x)
}

// CausalSoftmax is softmax(scale*s) over keys 0..i of each query row i of
// s (batch, seq, seq), zero above the diagonal.
func CausalSoftmax(s *G.Node, scale float32) (*G.Node, error) {
	ss := s.Shape()
	if len(ss) != 3 || ss[1] != ss[2] {
		return nil, fmt.Errorf("gorgonia: CausalSoftmax: scores %v, want (batch, seq, seq)", ss)
	}
	b, t := ss[0], ss[1]
	op := newOp("CausalSoftmax", []*G.Node{s}, ss, nil, []bool{true},
		func(in [][]float32, out []float32) {
			copy(out, in[0])
			lse := make([]float32, t)
			for k := 0; k < b; k++ {
				kernels.Active.CausalSoftmax(out[k*t*t:(k+1)*t*t], t, 0, t, t, scale, lse)
			}
		},
		func(_ int, _ [][]float32, out, dout, din []float32) {
			copy(din, dout)
			for k := 0; k < b; k++ {
				kernels.Active.SoftmaxBwd(out[k*t*t:(k+1)*t*t], din[k*t*t:(k+1)*t*t], t, t, t, scale)
			}
		})
	return apply(op, s)
}

// CrossEntropy is the mean next-token cross-entropy of logits (rows,
// vocab) against targets (a vector of float32 token ids; ignore marks
// rows that do not count): a scalar, the cost Gorgonia differentiates.
func CrossEntropy(logits, targets *G.Node, ignore int32) (*G.Node, error) {
	ls, ts := logits.Shape(), targets.Shape()
	if len(ls) != 2 || len(ts) != 1 || ts[0] != ls[0] {
		return nil, fmt.Errorf("gorgonia: CrossEntropy: logits %v, targets %v", ls, ts)
	}
	rows, vocab := ls[0], ls[1]
	// run returns the mean loss and writes its gradient (scaled by g) to dl.
	run := func(x, tf, dl []float32, g float32) float32 {
		tg := make([]int32, rows)
		count := 0
		for i, v := range tf {
			if int32(v) == ignore {
				tg[i] = -1
				continue
			}
			tg[i] = int32(tokenID(v, vocab))
			count++
		}
		if count == 0 {
			return 0
		}
		inv := 1 / float32(count)
		loss := make([]float32, rows)
		kernels.Active.CrossEntropy(x, tg, dl, loss, rows, vocab, inv*g)
		var sum float64
		for _, l := range loss {
			sum += float64(l)
		}
		return float32(sum) * inv
	}
	op := newOp("CrossEntropy", []*G.Node{logits, targets}, tensor.ScalarShape(), tensor.Float32, []bool{true, false},
		func(in [][]float32, out []float32) {
			out[0] = run(in[0], in[1], make([]float32, rows*vocab), 1)
		},
		func(_ int, in [][]float32, _, dout, din []float32) {
			run(in[0], in[1], din, dout[0])
		})
	return apply(op, logits, targets)
}

// Attention is causal grouped-query self-attention over B sequences of T
// tokens: q (B*T, heads*hd), k and v (B*T, kvHeads*hd) -> (B*T, heads*hd),
// as one op on the tape's kernel (kernels.Attn), which keeps no T x T
// scores. ComposedAttention builds the same from Gorgonia's own ops.
func Attention(q, k, v *G.Node, B, T, heads, kvHeads int) (*G.Node, error) {
	qs, ks := q.Shape(), k.Shape()
	if len(qs) != 2 || len(ks) != 2 || !ks.Eq(v.Shape()) || qs[0] != B*T || ks[0] != B*T || heads <= 0 || kvHeads <= 0 ||
		heads%kvHeads != 0 || qs[1]%heads != 0 || ks[1] != qs[1]/heads*kvHeads {
		return nil, fmt.Errorf("gorgonia: Attention: q %v, k %v, v %v, %d x %d tokens, %d heads, %d kv heads", qs, ks, v.Shape(), B, T, heads, kvHeads)
	}
	hd := qs[1] / heads
	at := kernels.Attn{B: B, T: T, Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: float32(1 / math.Sqrt(float64(hd)))}
	op := newOp("Attention", []*G.Node{q, k, v}, qs, nil, []bool{true, true, true},
		func(in [][]float32, out []float32) {
			at.Forward(out, in[0], in[1], in[2], make([]float32, at.ForwardScratch()))
		},
		func(i int, in [][]float32, _, dout, din []float32) {
			d := [3][]float32{}
			for j := range d {
				if j == i {
					d[j] = din
				} else {
					d[j] = make([]float32, len(in[j]))
				}
			}
			at.Backward(d[0], d[1], d[2], dout, in[0], in[1], in[2], make([]float32, at.BackwardScratch()), true, true, true)
		})
	return apply(op, q, k, v)
}

// ComposedAttention is Attention from Gorgonia's Reshape, Transpose and
// BatchedMatMul around CausalSoftmax (query heads only: heads = kvHeads).
// It holds the (B*heads, T, T) scores and sums in another order than the
// fused op: equal to it within float32 rounding.
func ComposedAttention(q, k, v *G.Node, B, T, heads int) (*G.Node, error) {
	qs := q.Shape()
	if len(qs) != 2 || !qs.Eq(k.Shape()) || !qs.Eq(v.Shape()) || qs[0] != B*T || heads <= 0 || qs[1]%heads != 0 {
		return nil, fmt.Errorf("gorgonia: ComposedAttention: q %v, k %v, v %v, %d x %d tokens, %d heads", qs, k.Shape(), v.Shape(), B, T, heads)
	}
	hd := qs[1] / heads
	var err error
	must := func(n *G.Node, e error) *G.Node {
		if err == nil {
			err = e
		}
		return n
	}
	// split: (B*T, H*hd) -> (B*H, T, hd)
	split := func(x *G.Node) *G.Node {
		x = must(G.Reshape(x, tensor.Shape{B, T, heads, hd}))
		if err != nil {
			return nil
		}
		x = must(G.Transpose(x, 0, 2, 1, 3))
		if err != nil {
			return nil
		}
		return must(G.Reshape(x, tensor.Shape{B * heads, T, hd}))
	}
	qh, kh, vh := split(q), split(k), split(v)
	if err != nil {
		return nil, fmt.Errorf("gorgonia: ComposedAttention: %w", err)
	}
	s := must(G.BatchedMatMul(qh, kh, false, true))
	if err != nil {
		return nil, fmt.Errorf("gorgonia: ComposedAttention: %w", err)
	}
	p := must(CausalSoftmax(s, float32(1/math.Sqrt(float64(hd)))))
	if err != nil {
		return nil, err
	}
	o := must(G.BatchedMatMul(p, vh))
	if err == nil {
		o = must(G.Reshape(o, tensor.Shape{B, heads, T, hd}))
	}
	if err == nil {
		o = must(G.Transpose(o, 0, 2, 1, 3))
	}
	if err == nil {
		o = must(G.Reshape(o, tensor.Shape{B * T, heads * hd}))
	}
	if err != nil {
		return nil, fmt.Errorf("gorgonia: ComposedAttention: %w", err)
	}
	return o, nil
}

// SwiGLU is silu(gate) * up on the tape's fused kernel (the composed
// HadamardProd(HadamardProd(g, Sigmoid(g)), u) is equal within float32
// rounding, not to the bit).
func SwiGLU(gate, up *G.Node) (*G.Node, error) {
	if !gate.Shape().Eq(up.Shape()) {
		return nil, fmt.Errorf("gorgonia: SwiGLU: gate %v, up %v", gate.Shape(), up.Shape())
	}
	op := newOp("SwiGLU", []*G.Node{gate, up}, gate.Shape(), nil, []bool{true, true},
		func(in [][]float32, out []float32) { kernels.Active.SwiGLUFwd(out, in[0], in[1]) },
		func(i int, in [][]float32, _, dout, din []float32) {
			dg, du := din, make([]float32, len(din))
			if i == 1 {
				dg, du = du, din
			}
			kernels.Active.SwiGLUBwd(dg, du, dout, in[0], in[1], true)
		})
	return apply(op, gate, up)
}
