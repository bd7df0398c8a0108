// Package device runs a Llama training step (forward, loss and backward)
// as explicit calls to a kernel backend, the way llm.c writes its step:
// the GPU (kernels/cuda's Device, build tag gpu) or its host build
// (cuda.Host, the same arithmetic on the CPU). The step reads the weights
// of a layers.Model and adds the gradients into the model's, so the
// optimizer, checkpoints and training loop stay those of the tape; tests
// compare it with the tape on the CPU through cuda.Host, and the GPU tests
// run the same comparison on the device.
package device

import (
	"fmt"
	"math"

	"qat/autograd"
	"qat/kernels"
	"qat/kernels/cuda"
	"qat/layers"
	"qat/qat"
)

// Backend is the op set the step is written against, with F the float
// buffers and I the int32 buffers of the backend: cuda.Host ([]float32,
// []int32) and *cuda.Device (cuda.Buffer for both).
type Backend[F, I any] interface {
	Floats(n int) (F, error)
	Ints(n int) (I, error)
	WriteFloats(dst F, src []float32) error
	WriteInts(dst I, src []int32) error
	ReadFloats(dst []float32, src F) error
	Zero(b F, n int) error
	Copy(dst, src F, n int) error
	Sgemm(tA, tB bool, m, n, k int, alpha float32, a F, lda int, b F, ldb int, beta float32, c F, ldc int) error
	RMSNormFwd(y, rstd, x, w F, rows, dim int, eps float32) error
	RMSNormBwd(dx, dw, dy, x, w, rstd F, rows, dim int) error
	RoPE(y, x F, pos I, cos, sin F, rows, heads, hd int, sign float32, acc bool) error
	SwiGLUFwd(y, g, u F, n int) error
	SwiGLUBwd(dg, du, dy, g, u F, n int) error
	CrossEntropy(x F, t I, dx, loss F, rows, n int, gscale float32) error
	Add(y, a, b F, n int) error
	EmbeddingFwd(y, w F, ids I, rows, dim int) error
	EmbeddingBwd(dw, dy F, ids I, rows, dim int) error
	AttnForward(a cuda.Attn, out, lse, q, k, v F) error
	AttnBackward(a cuda.Attn, dQ, dK, dV, dout, out, lse, delta, q, k, v F, fq, fk, fv bool) error
	// fake quantization (minmax scales) and its straight-through backward
	Masks(n int) (F, error)
	DynamicScales(scale, zero, lo, x F, n, group int, kind int32, qmin, qmax, fmax float32) error
	FakeQuantAffine(y, mask, x, scale, zero F, n, group int, qmin, qmax float32) error
	FakeQuantFP(y, mask, x, scale F, n, group int, f kernels.FPFormat) error
	FakeQuantQ4_0(y, mask, x F, n int) error
	FakeQuantQ8_0(y, mask, x F, n int) error
	MaskGrad(dx, dy, mask F, n int) error
	FakeQuantLSQ(y, mask, x, step F, n, group int, qn, qp float32) error
	LSQGrad(dx, dstep, dy, x, step F, n, group int, qn, qp, gscale float32) error
}

// param is one weight on the backend with its gradient, and for a linear
// its weight and input quantizers (nil: full precision).
type param[F any] struct {
	v      *autograd.Var
	w, g   F
	wq, xq *fq[F]
}

// fq is a qat.Quantizer on the backend: minmax scales computed from each
// input, mse's fixed steps and zero points, or LSQ's learned steps (whose
// gradient goes back to the quantizer's step tensor); its input, output
// and mask are kept for the backward.
type fq[F any] struct {
	q                 *qat.Quantizer
	kind              int32
	qmin, qmax, fmax  float32
	fp                kernels.FPFormat
	n, group          int
	out, mask, sc, zr F
	lo, in            F
	step              *param[F] // lsq: the learned steps and their gradient
	gscale            float32
}

// layer holds one block's weights and the activations its backward reads.
type layer[F any] struct {
	attnNorm, q, k, v, o, mlpNorm, gate, up, down param[F]
	// bq, bk, bv are q/k/v's biases (Qwen2), nil without
	bq, bk, bv *param[F]

	x, xn1, rstd1, qr, kr, vv, att, lse, h, xn2, rstd2, g, u, s F
}

// Step is a Llama step for batches of B x T tokens on a backend.
type Step[F, I any] struct {
	be      Backend[F, I]
	m       *layers.Model
	c       layers.Config
	B, T    int
	attn    cuda.Attn
	embed   param[F]
	norm    param[F]
	head    *param[F]
	layers  []layer[F]
	params  []*param[F]
	ids     I
	tgt     I
	pos     I
	ones    F // N ones: biases broadcast and summed by rank-one products
	cos     F
	sin     F
	xo      F // the running activation: the last layer's output
	xf      F
	rstdf   F
	logits  F
	dlogits F
	loss    F
	// backward scratch
	dx, dh, dxn, datt, dq, dk, dv, dqr, dkr, ds, dg, du, delta F
	dwq, dxq                                                   F // quantized products' gradients
	lossHost, gradHost                                         []float32
	tg                                                         []int32
}

// New lays m out on be for B x T batches. The blocks' linears may carry
// qat quantizers: minmax scales (int grids, FP formats, Q4_0/Q8_0: every
// preset but QQQ's two-level one), mse's fixed steps and LSQ's learned
// ones (symmetric; their gradients go to the quantizers' step tensors, as
// on the tape). LSQ+, GWQ outliers, two-level groups, LR-QAT adapters and
// a quantized KV cache or lm_head are refused, and so is a rotated
// model's online transform (Config.DownHadamard). head_dim != dim/heads, q/k/v
// biases and rope_scaling run (the RoPE table is the model's).
func New[F, I any](be Backend[F, I], m *layers.Model, B, T int) (*Step[F, I], error) {
	c := m.Config
	if c.DownHadamard != "" {
		return nil, fmt.Errorf("device step: model.down_hadamard %s: the device step has no online Hadamard transform of the down_proj input (a rotated model) yet: train on the cpu", c.DownHadamard)
	}
	for _, l := range m.Layers {
		if l.Attn.KQuant != nil {
			return nil, fmt.Errorf("device step: the model quantizes its KV cache; the device step does not yet")
		}
	}
	if m.Head != nil && m.Head.Quantized() {
		return nil, fmt.Errorf("device step: lm_head is quantized; the device step quantizes the blocks' linears only")
	}
	if T > c.MaxSeq {
		return nil, fmt.Errorf("device step: %d tokens, max sequence %d", T, c.MaxSeq)
	}
	hd := c.HeadDim()
	s := &Step[F, I]{be: be, m: m, c: c, B: B, T: T,
		attn: cuda.Attn{B: B, T: T, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: hd, Scale: float32(1 / math.Sqrt(float64(hd)))}}
	var err error
	floats := func(n int) F {
		var f F
		if err == nil {
			f, err = be.Floats(n)
		}
		return f
	}
	ints := func(n int) I {
		var i I
		if err == nil {
			i, err = be.Ints(n)
		}
		return i
	}
	par := func(v *autograd.Var) param[F] {
		p := param[F]{v: v, w: floats(v.Size()), g: floats(v.Size())}
		return p
	}
	newFQ := func(q layers.Quantizer, row, n int) *fq[F] {
		if q == nil || err != nil {
			return nil
		}
		qq, ok := qat.Plain(q)
		switch {
		case !ok:
			err = fmt.Errorf("device step: a %T quantizer (GWQ outliers, QQQ's two-level groups, LR-QAT) does not run on the device yet", q)
			return nil
		case qq.Scale == "clip":
			err = fmt.Errorf("device step: learned clip values (scale: clip) do not run on the device yet: train on the cpu")
			return nil
		case qq.Scale == "lsq" && !qq.Symmetric:
			err = fmt.Errorf("device step: LSQ+ (asymmetric lsq) does not run on the device yet")
			return nil
		case qq.Scale != "minmax" && qq.Format != kernels.Int:
			err = fmt.Errorf("device step: %s scales on %s do not run on the device", qq.Scale, qq.Format)
			return nil
		}
		f := &fq[F]{q: qq, n: n, out: floats(n)}
		if f.mask, err = be.Masks(n); err != nil {
			return nil
		}
		switch qq.Format {
		case kernels.Q4_0, kernels.Q8_0:
			return f
		case kernels.Int:
			f.qmin, f.qmax = qq.Grid()
			f.kind = cuda.ScaleSym
			if !qq.Symmetric {
				f.kind = cuda.ScaleAsym
			}
		default:
			f.fp, f.kind = qq.Format.FP(), cuda.ScaleFP
			f.fmax = f.fp.Max
		}
		f.group, err = qq.Group(row, n)
		f.sc, f.zr, f.lo = floats(n/f.group), floats(n/f.group), floats(n/f.group)
		if qq.Scale == "lsq" {
			p := par(qq.Step)
			f.step = &p
			s.params = append(s.params, f.step)
			g := f.group
			if qq.Activation {
				g = row
			}
			f.gscale = float32(1 / math.Sqrt(float64(g)*float64(f.qmax)))
		}
		return f
	}
	quant := func(p *param[F], l *layers.Linear, N int) {
		in := p.v.Shape()[1]
		if l.Adapter != nil && err == nil {
			err = fmt.Errorf("device step: a %T quantizer (GWQ outliers, QQQ's two-level groups, LR-QAT) does not run on the device yet", l.Adapter)
		}
		p.wq = newFQ(l.WeightQuant, in, p.v.Size())
		p.xq = newFQ(l.InputQuant, in, N*in)
		if len(l.Observers)+len(l.OutputObservers) > 0 && err == nil {
			err = fmt.Errorf("device step: observers (kurtosis taps) do not run on the device yet")
		}
	}
	N, d, kv, f, V := B*T, c.Dim, c.KVHeads*hd, c.FFNHidden, c.Vocab
	qd := c.Heads * hd // q and the attention output: head_dim need not be dim/heads
	s.embed, s.norm = par(m.Embed.Weight), par(m.Norm.Weight)
	s.params = append(s.params, &s.embed)
	for _, l := range m.Layers {
		s.layers = append(s.layers, layer[F]{
			attnNorm: par(l.AttnNorm.Weight), q: par(l.Attn.Q.Weight), k: par(l.Attn.K.Weight), v: par(l.Attn.V.Weight),
			o: par(l.Attn.O.Weight), mlpNorm: par(l.MLPNorm.Weight), gate: par(l.MLP.Gate.Weight), up: par(l.MLP.Up.Weight),
			down: par(l.MLP.Down.Weight),
			x:    floats(N * d), xn1: floats(N * d), rstd1: floats(N), qr: floats(N * qd), kr: floats(N * kv), vv: floats(N * kv),
			att: floats(N * qd), lse: floats(B * c.Heads * T), h: floats(N * d), xn2: floats(N * d), rstd2: floats(N),
			g: floats(N * f), u: floats(N * f), s: floats(N * f),
		})
	}
	maxW, maxX := 0, 0
	for i := range s.layers {
		l, ml := &s.layers[i], m.Layers[i]
		s.params = append(s.params, &l.attnNorm, &l.q, &l.k, &l.v, &l.o, &l.mlpNorm, &l.gate, &l.up, &l.down)
		for _, b := range []struct {
			p **param[F]
			v *autograd.Var
		}{{&l.bq, ml.Attn.Q.Bias}, {&l.bk, ml.Attn.K.Bias}, {&l.bv, ml.Attn.V.Bias}} {
			if b.v != nil {
				p := par(b.v)
				*b.p = &p
				s.params = append(s.params, &p)
			}
		}
		for _, pl := range []struct {
			p *param[F]
			l *layers.Linear
		}{{&l.q, ml.Attn.Q}, {&l.k, ml.Attn.K}, {&l.v, ml.Attn.V}, {&l.o, ml.Attn.O}, {&l.gate, ml.MLP.Gate}, {&l.up, ml.MLP.Up}, {&l.down, ml.MLP.Down}} {
			quant(pl.p, pl.l, N)
			maxW, maxX = max(maxW, pl.p.v.Size()), max(maxX, N*pl.p.v.Shape()[1])
		}
	}
	s.dwq, s.dxq = floats(maxW), floats(maxX)
	s.params = append(s.params, &s.norm)
	if m.Head != nil {
		h := par(m.Head.Weight)
		s.head = &h
		s.params = append(s.params, s.head)
	}
	s.ids, s.tgt, s.pos = ints(N), ints(N), ints(N)
	s.ones = floats(N)
	rope := c.RoPE() // scaled RoPE (rope_scaling) included
	s.cos, s.sin = floats(len(rope.Cos)), floats(len(rope.Sin))
	s.xo = floats(N * d)
	s.xf, s.rstdf, s.logits, s.dlogits, s.loss = floats(N*d), floats(N), floats(N*V), floats(N*V), floats(N)
	s.dx, s.dh, s.dxn, s.datt = floats(N*d), floats(N*d), floats(N*d), floats(N*max(d, qd)) // datt: o_proj's output and input
	s.dq, s.dk, s.dv, s.dqr, s.dkr = floats(N*qd), floats(N*kv), floats(N*kv), floats(N*qd), floats(N*kv)
	s.ds, s.dg, s.du, s.delta = floats(N*f), floats(N*f), floats(N*f), floats(B*c.Heads*T)
	if err != nil {
		return nil, err
	}
	pos := make([]int32, N)
	for i := range pos {
		pos[i] = int32(i % T)
	}
	if err := be.WriteInts(s.pos, pos); err != nil {
		return nil, err
	}
	ones := make([]float32, N)
	for i := range ones {
		ones[i] = 1
	}
	if err := be.WriteFloats(s.ones, ones); err != nil {
		return nil, err
	}
	if err := be.WriteFloats(s.cos, rope.Cos); err != nil {
		return nil, err
	}
	if err := be.WriteFloats(s.sin, rope.Sin); err != nil {
		return nil, err
	}
	s.lossHost, s.tg = make([]float32, N), make([]int32, N)
	return s, nil
}

// LossBackward uploads the model's weights, runs the forward and backward
// pass on ids and targets (B*T each; layers.IgnoreIndex skips a target)
// and adds the weight gradients into the model's. It returns the mean
// loss, as the tape's Loss does.
func (s *Step[F, I]) LossBackward(ids, targets []int32) (float32, error) {
	be, c := s.be, s.c
	B, T := s.B, s.T
	N, d, hd, f, V := B*T, c.Dim, c.HeadDim(), c.FFNHidden, c.Vocab
	kv, qd := c.KVHeads*hd, c.Heads*hd
	if len(ids) != N || len(targets) != N {
		return 0, fmt.Errorf("device step: %d ids and %d targets for %d x %d", len(ids), len(targets), B, T)
	}
	count := 0
	for i, y := range targets {
		switch {
		case y == layers.IgnoreIndex:
			s.tg[i] = -1
		case y < 0 || int(y) >= V:
			return 0, fmt.Errorf("device step: target %d outside vocabulary of %d", y, V)
		default:
			s.tg[i] = y
			count++
		}
	}
	for _, id := range ids {
		if id < 0 || int(id) >= V {
			return 0, fmt.Errorf("device step: token id %d outside vocabulary of %d", id, V)
		}
	}
	var err error
	do := func(e error) {
		if err == nil {
			err = e
		}
	}
	do(be.WriteInts(s.ids, ids))
	do(be.WriteInts(s.tgt, s.tg))
	for _, p := range s.params {
		do(be.WriteFloats(p.w, p.v.Data()))
		do(be.Zero(p.g, p.v.Size()))
	}
	lin := func(y, x, w F, out, in int) { // y = x W^T
		do(be.Sgemm(false, true, N, out, in, 1, x, in, w, in, 0, y, out))
	}
	apply := func(f *fq[F], x F) F {
		switch f.q.Format {
		case kernels.Q4_0:
			do(be.FakeQuantQ4_0(f.out, f.mask, x, f.n))
		case kernels.Q8_0:
			do(be.FakeQuantQ8_0(f.out, f.mask, x, f.n))
		case kernels.Int:
			switch f.q.Scale {
			case "lsq":
				f.in = x
				do(be.FakeQuantLSQ(f.out, f.mask, x, f.step.w, f.n, f.group, -f.qmin, f.qmax))
				return f.out
			case "mse":
				do(be.WriteFloats(f.sc, f.q.Step.Data()))
				do(be.WriteFloats(f.zr, f.q.Zero.Data()))
				do(be.FakeQuantAffine(f.out, f.mask, x, f.sc, f.zr, f.n, f.group, f.qmin, f.qmax))
				return f.out
			}
			fallthrough
		default:
			do(be.DynamicScales(f.sc, f.zr, f.lo, x, f.n, f.group, f.kind, f.qmin, f.qmax, f.fmax))
			if f.kind == cuda.ScaleFP {
				do(be.FakeQuantFP(f.out, f.mask, x, f.sc, f.n, f.group, f.fp))
			} else {
				do(be.FakeQuantAffine(f.out, f.mask, x, f.sc, f.zr, f.n, f.group, f.qmin, f.qmax))
			}
		}
		return f.out
	}
	// linq is lin through p's quantizers: y = Q(x) Q(W)^T
	linq := func(y, x F, p *param[F], out, in int) {
		w := p.w
		if p.wq != nil {
			w = apply(p.wq, p.w)
		}
		if p.xq != nil {
			x = apply(p.xq, x)
		}
		lin(y, x, w, out, in)
	}
	// bias adds b to every row of y (N, out), a rank-one product with the
	// ones; biasB adds its gradient, the column sums of dy
	bias := func(y F, b *param[F], out int) {
		if b != nil {
			do(be.Sgemm(false, false, N, out, 1, 1, s.ones, 1, b.w, out, 1, y, out))
		}
	}
	biasB := func(b *param[F], dy F, out int) {
		if b != nil {
			do(be.Sgemm(true, false, 1, out, N, 1, s.ones, 1, dy, out, 1, b.g, out))
		}
	}
	// forward
	x := s.xo // the embedding output, then each layer's output in turn
	do(be.EmbeddingFwd(x, s.embed.w, s.ids, N, d))
	for i := range s.layers {
		l := &s.layers[i]
		do(be.Copy(l.x, x, N*d))
		do(be.RMSNormFwd(l.xn1, l.rstd1, l.x, l.attnNorm.w, N, d, float32(c.NormEps)))
		linq(s.dq, l.xn1, &l.q, qd, d)
		linq(s.dk, l.xn1, &l.k, kv, d)
		linq(l.vv, l.xn1, &l.v, kv, d)
		bias(s.dq, l.bq, qd)
		bias(s.dk, l.bk, kv)
		bias(l.vv, l.bv, kv)
		do(be.RoPE(l.qr, s.dq, s.pos, s.cos, s.sin, N, c.Heads, hd, 1, false))
		do(be.RoPE(l.kr, s.dk, s.pos, s.cos, s.sin, N, c.KVHeads, hd, 1, false))
		do(be.AttnForward(s.attn, l.att, l.lse, l.qr, l.kr, l.vv))
		linq(s.datt, l.att, &l.o, d, qd)
		do(be.Add(l.h, l.x, s.datt, N*d))
		do(be.RMSNormFwd(l.xn2, l.rstd2, l.h, l.mlpNorm.w, N, d, float32(c.NormEps)))
		linq(l.g, l.xn2, &l.gate, f, d)
		linq(l.u, l.xn2, &l.up, f, d)
		do(be.SwiGLUFwd(l.s, l.g, l.u, N*f))
		linq(s.dxn, l.s, &l.down, d, f)
		do(be.Add(x, l.h, s.dxn, N*d))
	}
	do(be.RMSNormFwd(s.xf, s.rstdf, x, s.norm.w, N, d, float32(c.NormEps)))
	headW := s.embed.w
	headG := s.embed.g
	if s.head != nil {
		headW, headG = s.head.w, s.head.g
	}
	lin(s.logits, s.xf, headW, V, d)
	inv := float32(0)
	if count > 0 {
		inv = 1 / float32(count)
	}
	do(be.CrossEntropy(s.logits, s.tgt, s.dlogits, s.loss, N, V, inv))
	do(be.ReadFloats(s.lossHost, s.loss))
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, l := range s.lossHost {
		sum += float64(l)
	}
	loss := float32(sum) * inv

	// backward: dx holds the gradient of the current layer's output
	do(be.Sgemm(false, false, N, d, V, 1, s.dlogits, V, headW, d, 0, s.dxn, d)) // dxf = dlogits W
	do(be.Sgemm(true, false, V, d, N, 1, s.dlogits, V, s.xf, d, 1, headG, d))   // dW += dlogits^T xf
	do(be.Zero(s.dx, N*d))
	do(be.RMSNormBwd(s.dx, s.norm.g, s.dxn, x, s.norm.w, s.rstdf, N, d))
	// back adds a quantizer's input gradient from its output's, dy, into
	// dx: the straight-through mask, or LSQ's gradients (dx and the steps)
	back := func(f *fq[F], dx, dy F) {
		if f.step != nil {
			do(be.LSQGrad(dx, f.step.g, dy, f.in, f.step.w, f.n, f.group, -f.qmin, f.qmax, f.gscale))
			return
		}
		do(be.MaskGrad(dx, dy, f.mask, f.n))
	}
	// linB: dx (+)= dy Q(W), dW += dy^T Q(x) for y = Q(x) Q(W)^T, through
	// the straight-through masks of p's quantizers
	linB := func(dx F, p *param[F], dy, x F, out, in int, beta float32) {
		w := p.w
		if p.wq != nil {
			w = p.wq.out
		}
		if p.xq != nil {
			x = p.xq.out
		}
		if p.wq != nil {
			do(be.Sgemm(true, false, out, in, N, 1, dy, out, x, in, 0, s.dwq, in))
			back(p.wq, p.g, s.dwq)
		} else {
			do(be.Sgemm(true, false, out, in, N, 1, dy, out, x, in, 1, p.g, in))
		}
		if p.xq != nil {
			do(be.Sgemm(false, false, N, in, out, 1, dy, out, w, in, 0, s.dxq, in))
			if beta == 0 {
				do(be.Zero(dx, N*in))
			}
			back(p.xq, dx, s.dxq)
		} else {
			do(be.Sgemm(false, false, N, in, out, 1, dy, out, w, in, beta, dx, in))
		}
	}
	for i := len(s.layers) - 1; i >= 0; i-- {
		l := &s.layers[i]
		// out = h + down(swiglu(gate(xn2), up(xn2))), xn2 = norm(h)
		do(be.Copy(s.dh, s.dx, N*d))
		linB(s.ds, &l.down, s.dx, l.s, d, f, 0)
		do(be.Zero(s.dg, N*f))
		do(be.Zero(s.du, N*f))
		do(be.SwiGLUBwd(s.dg, s.du, s.ds, l.g, l.u, N*f))
		linB(s.dxn, &l.gate, s.dg, l.xn2, f, d, 0)
		linB(s.dxn, &l.up, s.du, l.xn2, f, d, 1)
		do(be.RMSNormBwd(s.dh, l.mlpNorm.g, s.dxn, l.h, l.mlpNorm.w, l.rstd2, N, d))
		// h = x + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))), xn1 = norm(x)
		do(be.Copy(s.dx, s.dh, N*d))
		linB(s.datt, &l.o, s.dh, l.att, d, qd, 0)
		do(be.AttnBackward(s.attn, s.dqr, s.dkr, s.dv, s.datt, l.att, l.lse, s.delta, l.qr, l.kr, l.vv, true, true, true))
		do(be.RoPE(s.dq, s.dqr, s.pos, s.cos, s.sin, N, c.Heads, hd, -1, false))
		do(be.RoPE(s.dk, s.dkr, s.pos, s.cos, s.sin, N, c.KVHeads, hd, -1, false))
		biasB(l.bq, s.dq, qd)
		biasB(l.bk, s.dk, kv)
		biasB(l.bv, s.dv, kv)
		linB(s.dxn, &l.q, s.dq, l.xn1, qd, d, 0)
		linB(s.dxn, &l.k, s.dk, l.xn1, kv, d, 1)
		linB(s.dxn, &l.v, s.dv, l.xn1, kv, d, 1)
		do(be.RMSNormBwd(s.dx, l.attnNorm.g, s.dxn, l.x, l.attnNorm.w, l.rstd1, N, d))
	}
	do(be.EmbeddingBwd(s.embed.g, s.dx, s.ids, N, d))
	// add the gradients into the model's (the tape's convention)
	for _, p := range s.params {
		n := p.v.Size()
		if cap(s.gradHost) < n {
			s.gradHost = make([]float32, n)
		}
		gh := s.gradHost[:n]
		do(be.ReadFloats(gh, p.g))
		if err != nil {
			return 0, err
		}
		g := p.v.GradData()
		for j, v := range gh {
			g[j] += v
		}
	}
	return loss, err
}
