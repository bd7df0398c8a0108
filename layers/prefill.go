package layers

import (
	"fmt"
	"math"

	"qat/kernels"
)

// prefillBlock is how many prompt tokens go through the model together:
// enough that each weight streams from memory once for many rows (the
// batched kernels take 8 columns per pass over a block of weights, which
// stays in cache across the passes), few enough to bound the scratch (a
// 14336-wide feed-forward's gate and up take 115 KB a row).
const prefillBlock = 128

// Prefiller is a Stepper that also takes a whole prompt at once.
type Prefiller interface {
	Stepper
	// Prefill feeds toks as Step would one by one, and returns the
	// logits of every position (len(toks) rows of Vocab) when all is set,
	// of the last one otherwise; valid until the next call.
	Prefill(toks []int32, all bool) ([]float32, error)
}

// prefill holds Prefill's scratch, sized for one block.
type prefill struct {
	x, h, q, qr, k, v, a, tmp, g, u, act, scores, lse, logits []float32
	pos                                                       []int32
}

func grown(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// Prefill feeds a prompt through the model in blocks of prefillBlock
// tokens: every product runs once per block over all its rows (the
// activations quantized once per block, through the batched packed
// kernels or one float32 sgemm), and attention takes the block's queries
// against the cache at once (causal within the block). What it computes
// is Step's, token by token, up to float32 summation order.
func (d *Decoder) Prefill(toks []int32, all bool) ([]float32, error) {
	c := d.m.Config
	if len(toks) == 0 {
		return nil, fmt.Errorf("prefill of no tokens")
	}
	if d.pos+len(toks) > c.MaxSeq {
		return nil, fmt.Errorf("%d tokens after %d: the context of %d tokens is full", len(toks), d.pos, c.MaxSeq)
	}
	for _, t := range toks {
		if t < 0 || int(t) >= c.Vocab {
			return nil, fmt.Errorf("token id %d outside vocabulary of %d", t, c.Vocab)
		}
	}
	p := d.pre
	if p == nil {
		p = &prefill{}
		d.pre = p
	}
	if all {
		p.logits = grown(p.logits, len(toks)*c.Vocab)
	}
	var last []float32
	for off := 0; off < len(toks); off += prefillBlock {
		blk := toks[off:min(len(toks), off+prefillBlock)]
		var out []float32
		switch {
		case all:
			out = p.logits[off*c.Vocab : (off+len(blk))*c.Vocab]
		case off+len(blk) == len(toks):
			last = d.logits
			out = last
		}
		d.prefillBlock(p, blk, out, all)
	}
	if all {
		return p.logits, nil
	}
	return last, nil
}

// prefillBlock runs one block of T tokens at positions d.pos.. and writes
// the logits of all its rows (allRows) or of its last row into out (nil:
// none, a block before the last whose logits nobody reads).
func (d *Decoder) prefillBlock(p *prefill, toks []int32, out []float32, allRows bool) {
	c := d.m.Config
	T := len(toks)
	hd, kvd, qd, F := c.HeadDim(), c.HeadDim()*c.KVHeads, c.HeadDim()*c.Heads, c.FFNHidden
	group := c.Heads / c.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	ks := kernels.Active
	n := d.pos + T
	d.grow(n)
	p.x, p.h, p.tmp = grown(p.x, T*c.Dim), grown(p.h, T*c.Dim), grown(p.tmp, T*c.Dim)
	p.q, p.qr, p.a = grown(p.q, T*qd), grown(p.qr, T*qd), grown(p.a, T*qd)
	p.k, p.v = grown(p.k, T*kvd), grown(p.v, T*kvd)
	p.g, p.u, p.act = grown(p.g, T*F), grown(p.u, T*F), grown(p.act, T*F)
	p.scores, p.lse = grown(p.scores, T*n), grown(p.lse, T)
	if cap(p.pos) < T {
		p.pos = make([]int32, T)
	}
	p.pos = p.pos[:T]
	emb := d.m.Embed.Weight.Data()
	for i, t := range toks {
		copy(p.x[i*c.Dim:(i+1)*c.Dim], emb[int(t)*c.Dim:])
		p.pos[i] = int32(d.pos + i)
	}
	for l, L := range d.m.Layers {
		at := L.Attn
		ks.RMSNormFwd(p.h, p.lse, p.x, L.AttnNorm.Weight.Data(), T, c.Dim, L.AttnNorm.Eps)
		d.inputN(p.h, T)
		d.lin(p.q, at.Q.Weight, qd, c.Dim)
		d.lin(p.k, at.K.Weight, kvd, c.Dim)
		d.lin(p.v, at.V.Weight, kvd, c.Dim)
		for i := 0; i < T; i++ {
			addBias1(p.q[i*qd:(i+1)*qd], at.Q.Bias)
			addBias1(p.k[i*kvd:(i+1)*kvd], at.K.Bias)
			addBias1(p.v[i*kvd:(i+1)*kvd], at.V.Bias)
		}
		ks.RoPE(p.qr, p.q, p.pos, at.rope.Cos, at.rope.Sin, T, c.Heads, hd, qd, qd, 1, false)
		ks.RoPE(d.k[l][d.pos*kvd:n*kvd], p.k, p.pos, at.rope.Cos, at.rope.Sin, T, c.KVHeads, hd, kvd, kvd, 1, false)
		copy(d.v[l][d.pos*kvd:n*kvd], p.v)
		for h := 0; h < c.Heads; h++ {
			ko := (h / group) * hd
			// the block's queries against every cached key (row i sees
			// positions up to d.pos+i), softmax, weighted sum of values
			kernels.Sgemm(false, true, T, n, hd, 1, p.qr[h*hd:], qd, d.k[l][ko:], kvd, 0, p.scores, n)
			ks.CausalSoftmax(p.scores, T, d.pos, n, n, scale, p.lse)
			kernels.Sgemm(false, false, T, hd, n, 1, p.scores, n, d.v[l][ko:], kvd, 0, p.a[h*hd:], qd)
		}
		d.inputN(p.a, T)
		d.lin(p.tmp, at.O.Weight, c.Dim, qd)
		ks.Axpy(p.x, p.tmp, 1)
		ks.RMSNormFwd(p.h, p.lse, p.x, L.MLPNorm.Weight.Data(), T, c.Dim, L.MLPNorm.Eps)
		d.inputN(p.h, T)
		d.lin(p.g, L.MLP.Gate.Weight, F, c.Dim)
		d.lin(p.u, L.MLP.Up.Weight, F, c.Dim)
		ks.SwiGLUFwd(p.act, p.g, p.u)
		if L.MLP.Online != nil {
			L.MLP.Online.Apply(p.act)
		}
		d.inputN(p.act, T)
		d.lin(p.tmp, L.MLP.Down.Weight, c.Dim, F)
		ks.Axpy(p.x, p.tmp, 1)
	}
	d.pos = n
	if out == nil {
		return
	}
	head := d.m.Embed.Weight
	if d.m.Head != nil {
		head = d.m.Head.Weight
	}
	rows, x := T, p.x
	if !allRows {
		rows, x = 1, p.x[(T-1)*c.Dim:]
	}
	ks.RMSNormFwd(p.h, p.lse, x, d.m.Norm.Weight.Data(), rows, c.Dim, d.m.Norm.Eps)
	d.inputN(p.h[:rows*c.Dim], rows)
	d.lin(out, head, c.Vocab, c.Dim)
}

// inputN sets the rows rows of x (row-major) as the next products' input,
// quantized once for all of them.
func (d *Decoder) inputN(x []float32, rows int) {
	in := len(x) / rows
	d.cur, d.curRows = x, rows
	if d.blocks && in%32 == 0 {
		kernels.QuantizeQ8(&d.qa, x, rows, in)
	}
	if d.tokens {
		if d.scheme.Bits == 4 {
			d.scheme.Quantize4(&d.t4, x, rows, in)
		} else {
			d.scheme.Quantize(&d.ta, x, rows, in)
		}
		d.deq = false
	}
}
