package layers

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"qat/autograd"
	"qat/data/safetensors"
	"qat/kernels"
)

// Quantizer fake-quantizes a tensor on the tape (package qat implements
// it); the model only knows where quantizers sit.
type Quantizer interface {
	Apply(ops autograd.Ops, x *autograd.Var) *autograd.Var
	// State returns the quantizer's learned tensors by name ("step"); they
	// are trained and checkpointed with the weights.
	State() map[string]*autograd.Var
	// Replica returns a copy for a data-parallel worker: learned tensors
	// share their values and get their own gradients.
	Replica() Quantizer
}

// InputSharer is implemented by quantizers that can tell when another one
// computes the same function of the same input (dynamic scales, no
// state): linears that share an input (q/k/v, gate/up) then quantize it
// once, and the shared result's gradient is the sum theirs would have been.
type InputSharer interface {
	SameAs(q Quantizer) bool
}

// Adapter wraps a linear (package lora: LoRA-QAT, LR-QAT): it computes the
// layer's whole product from the input x and the layer's weight w (nil
// when the adapter keeps the base weight itself, as LR-QAT's frozen
// integers), with its own quantization of the adapted weight.
type Adapter interface {
	Product(ops autograd.Ops, x, w *autograd.Var) *autograd.Var
	// State returns the adapter's trained tensors by name ("lora_a").
	State() map[string]*autograd.Var
	// Replica returns a copy for a data-parallel worker, as
	// Quantizer.Replica.
	Replica() Adapter
}

// FrozenState is implemented by quantizers and adapters that hold frozen
// tensors of their own (LR-QAT's int8 base weight): checkpointed with the
// model as NAME.weight_quant.KEY in their own dtype, never trained.
type FrozenState interface {
	Frozen() map[string]safetensors.Tensor
	LoadFrozen(key string, t safetensors.Tensor) error
}

// Observer watches a linear's input before its input quantizer, or its
// output (package qat's kurtosis, GPTQ Hessian and smoothing statistics;
// arXiv 2404.03605 regularises the outputs' kurtosis): Observe returns x
// itself, or a new Var equal to x when it adds a gradient of its own in
// backward (the kurtosis penalty). Observers measure; they never change
// the value, so they are not quantizers.
type Observer interface {
	Observe(ops autograd.Ops, x *autograd.Var) *autograd.Var
	// Replica returns the observer a data-parallel worker uses: a copy
	// with its own statistics, or the observer itself when it is only
	// run on one model.
	Replica() Observer
}

func sameQuant(a, b Quantizer) bool {
	s, ok := a.(InputSharer)
	return ok && b != nil && s.SameAs(b)
}

// Linear is a linear layer, y = x W^T (+ b), W (out, in), the bias b
// (out) only where the architecture has one (Qwen2's q/k/v). With
// quantizers attached (qat.Prepare) it computes Q_in(x) Q_w(W)^T + b: the
// bias stays in full precision, as torchao's fake-quantized linears keep
// it.
type Linear struct {
	Weight *autograd.Var `st:"weight" gguf:"weight"`
	// Bias is nil for a bias-free layer (every Llama linear).
	Bias *autograd.Var `st:"bias" gguf:"bias"`
	// WeightQuant and InputQuant are nil for a full-precision layer; their
	// learned state is checkpointed as NAME.weight_quant.step and so on.
	WeightQuant Quantizer `st:"weight_quant,quant"`
	// Adapter, when set, computes the product (WeightQuant is then nil).
	// Its state keeps the checkpoint names it had when adapters were
	// weight quantizers (NAME.weight_quant.lora_a), so checkpoints from
	// before read unchanged.
	Adapter    Adapter   `st:"weight_quant,quant"`
	InputQuant Quantizer `st:"input_quant,quant"`
	// Observers see the input, in order, before InputQuant, and
	// OutputObservers the product; they hold no checkpointed state (qat
	// attaches and detaches them).
	Observers       []Observer
	OutputObservers []Observer
}

// Forward applies the layer.
func (l *Linear) Forward(ops autograd.Ops, x *autograd.Var) *autograd.Var {
	w := l.Weight
	x = l.observe(ops, x)
	if l.InputQuant != nil {
		x = l.InputQuant.Apply(ops, x)
	}
	return l.observeOut(ops, l.addBias(ops, l.product(ops, x, w)))
}

// ForwardAdd returns res + Forward(x): with no quantizer and no bias one
// product that adds into a copy of res (LinearAdd).
func (l *Linear) ForwardAdd(ops autograd.Ops, x, res *autograd.Var) *autograd.Var {
	if l.Quantized() || l.Bias != nil {
		return ops.Add(res, l.Forward(ops, x))
	}
	return ops.LinearAdd(x, l.Weight, res)
}

// addBias returns y + Bias broadcast over y's rows, or y itself for a
// bias-free layer. The bias's gradient is the column sum of y's.
func (l *Linear) addBias(ops autograd.Ops, y *autograd.Var) *autograd.Var {
	if l.Bias == nil {
		return y
	}
	return AddBias(ops, y, l.Bias)
}

// AddBias returns y + b for y (..., n) and b (n), b added to every row.
func AddBias(ops autograd.Ops, y, b *autograd.Var) *autograd.Var {
	n := b.Size()
	if len(b.Shape()) != 1 || y.Size()%n != 0 || y.Shape()[len(y.Shape())-1] != n {
		panic(fmt.Sprintf("layers: AddBias: y %v, bias %v", y.Shape(), b.Shape()))
	}
	yv, bv := y.Data(), b.Data()
	return ops.Custom(y.Shape(), []*autograd.Var{y, b}, func(out []float32) {
		for r := 0; r < len(out); r += n {
			o, yr := out[r:r+n], yv[r:r+n]
			for j := range o {
				o[j] = yr[j] + bv[j]
			}
		}
	}, func(dout []float32, dins [][]float32) {
		if dy := dins[0]; dy != nil {
			for i, g := range dout {
				dy[i] += g
			}
		}
		if db := dins[1]; db != nil {
			for r := 0; r < len(dout); r += n {
				for j, g := range dout[r : r+n] {
					db[j] += g
				}
			}
		}
	})
}

// observe runs the observers on x.
func (l *Linear) observe(ops autograd.Ops, x *autograd.Var) *autograd.Var {
	for _, o := range l.Observers {
		x = o.Observe(ops, x)
	}
	return x
}

// observeOut runs the output observers on the product y.
func (l *Linear) observeOut(ops autograd.Ops, y *autograd.Var) *autograd.Var {
	for _, o := range l.OutputObservers {
		y = o.Observe(ops, y)
	}
	return y
}

// product is x times the (quantized) weight.
func (l *Linear) product(ops autograd.Ops, x, w *autograd.Var) *autograd.Var {
	if l.Adapter != nil {
		return l.Adapter.Product(ops, x, w)
	}
	if l.WeightQuant != nil {
		w = l.WeightQuant.Apply(ops, w)
	}
	return ops.Linear(x, w)
}

// Quantized reports whether a quantizer, an adapter or an observer is
// attached: then the layer is not one plain product.
func (l *Linear) Quantized() bool {
	return l.WeightQuant != nil || l.Adapter != nil || l.InputQuant != nil || len(l.Observers) > 0 || len(l.OutputObservers) > 0
}

// anyQuantized reports whether any of ls has a quantizer attached: then
// they cannot share one full-precision product.
func anyQuantized(ls ...*Linear) bool {
	for _, l := range ls {
		if l.Quantized() {
			return true
		}
	}
	return false
}

// linearCat applies linears that share an input: one joint product when
// they are full precision (LinearCat), each through its quantizers
// otherwise.
func linearCat(ops autograd.Ops, x *autograd.Var, ls ...*Linear) []*autograd.Var {
	if !anyQuantized(ls...) {
		ws := make([]*autograd.Var, len(ls))
		for i, l := range ls {
			ws[i] = l.Weight
		}
		out := ops.LinearCat(x, ws...)
		for i, l := range ls {
			out[i] = l.addBias(ops, out[i])
		}
		return out
	}
	out := make([]*autograd.Var, len(ls))
	var xq *autograd.Var // ls[0]'s quantized input, when its observers passed x through
	for i, l := range ls {
		xo := l.observe(ops, x)
		xi := xo
		switch {
		case l.InputQuant == nil:
		case i > 0 && xq != nil && xo == x && sameQuant(l.InputQuant, ls[0].InputQuant):
			xi = xq
		default:
			xi = l.InputQuant.Apply(ops, xo)
			if i == 0 && xo == x {
				xq = xi
			}
		}
		out[i] = l.observeOut(ops, l.addBias(ops, l.product(ops, xi, l.Weight)))
	}
	return out
}

// Embedding is a token table (vocab, dim).
type Embedding struct {
	Weight *autograd.Var `st:"weight" gguf:"weight"`
}

// RMSNorm scales each row to unit root-mean-square, then by Weight.
type RMSNorm struct {
	Weight *autograd.Var `st:"weight" gguf:"weight"`
	Eps    float32
}

// Forward applies the norm over the last dimension.
func (n *RMSNorm) Forward(ops autograd.Ops, x *autograd.Var) *autograd.Var {
	return ops.RMSNorm(x, n.Weight, n.Eps)
}

// Attention is causal grouped-query self-attention with RoPE. Q, K and V
// read the same input (their input tag names the group).
type Attention struct {
	Q *Linear `st:"q_proj" gguf:"attn_q" input:"qkv"`
	K *Linear `st:"k_proj" gguf:"attn_k" input:"qkv"`
	V *Linear `st:"v_proj" gguf:"attn_v" input:"qkv"`
	O *Linear `st:"o_proj" gguf:"attn_output"`
	// KQuant and VQuant fake-quantize the keys (after RoPE) and values,
	// what a quantized KV cache stores; nil keeps them in full precision.
	KQuant Quantizer `st:"k_cache_quant,quant"`
	VQuant Quantizer `st:"v_cache_quant,quant"`
	*Options
}

// Forward returns res + attention(x) for x and res (B, T, dim): the output
// projection adds into the residual stream (Linear.ForwardAdd). q is
// (B, T, heads*head_dim), k and v (B, T, kv_heads*head_dim); head_dim
// need not be dim/heads.
func (a *Attention) Forward(ops autograd.Ops, x *autograd.Var, pos []int32, res *autograd.Var) *autograd.Var {
	if !anyQuantized(a.Q, a.K, a.V) && a.KQuant == nil && a.Q.Bias == nil && a.K.Bias == nil && a.V.Bias == nil {
		return a.O.ForwardAdd(ops, ops.AttentionCat(x, a.Q.Weight, a.K.Weight, a.V.Weight, a.rope, pos, a.Heads, a.KVHeads), res)
	}
	qkv := linearCat(ops, x, a.Q, a.K, a.V)
	q := ops.RoPE(qkv[0], a.rope, pos, a.Heads)
	k := ops.RoPE(qkv[1], a.rope, pos, a.KVHeads)
	v := qkv[2]
	if a.KQuant != nil {
		k, v = a.KQuant.Apply(ops, k), a.VQuant.Apply(ops, v)
	}
	return a.O.ForwardAdd(ops, ops.Attention(q, k, v, a.Heads, a.KVHeads), res)
}

// MLP is the SwiGLU feed-forward block: down(silu(gate(x)) * up(x)).
// Gate and up run as one product when packed (see New).
type MLP struct {
	Gate *Linear `st:"gate_proj" gguf:"ffn_gate" input:"gate_up"`
	Up   *Linear `st:"up_proj" gguf:"ffn_up" input:"gate_up"`
	Down *Linear `st:"down_proj" gguf:"ffn_down"`
	// Online is a rotated model's transform of the down_proj input
	// (Config.DownHadamard), nil for none: down(H(silu(gate(x)) * up(x))).
	// It holds no state, so replicas share it.
	Online *kernels.Hadamard
}

// Forward returns res + mlp(x), the down projection adding into the
// residual stream.
func (m *MLP) Forward(ops autograd.Ops, x, res *autograd.Var) *autograd.Var {
	var act *autograd.Var
	if !anyQuantized(m.Gate, m.Up) {
		act = ops.SwiGLUCat(x, m.Gate.Weight, m.Up.Weight)
	} else {
		gu := linearCat(ops, x, m.Gate, m.Up)
		act = ops.SwiGLU(gu[0], gu[1])
	}
	if m.Online != nil {
		// before down_proj's observers and input quantizer: they see
		// (and quantize) the rotated input
		act = ops.Hadamard(act, m.Online)
	}
	return m.Down.ForwardAdd(ops, act, res)
}

// Layer is one pre-norm transformer block. GGUF names the attention and
// MLP tensors directly under the block (blk.3.attn_q).
type Layer struct {
	AttnNorm *RMSNorm   `st:"input_layernorm" gguf:"attn_norm"`
	Attn     *Attention `st:"self_attn" gguf:""`
	MLPNorm  *RMSNorm   `st:"post_attention_layernorm" gguf:"ffn_norm"`
	MLP      *MLP       `st:"mlp" gguf:""`
}

// Forward: h = x + attn(norm(x)); out = h + mlp(norm(h)).
func (l *Layer) Forward(ops autograd.Ops, x *autograd.Var, pos []int32) *autograd.Var {
	h := l.Attn.Forward(ops, l.AttnNorm.Forward(ops, x), pos, x)
	return l.MLP.Forward(ops, l.MLPNorm.Forward(ops, h), h)
}

// Options are the hyperparameters shared by pointer between layers; rope
// is Config.RoPE's table (scaled RoPE included).
type Options struct {
	Config
	rope *autograd.RoPETable
}

// SetDownHadamard gives the model the online transform of the down_proj
// input that kind names (Config.DownHadamard: "full", "block", or "" for
// none) and records it in its config, so checkpoints and exports carry
// it. Package qat/rotate calls it after folding the transform's inverse
// into the down_proj weights.
func (m *Model) SetDownHadamard(kind string) error {
	c := m.Config
	c.DownHadamard = kind
	if err := c.Validate(); err != nil {
		return err
	}
	h, err := c.DownTransform()
	if err != nil {
		return err
	}
	m.Options.Config.DownHadamard = kind
	for _, l := range m.Layers {
		l.MLP.Online = h
	}
	return nil
}

// Untie gives a tied model its own lm_head, a copy of the embedding table,
// and records Tied false: the two can then differ (a rotation folds the
// final norm into the head only). An untied model is left as it is.
func (m *Model) Untie() {
	if m.Head != nil {
		return
	}
	m.Head = &Linear{Weight: autograd.NewParam(m.Vocab, m.Dim)}
	copy(m.Head.Weight.Data(), m.Embed.Weight.Data())
	m.Options.Config.Tied = false
}

// Model is a Llama decoder.
type Model struct {
	Embed  *Embedding `st:"model.embed_tokens" gguf:"token_embd"`
	Layers []*Layer   `st:"model.layers" gguf:"blk"`
	Norm   *RMSNorm   `st:"model.norm" gguf:"output_norm"`
	// Head is the output projection; with tied embeddings it is nil and the
	// embedding table serves as lm_head.
	Head *Linear `st:"lm_head,optional" gguf:"output"`
	*Options
	pos []int32
}

// New builds a model for c with zero weights (see Init). It panics if c is
// invalid: configs are validated where they are read.
func New(c Config) *Model {
	if err := c.Validate(); err != nil {
		panic("layers: " + err.Error())
	}
	m := build(&Options{Config: c, rope: c.RoPE()}, autograd.NewParam)
	if h, err := c.DownTransform(); err != nil {
		panic("layers: " + err.Error()) // Validate checked it
	} else {
		for _, l := range m.Layers {
			l.MLP.Online = h
		}
	}
	// One arena for weights and one for gradients, in checkpoint order:
	// q/k/v and gate/up sit next to each other and run as one product each
	// (LinearCat); the optimizer and checkpoints see flat memory. PackNew
	// starts the values at zero: set them after.
	autograd.PackNew(packOrder(m.Params()))
	for _, p := range m.Params() {
		if len(p.Var.Shape()) == 1 && !isBias(p.Name) { // norms start at 1, biases at 0
			for i := range p.Var.Data() {
				p.Var.Data()[i] = 1
			}
		}
	}
	return m
}

// isBias reports whether the parameter named name is a linear's bias.
func isBias(name string) bool { return strings.HasSuffix(name, ".bias") }

// PackOrder is the indices of ps in the order of their memory in a
// packed model (New, Replicate): Params' order with the biases moved to
// the end, so q/k/v's weights stay adjacent (one joint product) when
// q/k/v carry biases. Whoever moves gradients or weights in bulk (engine/dp)
// walks them in this order to find them as one run of memory.
func PackOrder(ps []Param) []int {
	order := make([]int, 0, len(ps))
	var biases []int
	for i, p := range ps {
		if isBias(p.Name) {
			biases = append(biases, i)
			continue
		}
		order = append(order, i)
	}
	return append(order, biases...)
}

// packOrder is ps's variables in PackOrder.
func packOrder(ps []Param) []*autograd.Var {
	vars := make([]*autograd.Var, 0, len(ps))
	for _, i := range PackOrder(ps) {
		vars = append(vars, ps[i].Var)
	}
	return vars
}

// Describe returns the model New(c) builds without its weights: every
// parameter has its shape and no value (autograd.NewShape). Loaders check
// files, and configurations their rules, against its names and shapes
// before anything is allocated; it cannot run.
func Describe(c Config) *Model {
	return build(&Options{Config: c}, autograd.NewShape)
}

// build lays out the model of o.Config with parameters from param.
func build(o *Options, param func(shape ...int) *autograd.Var) *Model {
	c := o.Config
	lin := func(out, in int) *Linear { return &Linear{Weight: param(out, in)} }
	biased := func(out, in int) *Linear {
		l := lin(out, in)
		if c.QKVBias {
			l.Bias = param(out)
		}
		return l
	}
	norm := func() *RMSNorm { return &RMSNorm{Weight: param(c.Dim), Eps: float32(c.NormEps)} }
	kv, q := c.HeadDim()*c.KVHeads, c.HeadDim()*c.Heads
	m := &Model{Embed: &Embedding{Weight: param(c.Vocab, c.Dim)}, Norm: norm(), Options: o}
	for i := 0; i < c.Layers; i++ {
		m.Layers = append(m.Layers, &Layer{
			AttnNorm: norm(),
			Attn:     &Attention{Q: biased(q, c.Dim), K: biased(kv, c.Dim), V: biased(kv, c.Dim), O: lin(c.Dim, q), Options: o},
			MLPNorm:  norm(),
			MLP:      &MLP{Gate: lin(c.FFNHidden, c.Dim), Up: lin(c.FFNHidden, c.Dim), Down: lin(c.Dim, c.FFNHidden)},
		})
	}
	if !c.Tied {
		m.Head = lin(c.Vocab, c.Dim)
	}
	return m
}

// Init draws every matrix from N(0, 0.02^2), the residual output projections
// (o_proj, down_proj) from N(0, (0.02/sqrt(2*layers))^2) as GPT-2 does so the
// residual stream's variance does not grow with depth; norms are 1, biases
// 0.
func (m *Model) Init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	resid := 0.02 / math.Sqrt(2*float64(m.Config.Layers))
	fill := func(v *autograd.Var, std float64) {
		for i := range v.Data() {
			v.Data()[i] = float32(rng.NormFloat64() * std)
		}
	}
	residual := map[*autograd.Var]bool{} // the projections that add into the residual stream
	for _, l := range m.Layers {
		residual[l.Attn.O.Weight], residual[l.MLP.Down.Weight] = true, true
	}
	for _, p := range m.Params() {
		switch {
		case isBias(p.Name):
			clear(p.Var.Data()) // as transformers initialises them
		case len(p.Var.Shape()) == 1:
			for i := range p.Var.Data() {
				p.Var.Data()[i] = 1
			}
		case residual[p.Var]:
			fill(p.Var, resid)
		default:
			fill(p.Var, 0.02)
		}
	}
}

// positions returns 0..T-1 repeated B times, cached.
func (m *Model) positions(B, T int) []int32 {
	if len(m.pos) != B*T || (T > 0 && len(m.pos) > 0 && m.pos[len(m.pos)-1] != int32(T-1)) {
		m.pos = make([]int32, B*T)
		for i := range m.pos {
			m.pos[i] = int32(i % T)
		}
	}
	return m.pos
}

// Forward returns logits (B, T, vocab) for ids (B*T token ids, row-major).
// It panics when T exceeds MaxSeq or an id is outside the vocabulary.
func (m *Model) Forward(ops autograd.Ops, ids []int32, B, T int) *autograd.Var {
	if T > m.MaxSeq || B*T != len(ids) {
		panic(fmt.Sprintf("layers: Forward: %d ids as %d x %d, max sequence %d", len(ids), B, T, m.MaxSeq))
	}
	pos := m.positions(B, T)
	x := ops.Embedding(m.Embed.Weight, ids, B, T, m.Dim)
	for _, l := range m.Layers {
		x = l.Forward(ops, x, pos)
	}
	x = m.Norm.Forward(ops, x)
	if m.Head != nil {
		return m.Head.Forward(ops, x)
	}
	return ops.Linear(x, m.Embed.Weight)
}

// IgnoreIndex marks targets that do not count in the loss (padding), as in
// PyTorch's cross_entropy.
const IgnoreIndex = -100

// Loss returns the mean next-token cross-entropy of ids against targets.
func (m *Model) Loss(ops autograd.Ops, ids, targets []int32, B, T int) *autograd.Var {
	return ops.CrossEntropy(m.Forward(ops, ids, B, T), targets, IgnoreIndex)
}
