package layers

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
	"qat/autograd/ref"
)

// refLoss is the Llama forward and loss in float64, composed from the ref
// package's independent op references; w maps checkpoint names to values.
func refLoss(c Config, w map[string][]float64, ids, targets []int32, B, T int) float64 {
	d, hd, kv := c.Dim, c.HeadDim(), c.HeadDim()*c.KVHeads
	N := B * T
	pos := make([]int32, N)
	for i := range pos {
		pos[i] = int32(i % T)
	}
	x := ref.Embedding(w["model.embed_tokens.weight"], ids, d)
	add := func(a, b []float64) []float64 {
		y := make([]float64, len(a))
		for i := range a {
			y[i] = a[i] + b[i]
		}
		return y
	}
	for l := 0; l < c.Layers; l++ {
		p := "model.layers." + itoa(l) + "."
		h := ref.RMSNorm(x, w[p+"input_layernorm.weight"], N, d, c.NormEps)
		q := ref.RoPE(ref.Linear(h, w[p+"self_attn.q_proj.weight"], N, d, d), pos, c.Heads, hd, c.RopeTheta)
		k := ref.RoPE(ref.Linear(h, w[p+"self_attn.k_proj.weight"], N, d, kv), pos, c.KVHeads, hd, c.RopeTheta)
		v := ref.Linear(h, w[p+"self_attn.v_proj.weight"], N, d, kv)
		a := ref.Attention(q, k, v, B, T, c.Heads, c.KVHeads, hd)
		x = add(x, ref.Linear(a, w[p+"self_attn.o_proj.weight"], N, d, d))
		h = ref.RMSNorm(x, w[p+"post_attention_layernorm.weight"], N, d, c.NormEps)
		g := ref.Linear(h, w[p+"mlp.gate_proj.weight"], N, d, c.FFNHidden)
		u := ref.Linear(h, w[p+"mlp.up_proj.weight"], N, d, c.FFNHidden)
		act := ref.SwiGLU(g, u)
		if c.DownHadamard != "" {
			act = hadamardRows(c, act)
		}
		x = add(x, ref.Linear(act, w[p+"mlp.down_proj.weight"], N, c.FFNHidden, d))
	}
	x = ref.RMSNorm(x, w["model.norm.weight"], N, d, c.NormEps)
	head := w["lm_head.weight"]
	if c.Tied {
		head = w["model.embed_tokens.weight"]
	}
	return ref.CrossEntropy(ref.Linear(x, head, N, d, c.Vocab), targets, c.Vocab, IgnoreIndex)[0]
}

// hadamardRows is each row of x (length ffn_hidden) times the online
// transform's matrix (kernels.Hadamard.Matrix, in float64).
func hadamardRows(c Config, x []float64) []float64 {
	h, err := c.DownTransform()
	if err != nil {
		panic(err)
	}
	n, hm := c.FFNHidden, h.Matrix()
	y := make([]float64, len(x))
	for r := 0; r < len(x); r += n {
		for i, v := range x[r : r+n] {
			for j := 0; j < n; j++ {
				y[r+j] += v * hm[i*n+j]
			}
		}
	}
	return y
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	return ids
}

// TestModelGradientsFiniteDifferences: the gradient of the whole model's
// loss with respect to a sample of every parameter tensor matches central
// differences of the float64 reference model. Norm weights are perturbed
// away from 1 and GQA is on so that no path is trivial. One model has a
// rotated model's online transform of the down_proj input (24 = 12 x 2,
// Paley), one the block-diagonal transform (40: 5 blocks of 8).
func TestModelGradientsFiniteDifferences(t *testing.T) {
	for _, c := range []Config{
		{Vocab: 37, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 24, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 16},
		{Vocab: 37, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 24, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 16, DownHadamard: DownFull},
		{Vocab: 29, Dim: 24, Layers: 1, Heads: 2, KVHeads: 1, FFNHidden: 40, RopeTheta: 500000, NormEps: 1e-6, MaxSeq: 8, DownHadamard: DownBlock},
		{Vocab: 29, Dim: 24, Layers: 1, Heads: 2, KVHeads: 1, FFNHidden: 40, RopeTheta: 500000, NormEps: 1e-6, Tied: false, MaxSeq: 8},
		Tiny,
	} {
		rng := rand.New(rand.NewPCG(7, uint64(c.Dim)))
		m := New(c)
		m.Init(1)
		for _, p := range m.Params() {
			for i := range p.Var.Data() {
				if len(p.Var.Shape()) == 1 {
					p.Var.Data()[i] = float32(1 + 0.3*rng.NormFloat64())
				} else if c.Dim < 100 {
					p.Var.Data()[i] *= 10 // larger weights: gradients well above rounding noise
				}
			}
		}
		B, T := 2, min(c.MaxSeq, 7)
		ids, tg := randomTokens(rng, B*T, c.Vocab), randomTokens(rng, B*T, c.Vocab)
		tg[3] = IgnoreIndex
		tp := autograd.NewTape()
		loss := m.Loss(tp, ids, tg, B, T)
		tp.Backward(loss)
		w := map[string][]float64{}
		for _, p := range m.Params() {
			w[p.Name] = make([]float64, p.Var.Size())
			for i, v := range p.Var.Data() {
				w[p.Name][i] = float64(v)
			}
		}
		want := refLoss(c, w, ids, tg, B, T)
		if d := math.Abs(float64(loss.Data()[0]) - want); d > 1e-5*math.Max(1, want) {
			t.Errorf("dim %d: loss %.7f, reference %.7f", c.Dim, loss.Data()[0], want)
		}
		samples := 4
		if c.Dim > 100 {
			samples = 2
		}
		for _, p := range m.Params() {
			g := p.Var.GradData()
			var gmax float64
			for _, v := range g {
				gmax = math.Max(gmax, math.Abs(float64(v)))
			}
			var worst float64
			for s := 0; s < samples; s++ {
				// Pick the largest-gradient entry once, then random ones.
				i := rng.IntN(len(g))
				if s == 0 {
					for j, v := range g {
						if math.Abs(float64(v)) == gmax {
							i = j
						}
					}
				}
				x0 := w[p.Name][i]
				h := 1e-5
				w[p.Name][i] = x0 + h
				lp := refLoss(c, w, ids, tg, B, T)
				w[p.Name][i] = x0 - h
				lm := refLoss(c, w, ids, tg, B, T)
				w[p.Name][i] = x0
				fd := (lp - lm) / (2 * h)
				d := math.Abs(float64(g[i]) - fd)
				worst = math.Max(worst, d)
				if d > 2e-3*gmax+1e-6 {
					t.Errorf("dim %d: %s[%d]: gradient %.6g, finite difference %.6g (tensor max %.3g)", c.Dim, p.Name, i, g[i], fd, gmax)
				}
			}
			t.Logf("dim %d: %-45s max |g| %.3g, worst diff %.2g", c.Dim, p.Name, gmax, worst)
		}
	}
}

// TestInitialLoss: a freshly initialised model predicts nearly uniformly, so
// its loss on random tokens is within 2% of ln(vocab).
func TestInitialLoss(t *testing.T) {
	for _, c := range []Config{Tiny, Small} {
		m := New(c)
		m.Init(42)
		rng := rand.New(rand.NewPCG(1, 2))
		B, T := 2, c.MaxSeq
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		l := float64(m.Loss(tp, randomTokens(rng, B*T, c.Vocab), randomTokens(rng, B*T, c.Vocab), B, T).Data()[0])
		if want := math.Log(float64(c.Vocab)); math.Abs(l-want) > 0.02*want {
			t.Errorf("vocab %d: initial loss %.4f, want within 2%% of ln(vocab) = %.4f", c.Vocab, l, want)
		}
	}
}

func TestParamNamesAndCounts(t *testing.T) {
	for _, c := range []Config{Tiny, Small, {Vocab: 64, Dim: 32, Layers: 3, Heads: 4, KVHeads: 1, FFNHidden: 64, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8}} {
		m := New(c)
		ps := m.Params()
		total, _ := c.Params()
		n := 0
		seen := map[string]bool{}
		for _, p := range ps {
			n += p.Var.Size()
			if seen[p.Name] {
				t.Errorf("duplicate parameter %s", p.Name)
			}
			seen[p.Name] = true
		}
		if n != total {
			t.Errorf("%+v: %d parameters, Config.Params says %d", c, n, total)
		}
		for _, name := range []string{"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
			"model.layers.0.mlp.down_proj.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight"} {
			if !seen[name] {
				t.Errorf("no parameter %s", name)
			}
		}
		if seen["lm_head.weight"] == c.Tied {
			t.Errorf("tied=%v but lm_head.weight present=%v", c.Tied, seen["lm_head.weight"])
		}
	}
	if n := len(New(Tiny).Params()); n != 2+9*Tiny.Layers {
		t.Errorf("tiny has %d parameter tensors, want %d", n, 2+9*Tiny.Layers)
	}
}

func TestConfigValidate(t *testing.T) {
	for i, c := range []Config{
		{},
		{Vocab: 10, Dim: 30, Layers: 1, Heads: 4, KVHeads: 4, FFNHidden: 8, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8},
		{Vocab: 10, Dim: 32, Layers: 1, Heads: 4, KVHeads: 3, FFNHidden: 8, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8},
		{Vocab: 10, Dim: 32, Layers: 1, Heads: 4, KVHeads: 4, FFNHidden: 8, RopeTheta: -1, NormEps: 1e-5, MaxSeq: 8},
		{Vocab: 10, Dim: 12, Layers: 1, Heads: 4, KVHeads: 4, FFNHidden: 8, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8},
		// no Hadamard matrix of 172 = 43 x 4 (block is the one there is)
		{Vocab: 10, Dim: 32, Layers: 1, Heads: 4, KVHeads: 4, FFNHidden: 172, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8, DownHadamard: DownFull},
		{Vocab: 10, Dim: 32, Layers: 1, Heads: 4, KVHeads: 4, FFNHidden: 48, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8, DownHadamard: "hadamard"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: %+v validated", i, c)
		}
	}
	if err := Tiny.BlockAligned(32); err != nil {
		t.Errorf("tiny: %v", err)
	}
	if err := Small.BlockAligned(32); err != nil {
		t.Errorf("small: %v", err)
	}
	bad := Tiny
	bad.FFNHidden = 688
	if err := bad.BlockAligned(32); err == nil {
		t.Error("ffn 688 accepted for block 32")
	}
}
