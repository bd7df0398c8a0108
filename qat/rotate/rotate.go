// Package rotate applies QuaRot's rotations (arXiv 2404.00456; SpinQuant,
// arXiv 2405.16406, learns the same residual rotation) to a
// full-precision model, so that its linears' inputs lose their outlier
// channels before quantization while the model computes the same function
// (../shared/docs/algorithms.md section 13):
//
//  1. Every RMSNorm's weight is folded into the linears that read the
//     norm's output (q/k/v, gate/up, the head), and the norm's weight
//     becomes 1: a scale-free RMSNorm commutes with an orthogonal Q.
//  2. A tied head is untied: the rotated head and embedding differ once
//     the final norm is folded into the head.
//  3. The residual stream is rotated by Q = H diag(s) / sqrt(dim), a
//     Hadamard matrix with random signs s (a seeded random orthogonal
//     matrix where no Hadamard matrix of size dim is known): the embedding
//     table becomes E Q, each linear reading the stream W Q (W is
//     (out, in) as layers stores it), each linear writing into it Qᵀ W.
//  4. The down_proj input gets an online transform H_ffn at run time
//     (layers.Config.DownHadamard; the block-diagonal Walsh-Hadamard
//     transform where no full one is known), whose inverse is folded into
//     down_proj: W_down H_ffn.
//
// The folding runs in float64 and rounds each weight to float32 once.
package rotate

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"qat/kernels"
	"qat/layers"
)

// Report says what Hadamard did.
type Report struct {
	// Residual describes the residual rotation (a Hadamard construction
	// with random signs, or a random orthogonal matrix).
	Residual string
	// Online is the down_proj input's transform, layers.DownFull or
	// layers.DownBlock.
	Online string
	// Untied is set when the model's tied head was untied.
	Untied bool
}

// ErrRotated refuses a model that is rotated already: its down_proj input
// has an online transform, and a second one cannot be recorded.
var ErrRotated = errors.New("the model is rotated already (its config has qat_down_hadamard): rotate the unrotated model")

// Hadamard rotates m in place (the package comment's four steps), with
// the residual rotation's signs drawn from seed. log gets a line for each
// fallback (no Hadamard matrix of the size); nil is silent. m must be
// full precision: quantizers, observers and adapters go on after the
// rotation (their statistics and steps are of the rotated weights), and a
// model that is rotated already is refused (ErrRotated).
func Hadamard(m *layers.Model, seed uint64, log io.Writer) (Report, error) {
	var rep Report
	if log == nil {
		log = io.Discard
	}
	if m.DownHadamard != "" {
		return rep, ErrRotated
	}
	for _, nl := range m.Linears() {
		if nl.Linear.Quantized() || nl.Linear.Weight == nil {
			return rep, fmt.Errorf("%s: rotate the full-precision model: its quantizers, observers and adapters go on after the rotation", nl.Name)
		}
	}
	for _, a := range m.Attentions() {
		if a.Attention.KQuant != nil || a.Attention.VQuant != nil {
			return rep, fmt.Errorf("%s: rotate the full-precision model: its KV-cache quantizers go on after the rotation", a.Name)
		}
	}
	// the online transform first: SetDownHadamard checks it before any
	// weight changes
	online := layers.DownFull
	hf, err := kernels.NewHadamard(m.FFNHidden)
	if err != nil {
		online = layers.DownBlock
		if hf, err = kernels.NewBlockHadamard(m.FFNHidden); err != nil {
			return rep, err
		}
		fmt.Fprintf(log, "rotate: no Hadamard matrix of size ffn_hidden %d is known: the down_proj input takes the %s\n", m.FFNHidden, hf)
	}
	q, desc := residual(m.Dim, seed)
	if desc == "" {
		desc = "a random orthogonal matrix (seeded)"
		fmt.Fprintf(log, "rotate: no Hadamard matrix of size dim %d is known: the residual stream takes %s\n", m.Dim, desc)
	}
	rep.Residual, rep.Online = desc, online
	if m.Head == nil {
		m.Untie()
		rep.Untied = true
	}
	dim := m.Dim
	// the embedding's rows are residual vectors: E Q
	rows(m.Embed.Weight.Data(), dim, nil, q)
	for _, l := range m.Layers {
		a, f := l.AttnNorm.Weight.Data(), l.MLPNorm.Weight.Data()
		for _, w := range [][]float32{l.Attn.Q.Weight.Data(), l.Attn.K.Weight.Data(), l.Attn.V.Weight.Data()} {
			rows(w, dim, a, q)
		}
		rows(l.MLP.Gate.Weight.Data(), dim, f, q)
		rows(l.MLP.Up.Weight.Data(), dim, f, q)
		setOnes(a)
		setOnes(f)
		columns(l.Attn.O.Weight.Data(), dim, nil, q)
		columns(l.MLP.Down.Weight.Data(), dim, hf.Apply64, q)
	}
	rows(m.Head.Weight.Data(), dim, m.Norm.Weight.Data(), q)
	setOnes(m.Norm.Weight.Data())
	if err := m.SetDownHadamard(online); err != nil {
		return rep, err // cannot happen: the transform was built above
	}
	return rep, nil
}

// residual returns the residual rotation x -> x Q of size n as a function
// on float64 rows, and its description: Q = H diag(s)/sqrt(n) with a
// Hadamard construction of size n and random signs s from seed, or (desc
// "") a seeded random orthogonal matrix when no construction is known.
func residual(n int, seed uint64) (q func(row []float64), desc string) {
	rng := rand.New(rand.NewPCG(seed, 0x9047a7e))
	h, err := kernels.NewHadamard(n)
	if err != nil {
		return dense(RandomOrthogonal(n, rng), n), ""
	}
	s := make([]float64, n)
	for i := range s {
		s[i] = 1
		if rng.IntN(2) == 1 {
			s[i] = -1
		}
	}
	return func(row []float64) {
		h.Apply64(row)
		for i := range row {
			row[i] *= s[i]
		}
	}, fmt.Sprintf("%s with random signs (seed %d)", h, seed)
}

// dense returns x -> x Q for Q (n x n, row-major).
func dense(q []float64, n int) func(row []float64) {
	return func(row []float64) {
		y := make([]float64, n)
		for i, x := range row {
			if x == 0 {
				continue
			}
			for j, v := range q[i*n : (i+1)*n] {
				y[j] += x * v
			}
		}
		copy(row, y)
	}
}

// RandomOrthogonal returns an n x n orthogonal matrix (row-major): the
// rows of a Gaussian matrix orthonormalised by modified Gram-Schmidt,
// twice over for float64 orthogonality.
func RandomOrthogonal(n int, rng *rand.Rand) []float64 {
	q := make([]float64, n*n)
	for i := range q {
		q[i] = rng.NormFloat64()
	}
	for i := 0; i < n; i++ {
		ri := q[i*n : (i+1)*n]
		for pass := 0; pass < 2; pass++ {
			for j := 0; j < i; j++ {
				rj := q[j*n : (j+1)*n]
				var d float64
				for k := range ri {
					d += ri[k] * rj[k]
				}
				for k := range ri {
					ri[k] -= d * rj[k]
				}
			}
		}
		var norm float64
		for _, v := range ri {
			norm += v * v
		}
		norm = math.Sqrt(norm)
		for k := range ri {
			ri[k] /= norm
		}
	}
	return q
}

// rows replaces each row r of w (rows of length n) with (r ⊙ alpha) Q in
// float64, rounded once: a linear reading a normed (alpha, nil for none)
// residual vector, or the embedding table.
func rows(w []float32, n int, alpha []float32, q func([]float64)) {
	nr := len(w) / n
	kernels.For(nr, max(1, 1<<14/n), func(lo, hi int) {
		r := make([]float64, n)
		for i := lo; i < hi; i++ {
			wr := w[i*n : (i+1)*n]
			for k, v := range wr {
				r[k] = float64(v)
				if alpha != nil {
					r[k] *= float64(alpha[k])
				}
			}
			q(r)
			for k, v := range r {
				wr[k] = float32(v)
			}
		}
	})
}

// columns replaces w (out x in, out = n: a linear writing into the
// residual stream) with Qᵀ (w H) in float64, rounded once: the columns of
// w, as row vectors, are multiplied by Q ((Qᵀ c)ᵀ = cᵀ Q). inner, when
// set, first transforms the rows (down_proj's W H_ffn).
func columns(w []float32, n int, inner func([]float64), q func([]float64)) {
	in := len(w) / n
	buf := make([]float64, len(w)) // transposed: (in, n)
	kernels.For(n, max(1, 1<<14/in), func(lo, hi int) {
		r := make([]float64, in)
		for o := lo; o < hi; o++ {
			for k, v := range w[o*in : (o+1)*in] {
				r[k] = float64(v)
			}
			if inner != nil {
				inner(r)
			}
			for k, v := range r {
				buf[k*n+o] = v
			}
		}
	})
	kernels.For(in, max(1, 1<<14/n), func(lo, hi int) {
		for c := lo; c < hi; c++ {
			q(buf[c*n : (c+1)*n])
		}
	})
	for o := 0; o < n; o++ {
		for c := 0; c < in; c++ {
			w[o*in+c] = float32(buf[c*n+o])
		}
	}
}

func setOnes(x []float32) {
	for i := range x {
		x[i] = 1
	}
}
