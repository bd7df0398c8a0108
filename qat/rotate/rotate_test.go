package rotate

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

// model builds c with Init's weights, then gives every norm random
// weights in [0.3, 2.3) (folding them is half of what is checked: with
// weights of 1 it would be the identity) and q/k/v biases random values.
func model(c layers.Config, seed uint64) *layers.Model {
	m := layers.New(c)
	m.Init(seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	for _, p := range m.Params() {
		if len(p.Var.Shape()) != 1 {
			continue
		}
		for i := range p.Var.Data() {
			if strings.HasSuffix(p.Name, ".bias") {
				p.Var.Data()[i] = float32(rng.NormFloat64() * 0.05)
			} else {
				p.Var.Data()[i] = float32(0.3 + 2*rng.Float64())
			}
		}
	}
	return m
}

func tokens(rng *rand.Rand, n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	return ids
}

func forward(m *layers.Model, ids []int32, B, T int) []float32 {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	return append([]float32(nil), m.Forward(tp, ids, B, T).Data()...)
}

// decode runs the key/value-cache decoder over ids and returns every
// position's logits.
func decode(t *testing.T, m *layers.Model, ids []int32) []float32 {
	t.Helper()
	d := layers.NewDecoder(m)
	var out []float32
	for _, id := range ids {
		lg, err := d.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, lg...)
	}
	return out
}

// relDiff is the largest |a-b| relative to the largest |a|.
func relDiff(a, b []float32) float64 {
	var d, top float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
		top = math.Max(top, math.Abs(float64(a[i])))
	}
	return d / top
}

var configs = map[string]layers.Config{
	// dim 64 = Walsh-Hadamard; ffn 176 = 44 x 4 (Paley, q = 43)
	"tied":   {Vocab: 97, Dim: 64, Layers: 2, Heads: 4, KVHeads: 4, FFNHidden: 176, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 12},
	"untied": {Vocab: 97, Dim: 64, Layers: 2, Heads: 4, KVHeads: 4, FFNHidden: 176, RopeTheta: 10000, NormEps: 1e-5, Tied: false, MaxSeq: 12},
	"gqa":    {Vocab: 97, Dim: 64, Layers: 2, Heads: 8, KVHeads: 2, FFNHidden: 176, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 12},
	// Qwen2's q/k/v biases, head_dim other than dim/heads
	"bias-headdim": {Vocab: 60, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 128, RopeTheta: 10000, NormEps: 1e-6, Tied: true, MaxSeq: 12, QKVBias: true, HeadDimension: 24},
	// no Hadamard matrix of 172 = 43 x 4 here: a random orthogonal residual
	// rotation and the block-diagonal transform of the down_proj input
	"fallback": {Vocab: 50, Dim: 172, Layers: 1, Heads: 2, KVHeads: 1, FFNHidden: 172, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 8},
}

// TestRotationKeepsLogits is issue 23's check: the rotated model's logits
// equal the unrotated one's within 1e-5 of the largest, through the tape
// and through the key/value-cache decoder, for tied and untied heads, GQA,
// biases, and the fallbacks; the rotated model is what the rotation says
// (norms of 1, an untied head, the online transform in its config), and
// its weights did change.
func TestRotationKeepsLogits(t *testing.T) {
	for name, c := range configs {
		t.Run(name, func(t *testing.T) {
			m := model(c, 3)
			rng := rand.New(rand.NewPCG(5, 6))
			B, T := 2, c.MaxSeq
			ids := tokens(rng, B*T, c.Vocab)
			want := forward(m, ids, B, T)
			wantDec := decode(t, m, ids[:T])
			q0 := append([]float32(nil), m.Layers[0].Attn.Q.Weight.Data()...)
			var log bytes.Buffer
			rep, err := Hadamard(m, 7, &log)
			if err != nil {
				t.Fatal(err)
			}
			if d := relDiff(want, forward(m, ids, B, T)); d > 1e-5 {
				t.Errorf("tape logits differ by %.3g of the largest", d)
			}
			if d := relDiff(wantDec, decode(t, m, ids[:T])); d > 1e-5 {
				t.Errorf("decoder logits differ by %.3g of the largest", d)
			}
			if relDiff(q0, m.Layers[0].Attn.Q.Weight.Data()) < 0.1 {
				t.Error("q_proj's weight hardly changed: nothing was rotated")
			}
			if m.Head == nil || m.Tied || rep.Untied != c.Tied {
				t.Errorf("head %v, tied %v, report untied %v: want an untied head", m.Head != nil, m.Tied, rep.Untied)
			}
			for _, p := range m.Params() {
				if len(p.Var.Shape()) == 1 && !strings.HasSuffix(p.Name, ".bias") {
					for _, v := range p.Var.Data() {
						if v != 1 {
							t.Fatalf("%s: %g left in a folded norm", p.Name, v)
						}
					}
				}
			}
			wantOnline := layers.DownFull
			if name == "fallback" {
				wantOnline = layers.DownBlock
				if !strings.Contains(log.String(), "dim 172") || !strings.Contains(log.String(), "ffn_hidden 172") {
					t.Errorf("the fallbacks are not logged: %q", log.String())
				}
			}
			if m.DownHadamard != wantOnline || rep.Online != wantOnline || m.Layers[1%c.Layers].MLP.Online == nil {
				t.Errorf("online transform %q (report %q), want %q", m.DownHadamard, rep.Online, wantOnline)
			}
			if _, err := Hadamard(m, 7, nil); !errors.Is(err, ErrRotated) {
				t.Errorf("a second rotation: %v, want ErrRotated", err)
			}
		})
	}
}

// TestRotationDependsOnSeed: the signs come from the seed, and another seed
// gives another (equally exact) rotation.
func TestRotationDependsOnSeed(t *testing.T) {
	c := configs["untied"]
	a, b := model(c, 3), model(c, 3)
	if _, err := Hadamard(a, 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Hadamard(b, 2, nil); err != nil {
		t.Fatal(err)
	}
	if relDiff(a.Embed.Weight.Data(), b.Embed.Weight.Data()) < 0.1 {
		t.Error("seeds 1 and 2 rotated the embedding alike")
	}
}

// TestRotationRefusesQuantized: quantizers go on after the rotation.
func TestRotationRefusesQuantized(t *testing.T) {
	m := model(configs["tied"], 1)
	m.Layers[0].MLP.Down.Observers = []layers.Observer{rowsSeen{}}
	if _, err := Hadamard(m, 1, nil); err == nil || !strings.Contains(err.Error(), "model.layers.0.mlp.down_proj") {
		t.Errorf("a model with an observer: %v", err)
	}
}

// TestRandomOrthogonal: Q Qᵀ = I in float64.
func TestRandomOrthogonal(t *testing.T) {
	n := 37
	q := RandomOrthogonal(n, rand.New(rand.NewPCG(1, 2)))
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			var d float64
			for k := 0; k < n; k++ {
				d += q[i*n+k] * q[j*n+k]
			}
			want := 0.0
			if i == j {
				want = 1
			}
			if math.Abs(d-want) > 1e-12 {
				t.Fatalf("(Q Qᵀ)[%d][%d] = %g", i, j, d)
			}
		}
	}
}

// TestResidualIsRandomHadamard: the residual rotation of a size with a
// construction is H diag(s)/sqrt(n) with signs ±1, against the float64
// matrix kernels.Hadamard.Matrix gives (rows of x Q for the unit vectors
// x are the rows of Q).
func TestResidualIsRandomHadamard(t *testing.T) {
	n := 48 // 12 x 4
	q, desc := residual(n, 9)
	if desc == "" {
		t.Fatal("no Hadamard construction for 48")
	}
	h, err := kernels.NewHadamard(n)
	if err != nil {
		t.Fatal(err)
	}
	hm := h.Matrix()
	neg := 0
	for i := 0; i < n; i++ {
		row := make([]float64, n)
		row[i] = 1
		q(row)
		for j := range row {
			s := row[j] / hm[i*n+j]
			if math.Abs(math.Abs(s)-1) > 1e-12 {
				t.Fatalf("Q[%d][%d] = %g, H/sqrt(n) %g: not a sign", i, j, row[j], hm[i*n+j])
			}
			if i == 0 && s < 0 {
				neg++
			}
		}
	}
	if neg == 0 || neg == n {
		t.Errorf("%d of %d signs negative: not random", neg, n)
	}
}

// rowsSeen is an observer that records the rows of a linear's input.
type rowsSeen struct{ rows *[][]float32 }

func (o rowsSeen) Observe(_ autograd.Ops, x *autograd.Var) *autograd.Var {
	if o.rows != nil {
		n := x.Shape()[len(x.Shape())-1]
		for r := 0; r < x.Size(); r += n {
			*o.rows = append(*o.rows, append([]float32(nil), x.Data()[r:r+n]...))
		}
	}
	return x
}

func (o rowsSeen) Replica() layers.Observer { return o }

// kurtosis is the mean over rows of each row's kurtosis E[(x-mu)^4]/var^2.
func kurtosis(rows [][]float32) float64 {
	var sum float64
	for _, r := range rows {
		var mu, m2, m4 float64
		for _, v := range r {
			mu += float64(v)
		}
		mu /= float64(len(r))
		for _, v := range r {
			d := float64(v) - mu
			m2 += d * d
			m4 += d * d * d * d
		}
		m2 /= float64(len(r))
		m4 /= float64(len(r))
		sum += m4 / (m2 * m2)
	}
	return sum / float64(len(rows))
}

// TestRotationSpreadsOutliers: a model whose residual stream has outlier
// channels (a few embedding columns 30 times the others, as trained LLMs
// have) feeds q_proj and down_proj inputs of high kurtosis; after the
// rotation the same tokens give inputs of kurtosis near a Gaussian's 3.
func TestRotationSpreadsOutliers(t *testing.T) {
	c := configs["untied"]
	m := model(c, 4)
	e := m.Embed.Weight.Data()
	for r := 0; r < c.Vocab; r++ {
		for _, ch := range []int{3, 40} {
			e[r*c.Dim+ch] *= 30
		}
	}
	ids := tokens(rand.New(rand.NewPCG(2, 2)), 4*c.MaxSeq, c.Vocab)
	measure := func() (q, down float64) {
		var qr, dr [][]float32
		m.Layers[0].Attn.Q.Observers = []layers.Observer{rowsSeen{&qr}}
		m.Layers[0].MLP.Down.Observers = []layers.Observer{rowsSeen{&dr}}
		forward(m, ids, 4, c.MaxSeq)
		m.Layers[0].Attn.Q.Observers, m.Layers[0].MLP.Down.Observers = nil, nil
		return kurtosis(qr), kurtosis(dr)
	}
	q0, d0 := measure()
	if _, err := Hadamard(m, 1, nil); err != nil {
		t.Fatal(err)
	}
	q1, d1 := measure()
	t.Logf("q_proj input kurtosis %.1f -> %.1f, down_proj input %.1f -> %.1f", q0, q1, d0, d1)
	if q0 < 10 || q1 > 4 {
		t.Errorf("q_proj input kurtosis %.2f -> %.2f: want an outlier input (> 10) spread to about 3 (< 4)", q0, q1)
	}
	if d1 > d0 {
		t.Errorf("down_proj input kurtosis rose from %.2f to %.2f", d0, d1)
	}
}
