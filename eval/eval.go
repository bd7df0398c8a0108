// Package eval measures a model on text: next-token loss, perplexity and
// bits per byte over a prepared dataset (Evaluate), the KL divergence of its
// next-token distributions from a reference model's (CompareKL), and
// llama-perplexity's chunked perplexity of a text file (ChunkPerplexity),
// so our numbers and llama.cpp's compare on the same file. The training
// loop, qat eval and qat ptq all measure through it.
package eval

import (
	"math"
	"sort"

	"qat/autograd"
	"qat/data"
	"qat/data/bpe"
	"qat/layers"
)

// Result is a model's quality on a dataset.
type Result struct {
	Loss, PPL, BPB float64
	Tokens         int
}

// Evaluate computes the mean next-token loss over the dataset's windows
// (maxBatches > 0: that many batches spread evenly over it), its perplexity,
// and bits per byte: the summed loss in bits over the UTF-8 bytes of the
// predicted tokens. Targets a masked dataset leaves out (data.IgnoreTarget)
// count nowhere: Tokens is the number of targets that counted.
func Evaluate(m *layers.Model, tok *bpe.Tokenizer, ds *data.Dataset, batch, seq, maxBatches int) Result {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	var nats float64
	var n, bytes, b int
	total := ((len(ds.Tokens)-1)/seq + batch - 1) / batch
	data.Sequential(ds, batch, seq, func(ids, tg []int32, k int) {
		b++
		// batch b-1 is taken when it is the first of its 1/maxBatches slice
		if maxBatches > 0 && maxBatches < total && (b-1)*maxBatches/total == (b-2)*maxBatches/total && b > 1 {
			return
		}
		// the loss is the mean over the targets that count (a masked
		// dataset leaves out all but the assistant's replies), so it is
		// weighted by their number, and only their bytes are predicted
		counted := 0
		for _, t := range tg {
			if t != layers.IgnoreIndex {
				counted++
				bytes += tok.ByteLen(t)
			}
		}
		if counted == 0 {
			return
		}
		l := m.Loss(tp, ids, tg, k, seq)
		nats += float64(l.Data()[0]) * float64(counted)
		n += counted
		tp.Reset()
	})
	res := Result{Loss: nats / float64(max(n, 1)), Tokens: n}
	res.PPL = math.Exp(res.Loss)
	res.BPB = nats / math.Ln2 / float64(max(bytes, 1))
	return res
}

// KLResult compares a model's next-token distributions with a reference
// model's on the same windows: KL(reference || model) per token (mean and
// 99th percentile, nats) and how often both put the same token first.
type KLResult struct {
	MeanKL, P99KL, Top1 float64
	Tokens              int
}

// CompareKL runs both models over the dataset's windows (maxBatches > 0:
// that many batches spread over it) and compares their distributions.
func CompareKL(m, ref *layers.Model, ds *data.Dataset, batch, seq, maxBatches int) KLResult {
	tp, tr := autograd.NewTape(), autograd.NewTape()
	tp.SetNoGrad(true)
	tr.SetNoGrad(true)
	var kls []float64
	agree := 0
	V := m.Vocab
	total := ((len(ds.Tokens)-1)/seq + batch - 1) / batch
	b := 0
	data.Sequential(ds, batch, seq, func(ids, _ []int32, k int) {
		b++
		if maxBatches > 0 && maxBatches < total && (b-1)*maxBatches/total == (b-2)*maxBatches/total && b > 1 {
			return
		}
		lq := m.Forward(tp, ids, k, seq).Data()
		lr := ref.Forward(tr, ids, k, seq).Data()
		for r := 0; r < k*seq; r++ {
			kl, same := klRow(lr[r*V:(r+1)*V], lq[r*V:(r+1)*V])
			kls = append(kls, kl)
			if same {
				agree++
			}
		}
		tp.Reset()
		tr.Reset()
	})
	res := KLResult{Tokens: len(kls)}
	if len(kls) == 0 {
		return res
	}
	var sum float64
	for _, v := range kls {
		sum += v
	}
	sort.Float64s(kls)
	res.MeanKL = sum / float64(len(kls))
	res.P99KL = kls[min(len(kls)-1, int(math.Ceil(0.99*float64(len(kls))))-1)]
	res.Top1 = float64(agree) / float64(len(kls))
	return res
}

// logSumExp returns log(sum(exp(x))) in float64 and the argmax of x.
func logSumExp(x []float32) (float64, int) {
	mx, arg := float64(x[0]), 0
	for i, v := range x {
		if float64(v) > mx {
			mx, arg = float64(v), i
		}
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(s), arg
}

// klRow returns KL(softmax(p) || softmax(q)) in float64 and whether both
// rows have the same argmax.
func klRow(p, q []float32) (float64, bool) {
	lp, ap := logSumExp(p)
	lq, aq := logSumExp(q)
	var kl float64
	for i := range p {
		a := float64(p[i]) - lp
		kl += math.Exp(a) * (a - (float64(q[i]) - lq))
	}
	return max(kl, 0), ap == aq
}

// ChunkPerplexity scores a text the way llama.cpp's llama-perplexity does,
// so the two can be compared on the same file: the text is tokenized with
// a leading BOS, cut into chunks of ctx tokens whose first token is
// replaced by BOS, and only the second half of each chunk is scored (each
// scored token has at least ctx/2 tokens of context). It returns the
// perplexity and the number of scored tokens. With stepper non-nil each
// chunk runs through a fresh stepper (the packed decoder) instead of one
// forward pass: as one prompt where the stepper takes prompts
// (layers.Prefiller: the batched kernels, as llama.cpp's batched path),
// token by token otherwise.
func ChunkPerplexity(m *layers.Model, tok *bpe.Tokenizer, text string, ctx int, stepper func() layers.Stepper) (float64, int) {
	ids := append([]int32{tok.ID(bpe.BOS)}, tok.Encode(nil, text)...)
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	first := ctx / 2
	var nll float64
	count := 0
	chunk := make([]int32, ctx)
	for start := 0; start+ctx <= len(ids); start += ctx {
		copy(chunk, ids[start:start+ctx])
		chunk[0] = tok.ID(bpe.BOS)
		V := m.Vocab
		var logits []float32
		var st layers.Stepper
		if stepper == nil {
			logits = m.Forward(tp, chunk, 1, ctx).Data()
		} else {
			st = stepper()
		}
		if pf, ok := st.(layers.Prefiller); ok {
			// the whole chunk at once through the batched kernels; the
			// logits are Step's up to float32 summation order
			logits, _ = pf.Prefill(chunk[:ctx-1], true)
			st = nil
		}
		for j := 0; j < ctx-1; j++ {
			var row []float32
			if st != nil {
				row, _ = st.Step(chunk[j])
			} else {
				row = logits[j*V : (j+1)*V]
			}
			if j < first {
				continue
			}
			lse, _ := logSumExp(row)
			nll += lse - float64(row[ids[start+j+1]])
			count++
		}
		tp.Reset()
	}
	return math.Exp(nll / float64(max(count, 1))), count
}
