package layers

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
)

// TestDecoderMatchesForward: logits from the key/value cache, one token at
// a time, equal the full forward pass's logits at every position.
func TestDecoderMatchesForward(t *testing.T) {
	for _, c := range []Config{
		{Vocab: 53, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 48, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 20},
		{Vocab: 40, Dim: 24, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 32, RopeTheta: 500000, NormEps: 1e-6, Tied: false, MaxSeq: 9},
	} {
		m := New(c)
		m.Init(9)
		rng := rand.New(rand.NewPCG(1, 3))
		T := c.MaxSeq
		ids := randomTokens(rng, T, c.Vocab)
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		full := m.Forward(tp, ids, 1, T).Data()
		d := NewDecoder(m)
		for p := 0; p < T; p++ {
			lg, err := d.Step(ids[p])
			if err != nil {
				t.Fatal(err)
			}
			var worst float64
			for j, v := range lg {
				worst = math.Max(worst, math.Abs(float64(v-full[p*c.Vocab+j])))
			}
			if worst > 1e-4 {
				t.Fatalf("dim %d position %d: cached logits differ by %g", c.Dim, p, worst)
			}
		}
		if _, err := d.Step(1); err == nil {
			t.Error("a full context accepted another token")
		}
	}
}

// TestPrefixDecoderMatchesForward: the decoder used for quantized models
// gives the full forward pass's logits too.
func TestPrefixDecoderMatchesForward(t *testing.T) {
	c := Config{Vocab: 30, Dim: 16, Layers: 1, Heads: 2, KVHeads: 1, FFNHidden: 32, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 6}
	m := New(c)
	m.Init(2)
	ids := []int32{1, 5, 9, 2, 7, 3}
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	full := m.Forward(tp, ids, 1, 6).Data()
	d := &prefixDecoder{m: m, tape: noGradTape()}
	for p, id := range ids {
		lg, err := d.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range lg {
			if math.Abs(float64(v-full[p*c.Vocab+j])) > 1e-5 {
				t.Fatalf("position %d: logits differ", p)
			}
		}
	}
	if _, err := d.Step(1); err == nil {
		t.Error("a full context accepted another token")
	}
}

func TestSampler(t *testing.T) {
	logits := []float32{0, 3, 1, 2.5}
	if got := NewSampler(0, 0, 1).Sample(logits); got != 1 {
		t.Errorf("greedy picked %d", got)
	}
	counts := map[int32]int{}
	s := NewSampler(1, 2, 7)
	for i := 0; i < 2000; i++ {
		counts[s.Sample(logits)]++
	}
	if counts[0] != 0 || counts[2] != 0 {
		t.Errorf("top-2 sampled outside the top 2: %v", counts)
	}
	// p(1)/p(3) = e^0.5 = 1.65
	if r := float64(counts[1]) / float64(counts[3]); r < 1.4 || r > 1.95 {
		t.Errorf("ratio of the two top tokens %.2f, want about 1.65", r)
	}
	a, b := NewSampler(0.8, 0, 5), NewSampler(0.8, 0, 5)
	for i := 0; i < 50; i++ {
		if a.Sample(logits) != b.Sample(logits) {
			t.Fatal("same seed, different samples")
		}
	}
}

// TestDecoderCacheGrows: the cache starts at 256 positions and grows; the
// logits past the first growth still equal the full forward pass's.
func TestDecoderCacheGrows(t *testing.T) {
	c := Config{Vocab: 19, Dim: 16, Layers: 1, Heads: 2, KVHeads: 1, HeadDimension: 12, QKVBias: true, FFNHidden: 16, RopeTheta: 10000,
		NormEps: 1e-5, Tied: true, MaxSeq: 600}
	m := New(c)
	m.Init(4)
	T := 300
	ids := randomTokens(rand.New(rand.NewPCG(6, 6)), T, c.Vocab)
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	full := m.Forward(tp, ids, 1, T).Data()
	d := NewDecoder(m)
	if got := len(d.k[0]) / (c.HeadDim() * c.KVHeads); got != 256 {
		t.Fatalf("the cache starts with %d positions, want 256", got)
	}
	for p := 0; p < T; p++ {
		lg, err := d.Step(ids[p])
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range lg {
			if math.Abs(float64(v-full[p*c.Vocab+j])) > 1e-4 {
				t.Fatalf("position %d: cached logit %d is %g, forward %g", p, j, v, full[p*c.Vocab+j])
			}
		}
	}
	if got := len(d.k[0]) / (c.HeadDim() * c.KVHeads); got != 512 {
		t.Errorf("the cache holds %d positions after %d tokens, want 512", got, T)
	}
}
