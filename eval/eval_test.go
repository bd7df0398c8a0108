package eval

import (
	"math"
	"testing"

	"qat/autograd"
	"qat/data"
	"qat/data/bpe"
	"qat/layers"
)

// TestEvaluate: bits per byte are the summed loss in bits over the bytes of
// the predicted tokens, and a batch limit takes that many batches.
func TestEvaluate(t *testing.T) {
	tok, _ := bpe.Train([]string{"abc abd abe xyz xyw"}, 270)
	c := layers.Config{Vocab: 270, Dim: 16, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 32, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 8}
	m := layers.New(c)
	m.Init(1)
	ds := &data.Dataset{}
	for i := 0; i < 401; i++ {
		ds.Tokens = append(ds.Tokens, int32(i%7+97))
	}
	all := Evaluate(m, tok, ds, 5, 8, 0)
	if all.Tokens != 400 {
		t.Fatalf("evaluated %d tokens, want 400", all.Tokens)
	}
	// every target is a single byte here: bits per byte = loss / ln 2
	if math.Abs(all.BPB-all.Loss/math.Ln2) > 1e-9 || math.Abs(all.PPL-math.Exp(all.Loss)) > 1e-9 {
		t.Errorf("loss %g, bpb %g, ppl %g disagree", all.Loss, all.BPB, all.PPL)
	}
	if math.Abs(all.Loss-math.Log(270)) > 0.05*math.Log(270) {
		t.Errorf("untrained loss %g, want near ln 270", all.Loss)
	}
	if sub := Evaluate(m, tok, ds, 5, 8, 3); sub.Tokens != 3*5*8 {
		t.Errorf("3 batches evaluated %d tokens", sub.Tokens)
	}
}

// TestCompareKL: a model against itself has KL 0 and full agreement;
// against a perturbed copy the KL is the float64 definition's.
func TestCompareKL(t *testing.T) {
	c := layers.Config{Vocab: 50, Dim: 16, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 32, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 8}
	m := layers.New(c)
	m.Init(1)
	ds := &data.Dataset{}
	for i := 0; i < 81; i++ {
		ds.Tokens = append(ds.Tokens, int32(i*7%50))
	}
	same := CompareKL(m, m, ds, 2, 8, 0)
	if same.MeanKL > 1e-12 || same.Top1 != 1 || same.Tokens != 80 {
		t.Errorf("self comparison: %+v", same)
	}
	if kl, agree := klRow([]float32{0, 0}, []float32{float32(math.Log(3)), 0}); math.Abs(kl-(0.5*math.Log(0.5/0.75)+0.5*math.Log(0.5/0.25))) > 1e-6 || !agree { // both argmax 0 (ties go to the first)
		t.Errorf("KL([.5 .5] || [.75 .25]) = %g, agreement %v", kl, agree)
	}
}

// TestEvaluateMasked: on a masked dataset (chat data: only the assistant's
// replies count) the loss is the float64 mean of -log p(target) over the
// targets the mask keeps, from the model's logits, and bits per byte take
// only those targets' bytes; windows with no kept target count nothing.
func TestEvaluateMasked(t *testing.T) {
	tok, _ := bpe.Train([]string{"abc abd abe xyz xyw"}, 270)
	c := layers.Config{Vocab: 270, Dim: 16, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 32, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 8}
	m := layers.New(c)
	m.Init(2)
	ds := &data.Dataset{}
	for i := 0; i < 81; i++ {
		ds.Tokens = append(ds.Tokens, int32(i*5%11+97))
		// kept in runs, and none at all in the first two windows
		ds.Mask = append(ds.Mask, uint8(min(1, max(0, (i-16)%5-1))))
	}
	const B, T = 2, 8
	got := Evaluate(m, tok, ds, B, T, 0)

	var nats float64
	kept := 0
	data.Sequential(ds, B, T, func(ids, tg []int32, k int) {
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		logits := m.Forward(tp, ids, k, T).Data()
		for r, y := range tg {
			if y == data.IgnoreTarget {
				continue
			}
			row := logits[r*c.Vocab : (r+1)*c.Vocab]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var sum float64
			for _, v := range row {
				sum += math.Exp(float64(v) - mx)
			}
			nats += mx + math.Log(sum) - float64(row[y])
			kept++
		}
	})
	var wantKept int
	for _, b := range ds.Mask[1:] {
		wantKept += int(b)
	}
	if kept != wantKept || got.Tokens != kept {
		t.Fatalf("evaluated %d targets, the mask keeps %d (reference counted %d)", got.Tokens, wantKept, kept)
	}
	want := nats / float64(kept)
	if math.Abs(got.Loss-want) > 1e-5*want {
		t.Fatalf("loss %.9g, float64 mean over the kept targets %.9g", got.Loss, want)
	}
	// every token here is one byte: bits per byte is the loss in bits
	if math.Abs(got.BPB-got.Loss/math.Ln2) > 1e-9 {
		t.Errorf("bpb %g, loss %g", got.BPB, got.Loss)
	}
}
