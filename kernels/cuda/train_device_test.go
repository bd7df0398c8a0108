//go:build gpu

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"qat/kernels"
)

// The training kernels on the device against their host build: exact
// where the host build is (RoPE, AdamW, Add, Axpy, the embedding,
// RMSNorm's weight gradient); within a float32 summation's rounding where
// a warp or block reduces a row (RMSNorm, cross-entropy); within an ulp
// where exp differs between the device's and the C library's double exp.

// nearRel fails where |got - want| > tol * (scale + |want|).
func nearRel(t *testing.T, what string, got, want []float32, tol, scale float64) {
	t.Helper()
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > tol*(scale+math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d]: device %g, host %g", what, i, got[i], want[i])
		}
	}
}

func TestDeviceRMSNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	for _, sh := range [][2]int{{1, 1}, {3, 7}, {17, 256}, {1024, 512}} {
		rows, dim := sh[0], sh[1]
		x, w, dy := randn(rng, rows*dim, 1), randn(rng, dim, 1), randn(rng, rows*dim, 1)
		y, rs := make([]float32, rows*dim), make([]float32, rows)
		hostRMSNormFwd(y, rs, x, w, rows, dim, 1e-5)
		xb, wb, yb, rb := up(t, x), up(t, w), up(t, make([]float32, rows*dim)), up(t, make([]float32, rows))
		must(t, dev.RMSNormFwd(yb, rb, xb, wb, rows, dim, 1e-5))
		nearRel(t, "rstd", down(t, make([]float32, rows), rb), rs, 1e-6, 0)
		nearRel(t, "y", down(t, make([]float32, rows*dim), yb), y, 1e-6, 1e-3)
		dx, dw := randn(rng, rows*dim, 1), randn(rng, dim, 1)
		dxb, dwb := up(t, dx), up(t, dw)
		must(t, dev.RMSNormBwd(dxb, dwb, up(t, dy), xb, wb, up(t, rs), rows, dim))
		hostRMSNormBwd(dx, dw, dy, x, w, rs, rows, dim)
		nearRel(t, "dx", down(t, make([]float32, rows*dim), dxb), dx, 1e-5, 1e-2)
		sameBits(t, "dw", down(t, make([]float32, dim), dwb), dw) // rows in order, same rstd
	}
}

func TestDeviceRoPEAndElementwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(53, 54))
	rows, heads, hd := 300, 4, 64
	cos, sin, pos, x := ropeInputs(rng, rows, heads, hd, 512)
	for _, sign := range []float32{1, -1} {
		for _, acc := range []bool{false, true} {
			y := randn(rng, len(x), 1)
			yb := up(t, y)
			must(t, dev.RoPE(yb, up(t, x), up(t, pos), up(t, cos), up(t, sin), rows, heads, hd, sign, acc))
			hostRoPE(y, x, pos, cos, sin, rows, heads, hd, sign, acc)
			sameBits(t, "rope", down(t, make([]float32, len(x)), yb), y)
		}
	}
	n := 100003
	g, u, dy := randn(rng, n, 3), randn(rng, n, 1), randn(rng, n, 1)
	y := make([]float32, n)
	yb := up(t, y)
	must(t, dev.SwiGLUFwd(yb, up(t, g), up(t, u), n))
	hostSwiGLUFwd(y, g, u)
	nearBits(t, "swiglu y", down(t, make([]float32, n), yb), y)
	dg, du := randn(rng, n, 1), randn(rng, n, 1)
	dgb, dub := up(t, dg), up(t, du)
	must(t, dev.SwiGLUBwd(dgb, dub, up(t, dy), up(t, g), up(t, u), n))
	hostSwiGLUBwd(dg, du, dy, g, u)
	nearBits(t, "swiglu dg", down(t, make([]float32, n), dgb), dg)
	nearBits(t, "swiglu du", down(t, make([]float32, n), dub), du)

	p, m, v := randn(rng, n, 1), randn(rng, n, 0.01), randn(rng, n, 0.01)
	for i := range v {
		v[i] *= v[i]
	}
	pb, mb, vb, gb := up(t, p), up(t, m), up(t, v), up(t, dy)
	for s := 0; s < 3; s++ {
		must(t, dev.AdamW(pb, gb, mb, vb, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3))
		hostAdamW(p, dy, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
	}
	sameBits(t, "adamw p", down(t, make([]float32, n), pb), p)
	sameBits(t, "adamw m", down(t, make([]float32, n), mb), m)
	sameBits(t, "adamw v", down(t, make([]float32, n), vb), v)

	sb := up(t, make([]float32, n))
	must(t, dev.Add(sb, up(t, g), up(t, u), n))
	must(t, dev.Axpy(sb, up(t, dy), -0.5, n))
	sum := down(t, make([]float32, n), sb)
	for i := range sum {
		if want := (g[i] + u[i]) + (-0.5)*dy[i]; math.Float32bits(sum[i]) != math.Float32bits(want) {
			t.Fatalf("add/axpy[%d]: %g, want %g", i, sum[i], want)
		}
	}
}

func TestDeviceCrossEntropyAndEmbedding(t *testing.T) {
	rng := rand.New(rand.NewPCG(55, 56))
	for _, sh := range [][2]int{{1, 1}, {7, 33}, {1024, 4096}} {
		rows, n := sh[0], sh[1]
		x := randn(rng, rows*n, 3)
		tg := make([]int32, rows)
		for i := range tg {
			tg[i] = int32(rng.IntN(n))
		}
		tg[rows-1] = -1
		dx, loss := make([]float32, rows*n), make([]float32, rows)
		hostCrossEntropy(x, tg, dx, loss, rows, n, 0.25)
		dxb, lb := up(t, dx), up(t, loss)
		must(t, dev.CrossEntropy(up(t, x), up(t, tg), dxb, lb, rows, n, 0.25))
		nearRel(t, "loss", down(t, make([]float32, rows), lb), loss, 1e-6, 1)
		nearRel(t, "dx", down(t, make([]float32, rows*n), dxb), dx, 1e-5, 1e-4)
	}
	vocab, dim, rows := 1000, 96, 777
	w, dy := randn(rng, vocab*dim, 1), randn(rng, rows*dim, 1)
	ids := make([]int32, rows)
	for i := range ids {
		ids[i] = int32(rng.IntN(50)) // repeated ids: the scatter's order matters
	}
	yb := up(t, make([]float32, rows*dim))
	must(t, dev.EmbeddingFwd(yb, up(t, w), up(t, ids), rows, dim))
	y := down(t, make([]float32, rows*dim), yb)
	dw := randn(rng, vocab*dim, 1)
	dwb := up(t, dw)
	must(t, dev.EmbeddingBwd(dwb, up(t, dy), up(t, ids), rows, dim))
	for r, id := range ids {
		for j := 0; j < dim; j++ {
			if y[r*dim+j] != w[int(id)*dim+j] {
				t.Fatalf("embedding y[%d,%d]", r, j)
			}
			dw[int(id)*dim+j] += dy[r*dim+j]
		}
	}
	sameBits(t, "embedding dw", down(t, make([]float32, vocab*dim), dwb), dw)
}

func TestDeviceSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(57, 58))
	for _, sh := range [][3]int{{1, 1, 1}, {7, 9, 13}, {64, 64, 16}, {100, 300, 257}, {1024, 768, 256}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				for _, beta := range []float32{0, 0.5} {
					a, b, c := randn(rng, m*k, 1), randn(rng, k*n, 1), randn(rng, m*n, 1)
					lda, ldb := k, n
					if tA {
						lda = m
					}
					if tB {
						ldb = k
					}
					cb := up(t, c)
					if beta == 0 {
						for i := range c {
							c[i] = float32(math.NaN()) // beta 0 must not read C
						}
						cb = up(t, c)
					}
					must(t, dev.Sgemm(tA, tB, m, n, k, 1.5, up(t, a), lda, up(t, b), ldb, beta, cb, n))
					kernels.Sgemm(tA, tB, m, n, k, 1.5, a, lda, b, ldb, beta, c, n)
					nearRel(t, fmt.Sprintf("sgemm %v tA=%v tB=%v beta=%g", sh, tA, tB, beta), down(t, make([]float32, m*n), cb), c, 1e-5, math.Sqrt(float64(k)))
				}
			}
		}
	}
}

func TestDeviceAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(59, 60))
	for _, c := range []Attn{{1, 1, 1, 1, 1, 1}, {2, 37, 4, 4, 16, 0.25}, {2, 128, 8, 2, 64, 0.125}, {1, 256, 4, 1, 128, 0.088}} {
		dq, dk := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
		n := c.B * c.T
		q, k, v, dout := randn(rng, n*dq, 1), randn(rng, n*dk, 1), randn(rng, n*dk, 1), randn(rng, n*dq, 1)
		cpu := kernels.Attn{B: c.B, T: c.T, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim, Scale: c.Scale}
		out := make([]float32, n*dq)
		cpu.Forward(out, q, k, v, make([]float32, cpu.ForwardScratch()))
		qb, kb, vb, ob := up(t, q), up(t, k), up(t, v), up(t, make([]float32, n*dq))
		lse, delta := up(t, make([]float32, c.B*c.Heads*c.T)), up(t, make([]float32, c.B*c.Heads*c.T))
		must(t, c.Forward(dev, ob, lse, qb, kb, vb))
		nearRel(t, fmt.Sprintf("%+v out", c), down(t, make([]float32, n*dq), ob), out, 1e-5, 1)
		for _, first := range []bool{true, false} {
			dQ, dK, dV := randn(rng, n*dq, 1), randn(rng, n*dk, 1), randn(rng, n*dk, 1)
			dQb, dKb, dVb := up(t, dQ), up(t, dK), up(t, dV)
			cpu.Backward(dQ, dK, dV, dout, q, k, v, make([]float32, cpu.BackwardScratch()), first, first, first)
			must(t, c.Backward(dev, dQb, dKb, dVb, up(t, dout), ob, lse, delta, qb, kb, vb, first, first, first))
			nearRel(t, fmt.Sprintf("%+v dQ", c), down(t, make([]float32, n*dq), dQb), dQ, 1e-4, 1)
			nearRel(t, fmt.Sprintf("%+v dK", c), down(t, make([]float32, n*dk), dKb), dK, 1e-4, 1)
			nearRel(t, fmt.Sprintf("%+v dV", c), down(t, make([]float32, n*dk), dVb), dV, 1e-4, 1)
		}
	}
}
