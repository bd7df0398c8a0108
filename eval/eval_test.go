package eval

import (
	"math"
	"testing"

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
