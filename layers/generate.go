package layers

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"qat/autograd"
	"qat/kernels"
)

// Decoder runs the model one token at a time with a key/value cache, for
// generation: each step costs one row through every layer instead of the
// whole prefix.
type Decoder struct {
	m       *Model
	k, v    [][]float32 // per layer: (positions so far, kvHeads*hd), grown as tokens come (grow)
	pos     int
	x, h    []float32 // residual, normed (dim)
	a, q    []float32 // attention out, rotated queries (heads*head_dim)
	qkv     []float32
	gu, act []float32
	scores  []float32
	lse     []float32
	logits  []float32
	tmp     []float32
	pos1    [1]int32
	// packed holds weights kept in a packed block format (Q4_0, Q8_0): their
	// products quantize the input row to Q8_0 blocks and run the integer
	// kernels, as llama.cpp does.
	packed map[*autograd.Var]PackedWeight
	cur    []float32
	qa     kernels.PackedQ8
	ta     kernels.TokenU8
	t4     kernels.TokenU4 // the 4-bit codes of W4A4 (scheme.Bits 4)
	// blocks, tokens: some packed weights take Q8_0 blocks (qa), some
	// per-token codes (ta)
	blocks, tokens bool
	scheme         kernels.TokenScheme
	xhat           []float32 // the dequantized input, for Sparse
	deq            bool
	// curRows: rows in cur (1 but in Prefill, which runs a block of
	// prompt rows through each product at once)
	curRows int
	pre     *prefill
}

// PackedWeight is a weight matrix in a packed block format: rows of
// Format.RowBytes(in) bytes in the model's row order (Data), or the same
// repacked for the CPU's kernel (R4, kernels.Repack); or per-channel
// integer codes (Channel: the w4a8, w8a8 and w4a4 recipes), whose inputs
// are quantized per token as those recipes' activation quantizers do. One
// of Data, R4 and Channel is set.
type PackedWeight struct {
	Format  kernels.FormatID
	Data    []byte
	R4      *kernels.R4
	Channel *kernels.ChannelInt
	// Tokens is how Channel's inputs are quantized: Bits 4 runs
	// kernels.GemmChannel4 on 4-bit codes (int4 Channel only), otherwise
	// kernels.GemmChannel on 8-bit codes.
	Tokens kernels.TokenScheme
	// Sparse holds values kept beside Channel's codes (GWQ's outliers),
	// applied to the dequantized input.
	Sparse *kernels.Sparse
}

// NewPackedDecoder returns a decoder that runs the weights in packed (the
// others in float32) through the packed kernels.
func NewPackedDecoder(m *Model, packed map[*autograd.Var]PackedWeight) *Decoder {
	d := NewDecoder(m)
	d.packed = packed
	for _, p := range packed {
		if p.Channel != nil {
			// one quantized input row serves every product (the decoder
			// quantizes each input once)
			if d.tokens && d.scheme != p.Tokens {
				panic(fmt.Sprintf("layers: NewPackedDecoder: activation schemes %+v and %+v in one model", d.scheme, p.Tokens))
			}
			d.tokens, d.scheme = true, p.Tokens
		} else {
			d.blocks = true
		}
	}
	return d
}

// input sets the row the next products read.
func (d *Decoder) input(x []float32) {
	d.cur, d.curRows = x, 1
	if d.blocks && len(x)%32 == 0 {
		kernels.QuantizeQ8(&d.qa, x, 1, len(x))
	}
	if d.tokens {
		if d.scheme.Bits == 4 {
			d.scheme.Quantize4(&d.t4, x, 1, len(x))
		} else {
			d.scheme.Quantize(&d.ta, x, 1, len(x))
		}
		d.deq = false
	}
}

// lin computes y = x W^T for the current input rows (y: rows x out).
func (d *Decoder) lin(y []float32, w *autograd.Var, out, in int) {
	rows := max(1, d.curRows)
	if p, ok := d.packed[w]; ok {
		if p.Channel != nil {
			if d.scheme.Bits == 4 {
				kernels.GemmChannel4(p.Channel, &d.t4, y)
			} else {
				kernels.GemmChannel(p.Channel, &d.ta, y)
			}
			if p.Sparse != nil {
				if !d.deq {
					if cap(d.xhat) < rows*in {
						d.xhat = make([]float32, rows*in)
					}
					d.xhat = d.xhat[:rows*in]
					for c := 0; c < rows; c++ {
						if d.scheme.Bits == 4 {
							d.t4.Dequantize(d.xhat[c*in:(c+1)*in], c)
						} else {
							d.ta.Dequantize(d.xhat[c*in:(c+1)*in], c)
						}
					}
					d.deq = true
				}
				p.Sparse.AddTo(y, d.xhat, rows)
			}
		} else if p.R4 != nil {
			kernels.GemmR4(p.R4, &d.qa, y)
		} else {
			kernels.GemmPacked(p.Format, p.Data, out, in, &d.qa, y)
		}
		return
	}
	kernels.Sgemm(false, true, rows, out, in, 1, d.cur, in, w.Data(), in, 0, y, out)
}

// NewDecoder returns an empty cache for m.
func NewDecoder(m *Model) *Decoder {
	c := m.Config
	kv, qd := c.HeadDim()*c.KVHeads, c.HeadDim()*c.Heads
	d := &Decoder{m: m, x: make([]float32, c.Dim), h: make([]float32, c.Dim), a: make([]float32, qd),
		q: make([]float32, qd), qkv: make([]float32, qd+2*kv), gu: make([]float32, 2*c.FFNHidden),
		act: make([]float32, c.FFNHidden), scores: make([]float32, c.MaxSeq), lse: make([]float32, 1),
		logits: make([]float32, c.Vocab), tmp: make([]float32, c.Dim)}
	d.k, d.v = make([][]float32, len(m.Layers)), make([][]float32, len(m.Layers))
	d.grow(min(c.MaxSeq, 256))
	return d
}

// grow makes room in the cache for rows positions. The cache grows with
// the text rather than being sized for MaxSeq up front: an imported Llama
// 3.2 1B has a 131072-token context, whose full cache would take 8.6 GB.
func (d *Decoder) grow(rows int) {
	c := d.m.Config
	kv := c.HeadDim() * c.KVHeads
	if len(d.k) > 0 && len(d.k[0]) >= rows*kv {
		return
	}
	if len(d.k) > 0 {
		rows = min(c.MaxSeq, max(rows, 2*len(d.k[0])/kv))
	}
	for l := range d.k {
		k, v := make([]float32, rows*kv), make([]float32, rows*kv)
		copy(k, d.k[l])
		copy(v, d.v[l])
		d.k[l], d.v[l] = k, v
	}
}

// Pos is the number of tokens consumed.
func (d *Decoder) Pos() int { return d.pos }

// addBias1 adds a linear's bias (nil: none) to its product y, in float32
// as the model's biases stay (packed weights keep them unquantized).
func addBias1(y []float32, b *autograd.Var) {
	if b != nil {
		kernels.Active.Axpy(y, b.Data(), 1)
	}
}

// Step feeds one token and returns the logits for the next (valid until the
// next call). It fails when the cache is full.
func (d *Decoder) Step(tok int32) ([]float32, error) {
	c := d.m.Config
	if d.pos >= c.MaxSeq {
		return nil, fmt.Errorf("context of %d tokens is full", c.MaxSeq)
	}
	if tok < 0 || int(tok) >= c.Vocab {
		return nil, fmt.Errorf("token id %d outside vocabulary of %d", tok, c.Vocab)
	}
	hd, kvd, qd := c.HeadDim(), c.HeadDim()*c.KVHeads, c.HeadDim()*c.Heads
	group := c.Heads / c.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	ks := kernels.Active
	copy(d.x, d.m.Embed.Weight.Data()[int(tok)*c.Dim:])
	d.pos1[0] = int32(d.pos)
	n := d.pos + 1
	d.grow(n)
	for l, L := range d.m.Layers {
		ks.RMSNormFwd(d.h, d.lse, d.x, L.AttnNorm.Weight.Data(), 1, c.Dim, L.AttnNorm.Eps)
		at := L.Attn
		d.input(d.h)
		q, k, v := d.qkv[:qd], d.qkv[qd:qd+kvd], d.qkv[qd+kvd:]
		d.lin(q, at.Q.Weight, qd, c.Dim)
		d.lin(k, at.K.Weight, kvd, c.Dim)
		d.lin(v, at.V.Weight, kvd, c.Dim)
		addBias1(q, at.Q.Bias)
		addBias1(k, at.K.Bias)
		addBias1(v, at.V.Bias)
		ks.RoPE(d.q, q, d.pos1[:], at.rope.Cos, at.rope.Sin, 1, c.Heads, hd, qd, qd, 1, false)
		ks.RoPE(d.k[l][d.pos*kvd:(d.pos+1)*kvd], k, d.pos1[:], at.rope.Cos, at.rope.Sin, 1, c.KVHeads, hd, kvd, kvd, 1, false)
		copy(d.v[l][d.pos*kvd:(d.pos+1)*kvd], v)
		for h := 0; h < c.Heads; h++ {
			ko := (h / group) * hd
			// scores over the n cached keys, softmax, weighted sum of values
			kernels.Sgemm(false, true, 1, n, hd, 1, d.q[h*hd:], hd, d.k[l][ko:], kvd, 0, d.scores, n)
			ks.CausalSoftmax(d.scores, 1, n-1, n, n, scale, d.lse)
			kernels.Sgemm(false, false, 1, hd, n, 1, d.scores, n, d.v[l][ko:], kvd, 0, d.a[h*hd:], hd)
		}
		d.input(d.a)
		d.lin(d.tmp, at.O.Weight, c.Dim, qd)
		ks.Axpy(d.x, d.tmp, 1)
		ks.RMSNormFwd(d.h, d.lse, d.x, L.MLPNorm.Weight.Data(), 1, c.Dim, L.MLPNorm.Eps)
		d.input(d.h)
		d.lin(d.gu[:c.FFNHidden], L.MLP.Gate.Weight, c.FFNHidden, c.Dim)
		d.lin(d.gu[c.FFNHidden:], L.MLP.Up.Weight, c.FFNHidden, c.Dim)
		ks.SwiGLUFwd(d.act, d.gu[:c.FFNHidden], d.gu[c.FFNHidden:])
		if L.MLP.Online != nil {
			// a rotated model: down_proj reads the transformed row, which
			// the packed kernels quantize (d.input)
			L.MLP.Online.Apply(d.act)
		}
		d.input(d.act)
		d.lin(d.tmp, L.MLP.Down.Weight, c.Dim, c.FFNHidden)
		ks.Axpy(d.x, d.tmp, 1)
	}
	ks.RMSNormFwd(d.h, d.lse, d.x, d.m.Norm.Weight.Data(), 1, c.Dim, d.m.Norm.Eps)
	head := d.m.Embed.Weight
	if d.m.Head != nil {
		head = d.m.Head.Weight
	}
	d.input(d.h)
	d.lin(d.logits, head, c.Vocab, c.Dim)
	d.pos++
	return d.logits, nil
}

// Sampler picks the next token from logits: greedy at temperature 0,
// otherwise softmax(logits/temperature) restricted to the topK most likely
// (topK 0: all), drawn from its own seeded generator.
type Sampler struct {
	Temperature float64
	TopK        int
	rng         *rand.Rand
	idx         []int
	p           []float64
}

// NewSampler returns a sampler seeded with seed.
func NewSampler(temperature float64, topK int, seed uint64) *Sampler {
	return &Sampler{Temperature: temperature, TopK: topK, rng: rand.New(rand.NewPCG(seed, 0x5eed))}
}

// Sample returns a token id.
func (s *Sampler) Sample(logits []float32) int32 {
	if s.Temperature <= 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return int32(best)
	}
	if cap(s.idx) < len(logits) {
		s.idx = make([]int, len(logits))
	}
	s.idx = s.idx[:len(logits)]
	for i := range s.idx {
		s.idx[i] = i
	}
	sort.Slice(s.idx, func(a, b int) bool { return logits[s.idx[a]] > logits[s.idx[b]] })
	k := len(logits)
	if s.TopK > 0 && s.TopK < k {
		k = s.TopK
	}
	s.p = s.p[:0]
	mx := float64(logits[s.idx[0]])
	var z float64
	for _, i := range s.idx[:k] {
		e := math.Exp((float64(logits[i]) - mx) / s.Temperature)
		s.p = append(s.p, e)
		z += e
	}
	u := s.rng.Float64() * z
	for j, e := range s.p {
		if u < e {
			return int32(s.idx[j])
		}
		u -= e
	}
	return int32(s.idx[k-1])
}

// Stepper feeds tokens one at a time and returns the next token's logits.
type Stepper interface {
	Step(tok int32) ([]float32, error)
	Pos() int
}

// NewStepper returns the key/value-cache Decoder for a full-precision model
// and, when quantizers are attached (the cache path does not run them), a
// decoder that recomputes the whole prefix through Forward each step.
func NewStepper(m *Model) Stepper {
	for _, l := range m.Layers {
		if l.Attn.KQuant != nil {
			return &prefixDecoder{m: m, tape: noGradTape()}
		}
	}
	for _, nl := range m.Linears() {
		if nl.Linear.Quantized() {
			return &prefixDecoder{m: m, tape: noGradTape()}
		}
	}
	return NewDecoder(m)
}

func noGradTape() *autograd.Tape {
	t := autograd.NewTape()
	t.SetNoGrad(true)
	return t
}

type prefixDecoder struct {
	m      *Model
	tape   *autograd.Tape
	ids    []int32
	logits []float32
}

func (d *prefixDecoder) Pos() int { return len(d.ids) }

func (d *prefixDecoder) Step(tok int32) ([]float32, error) {
	c := d.m.Config
	if len(d.ids) >= c.MaxSeq {
		return nil, fmt.Errorf("context of %d tokens is full", c.MaxSeq)
	}
	if tok < 0 || int(tok) >= c.Vocab {
		return nil, fmt.Errorf("token id %d outside vocabulary of %d", tok, c.Vocab)
	}
	d.ids = append(d.ids, tok)
	T := len(d.ids)
	out := d.m.Forward(d.tape, d.ids, 1, T).Data()
	d.logits = append(d.logits[:0], out[(T-1)*c.Vocab:T*c.Vocab]...)
	d.tape.Reset()
	return d.logits, nil
}
