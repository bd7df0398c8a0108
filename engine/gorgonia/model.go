package gorgonia

import (
	"fmt"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// Model is a layers.Model built as a Gorgonia ExprGraph for one batch
// shape, with its gradient graph, run by Gorgonia's TapeMachine. The
// graph's parameter nodes are bound to the model's own weight memory, so
// an optimizer stepping the layers.Model (ours, as `qat train --engine
// gorgonia` does) trains the graph, and checkpoints are the tape engine's.
type Model struct {
	B, T    int
	g       *G.ExprGraph
	vm      G.VM
	ids     *G.Node
	targets *G.Node
	loss    *G.Node
	idsBuf  []float32
	tgtBuf  []float32
	params  []bound
}

// bound is a parameter of the layers.Model and its node on the graph.
type bound struct {
	name string
	v    *autograd.Var
	n    *G.Node
}

var useBLAS sync.Once

// openBLAS is gonum's BLAS with sgemm from OpenBLAS (kernels.Sgemm), for
// Gorgonia's matrix products: Gorgonia takes a whole gonum BLAS, and only
// sgemm is hot in a float32 model.
type openBLAS struct{ gonum.Implementation }

func (openBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	kernels.Sgemm(tA != blas.NoTrans, tB != blas.NoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Supported reports why m cannot be built as a Gorgonia graph, nil if it
// can: every quantizer must be a qat.Quantizer on a linear layer.
func Supported(m *layers.Model) error {
	if m.DownHadamard != "" {
		return fmt.Errorf("model.down_hadamard %s: the gorgonia engine has no online Hadamard transform of the down_proj input (a rotated model): train on the tape engine", m.DownHadamard)
	}
	for _, a := range m.Attentions() {
		if a.Attention.KQuant != nil || a.Attention.VQuant != nil {
			return fmt.Errorf("%s: the gorgonia engine has no KV-cache quantizers", a.Name)
		}
	}
	for _, nl := range m.Linears() {
		if qat.Regularised(nl.Linear) {
			return fmt.Errorf("%s: the gorgonia engine has no kurtosis regularisation", nl.Name)
		}
		if a := nl.Linear.Adapter; a != nil {
			return fmt.Errorf("%s.weight_quant: the gorgonia engine runs qat fake-quant quantizers only, not %T (LR-QAT, LoRA, outliers)", nl.Name, a)
		}
		for what, q := range map[string]layers.Quantizer{"weight_quant": nl.Linear.WeightQuant, "input_quant": nl.Linear.InputQuant} {
			if q == nil {
				continue
			}
			p, ok := qat.Plain(q)
			if !ok {
				return fmt.Errorf("%s.%s: the gorgonia engine runs qat fake-quant quantizers only, not %T (LR-QAT, LoRA, outliers)", nl.Name, what, q)
			}
			if p.Scale == "clip" {
				return fmt.Errorf("%s.%s: the gorgonia engine has no learned clip values (scale: clip): train on the tape engine", nl.Name, what)
			}
		}
		if nl.Linear.Weight == nil {
			return fmt.Errorf("%s: no float32 weight", nl.Name)
		}
	}
	return nil
}

// Options choose among equivalent graphs.
type Options struct {
	// Composed builds attention from Gorgonia's Reshape, Transpose and
	// BatchedMatMul (ComposedAttention) and SwiGLU from its Sigmoid and
	// HadamardProd, instead of the ops on the tape's kernels (Attention,
	// SwiGLU). The result is equal within float32 rounding, not to the bit
	// (fake-quant rounding can then flip), and needs kv_heads = heads.
	Composed bool
}

// New builds m's loss for batches of B sequences of T tokens, and its
// gradients with respect to every trained parameter.
func New(m *layers.Model, B, T int, o Options) (*Model, error) {
	if err := Supported(m); err != nil {
		return nil, err
	}
	if o.Composed && m.KVHeads != m.Heads {
		return nil, fmt.Errorf("gorgonia: composed attention needs kv_heads = heads, have %d and %d", m.KVHeads, m.Heads)
	}
	if B <= 0 || T <= 0 || T > m.MaxSeq {
		return nil, fmt.Errorf("gorgonia: batch %d x %d tokens, max sequence %d", B, T, m.MaxSeq)
	}
	useBLAS.Do(func() { G.Use(openBLAS{}) })
	e := &Model{B: B, T: T, g: G.NewGraph(), idsBuf: make([]float32, B*T), tgtBuf: make([]float32, B*T)}
	nodes := map[*autograd.Var]*G.Node{}
	for _, p := range m.Params() {
		if p.Quant && !trained(m, p.Var) {
			continue
		}
		if !p.Var.RequiresGrad() {
			return nil, fmt.Errorf("gorgonia: %s is frozen; the gorgonia engine trains every parameter", p.Name)
		}
		shape := p.Var.Shape()
		val := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(p.Var.Data()))
		n := G.NewTensor(e.g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(p.Name), G.WithValue(val))
		nodes[p.Var] = n
		e.params = append(e.params, bound{p.Name, p.Var, n})
	}
	e.ids = G.NewVector(e.g, tensor.Float32, G.WithShape(B*T), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(B*T), tensor.WithBacking(e.idsBuf))))
	e.targets = G.NewVector(e.g, tensor.Float32, G.WithShape(B*T), G.WithName("targets"),
		G.WithValue(tensor.New(tensor.WithShape(B*T), tensor.WithBacking(e.tgtBuf))))
	b := &builder{m: m, nodes: nodes, B: B, T: T, composed: o.Composed,
		rope: m.Config.RoPE()}
	logits := b.forward(e.ids)
	if b.err != nil {
		return nil, b.err
	}
	loss, err := CrossEntropy(logits, e.targets, layers.IgnoreIndex)
	if err != nil {
		return nil, err
	}
	e.loss = loss
	wrt := make(G.Nodes, len(e.params))
	for i, p := range e.params {
		wrt[i] = p.n
	}
	if _, err := G.Grad(loss, wrt...); err != nil {
		return nil, fmt.Errorf("gorgonia: gradients: %w", err)
	}
	e.vm = G.NewTapeMachine(e.g)
	return e, nil
}

// trained reports whether a quantizer tensor of m is trained (lsq steps
// and offsets; mse steps are fixed).
func trained(m *layers.Model, v *autograd.Var) bool {
	for _, nl := range m.Linears() {
		for _, lq := range []layers.Quantizer{nl.Linear.WeightQuant, nl.Linear.InputQuant} {
			if q, ok := qat.Plain(lq); ok && q.Scale == "lsq" && (q.Step == v || q.Offset == v) {
				return true
			}
		}
	}
	return false
}

// Params returns the trained parameters in the graph's order.
func (e *Model) Params() []*autograd.Var {
	out := make([]*autograd.Var, len(e.params))
	for i, p := range e.params {
		out[i] = p.v
	}
	return out
}

// LossBackward runs the graph on one batch (ids and targets, B*T each) and
// adds (+=) the loss's gradients into the parameters' gradients, as the
// tape's Backward does; it returns the loss.
func (e *Model) LossBackward(ids, targets []int32) (float32, error) {
	if len(ids) != e.B*e.T || len(targets) != e.B*e.T {
		return 0, fmt.Errorf("gorgonia: %d ids and %d targets for a graph of %d x %d", len(ids), len(targets), e.B, e.T)
	}
	for i := range ids {
		e.idsBuf[i], e.tgtBuf[i] = float32(ids[i]), float32(targets[i])
	}
	// Gorgonia accumulates gradients across runs unless reset.
	defer e.vm.Reset()
	if err := e.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("gorgonia: %w", err)
	}
	loss, err := floats(e.loss.Op(), []G.Value{e.loss.Value()})
	if err != nil {
		return 0, err
	}
	for _, p := range e.params {
		gv, err := p.n.Grad()
		if err != nil {
			return 0, fmt.Errorf("gorgonia: gradient of %s: %w", p.name, err)
		}
		g, err := floats(p.n.Op(), []G.Value{gv})
		if err != nil {
			return 0, err
		}
		if len(g[0]) != p.v.Size() {
			return 0, fmt.Errorf("gorgonia: gradient of %s has %d values, want %d", p.name, len(g[0]), p.v.Size())
		}
		kernels.Active.Axpy(p.v.GradData(), g[0], 1)
	}
	return loss[0][0], nil
}

// Close releases the machine.
func (e *Model) Close() error { return e.vm.Close() }

// builder writes the forward graph, keeping the first error.
type builder struct {
	m     *layers.Model
	nodes map[*autograd.Var]*G.Node
	rope  *autograd.RoPETable
	B, T  int
	// composed: Options.Composed.
	composed bool
	err      error
}

// do records err and reports whether building goes on.
func (b *builder) do(n *G.Node, err error) *G.Node {
	if err != nil && b.err == nil {
		b.err = err
	}
	return n
}

func (b *builder) forward(ids *G.Node) *G.Node {
	m := b.m
	x := b.do(Embedding(b.nodes[m.Embed.Weight], ids))
	for _, l := range m.Layers {
		if b.err != nil {
			return nil
		}
		h := b.add(x, b.attention(l.Attn, b.norm(l.AttnNorm, x)))
		x = b.add(h, b.mlp(l.MLP, b.norm(l.MLPNorm, h)))
	}
	x = b.norm(m.Norm, x)
	if m.Head != nil {
		return b.linear(m.Head, x)
	}
	return b.matmulT(x, b.nodes[m.Embed.Weight])
}

func (b *builder) add(x, y *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.do(G.Add(x, y))
}

func (b *builder) norm(n *layers.RMSNorm, x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.do(RMSNorm(x, b.nodes[n.Weight], n.Eps))
}

// matmulT is x w^T for x (rows, in) and w (out, in).
func (b *builder) matmulT(x, w *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.do(G.Mul(x, b.do(G.Transpose(w))))
}

// linear is Q_in(x) Q_w(W)^T (+ b) with the layer's quantizers and bias.
func (b *builder) linear(l *layers.Linear, x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	w := b.nodes[l.Weight]
	if q, ok := qat.Plain(l.InputQuant); ok {
		x = b.do(FakeQuant(q, x, b.quantParams(q)...))
	}
	if q, ok := qat.Plain(l.WeightQuant); ok {
		w = b.do(FakeQuant(q, w, b.quantParams(q)...))
	}
	y := b.matmulT(x, w)
	if l.Bias != nil && b.err == nil {
		y = b.do(BiasAdd(y, b.nodes[l.Bias]))
	}
	return y
}

func (b *builder) quantParams(q *qat.Quantizer) []*G.Node {
	if q.Scale != "lsq" {
		return nil
	}
	ps := []*G.Node{b.nodes[q.Step]}
	if q.Offset != nil {
		ps = append(ps, b.nodes[q.Offset])
	}
	return ps
}

func (b *builder) attention(a *layers.Attention, x *G.Node) *G.Node {
	q, k, v := b.linear(a.Q, x), b.linear(a.K, x), b.linear(a.V, x)
	if b.err != nil {
		return nil
	}
	q = b.do(RoPE(q, b.rope, b.T, b.m.Heads))
	k = b.do(RoPE(k, b.rope, b.T, b.m.KVHeads))
	if b.err != nil {
		return nil
	}
	var o *G.Node
	if b.composed {
		o = b.do(ComposedAttention(q, k, v, b.B, b.T, b.m.Heads))
	} else {
		o = b.do(Attention(q, k, v, b.B, b.T, b.m.Heads, b.m.KVHeads))
	}
	if b.err != nil {
		return nil
	}
	return b.linear(a.O, o)
}

// mlp is down(silu(gate(x)) * up(x)).
func (b *builder) mlp(m *layers.MLP, x *G.Node) *G.Node {
	g, u := b.linear(m.Gate, x), b.linear(m.Up, x)
	if b.err != nil {
		return nil
	}
	var h *G.Node
	if b.composed {
		// silu from Gorgonia's Sigmoid and HadamardProd
		silu := b.do(G.HadamardProd(g, b.do(G.Sigmoid(g))))
		if b.err != nil {
			return nil
		}
		h = b.do(G.HadamardProd(silu, u))
	} else {
		h = b.do(SwiGLU(g, u))
	}
	if b.err != nil {
		return nil
	}
	return b.linear(m.Down, h)
}
