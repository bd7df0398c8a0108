package kernels

// Attn is causal multi-head attention with grouped-query heads over rows
// of B sequences of T tokens: q (B*T, Heads*HeadDim), k and v (B*T,
// KVHeads*HeadDim); query head h reads kv head h/(Heads/KVHeads). It keeps
// no T x T tensor: each head's scores live in a per-goroutine scratch and
// Backward recomputes them from q and k (as flash attention does). The
// tape's Attention and the Gorgonia engine's both run it, so the two
// engines agree to the bit.
type Attn struct {
	B, T, Heads, KVHeads, HeadDim int
	Scale                         float32
	// VStride is the row stride of v and dV when they are columns of a
	// wider matrix (the joint q/k/v product); 0 means KVHeads*HeadDim.
	VStride int
}

func (a Attn) vStride() int {
	if a.VStride > 0 {
		return a.VStride
	}
	return a.KVHeads * a.HeadDim
}

// attnBlock is the number of query rows Attn handles per product: block
// i0 needs keys 0..i0+attnBlock-1 only, so the masked upper triangle is
// mostly never computed (T = 128: 62% of the full products).
const attnBlock = 32

// ForwardScratch is the scratch Forward needs with the current threads.
func (a Attn) ForwardScratch() int {
	qb := min(a.T, attnBlock)
	return Chunks(a.B*a.Heads, 1) * (qb*a.T + qb)
}

// BackwardScratch is the scratch Backward needs with the current threads.
func (a Attn) BackwardScratch() int {
	qb := min(a.T, attnBlock)
	return Chunks(a.B*a.KVHeads, 1) * (2*qb*a.T + qb)
}

// Forward writes the attention output to out.
func (a Attn) Forward(out, q, k, v, scratch []float32) {
	B, T, heads, hd := a.B, a.T, a.Heads, a.HeadDim
	dq, dk, dv := heads*hd, a.KVHeads*hd, a.vStride()
	group := heads / a.KVHeads
	qb := min(T, attnBlock)
	ForBLAS(B*heads, 1, func(c, lo, hi int) {
		s, lse := scratch[c*(qb*T+qb):c*(qb*T+qb)+qb*T], scratch[c*(qb*T+qb)+qb*T:(c+1)*(qb*T+qb)]
		for bh := lo; bh < hi; bh++ {
			b, h := bh/heads, bh%heads
			qo, ko, vo := b*T*dq+h*hd, b*T*dk+(h/group)*hd, b*T*dv+(h/group)*hd
			for i0 := 0; i0 < T; i0 += qb {
				rows := min(qb, T-i0)
				n := i0 + rows
				// S = Q[i0:] K[:n]^T; P = causal softmax; O[i0:] = P V[:n]
				SgemmSerial(false, true, rows, n, hd, 1, q[qo+i0*dq:], dq, k[ko:], dk, 0, s, n)
				Active.CausalSoftmax(s, rows, i0, n, n, a.Scale, lse)
				SgemmSerial(false, false, rows, hd, n, 1, s, n, v[vo:], dv, 0, out[qo+i0*dq:], dq)
			}
		}
	})
}

// Backward computes the gradients of q, k and v from the output's, dout;
// each is written when its first flag is set and added to otherwise. The
// three must not share memory.
func (a Attn) Backward(dQ, dK, dV, dout, q, k, v, scratch []float32, fq, fk, fv bool) {
	B, T, hd := a.B, a.T, a.HeadDim
	if T == 0 {
		return
	}
	dq, dk, dv := a.Heads*hd, a.KVHeads*hd, a.vStride()
	group := a.Heads / a.KVHeads
	qb := min(T, attnBlock)
	betaQ := float32(1)
	if fq {
		betaQ = 0
	}
	// One work item per (batch, kv head): the query heads of a group all
	// add into the same dK and dV, so they stay on one goroutine.
	ForBLAS(B*a.KVHeads, 1, func(c, lo, hi int) {
		w := scratch[c*(2*qb*T+qb) : (c+1)*(2*qb*T+qb)]
		p, dp, lse := w[:qb*T], w[qb*T:2*qb*T], w[2*qb*T:]
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/a.KVHeads, bk%a.KVHeads
			ko, vo := b*T*dk+kh*hd, b*T*dv+kh*hd
			for h := kh * group; h < (kh+1)*group; h++ {
				qo := b*T*dq + h*hd
				// The last query block reaches every key row: run it first,
				// and fresh dK and dV need no clearing (its products write
				// them with beta 0); the blocks after it add.
				for i0 := (T - 1) / qb * qb; i0 >= 0; i0 -= qb {
					rows := min(qb, T-i0)
					n := i0 + rows
					qi := qo + i0*dq
					first := h == kh*group && n == T
					betaK, betaV := float32(1), float32(1)
					if first && fk {
						betaK = 0
					}
					if first && fv {
						betaV = 0
					}
					SgemmSerial(false, true, rows, n, hd, 1, q[qi:], dq, k[ko:], dk, 0, p, n)
					Active.CausalSoftmax(p, rows, i0, n, n, a.Scale, lse)
					// dV[:n] += P^T dO; dP = dO V[:n]^T; dS = scale*P*(dP - rowsum(P dP))
					SgemmSerial(true, false, n, hd, rows, 1, p, n, dout[qi:], dq, betaV, dV[vo:], dv)
					SgemmSerial(false, true, rows, n, hd, 1, dout[qi:], dq, v[vo:], dv, 0, dp, n)
					Active.SoftmaxBwd(p, dp, rows, n, n, a.Scale)
					// dQ[i0:] = dS K[:n]; dK[:n] += dS^T Q[i0:]
					SgemmSerial(false, false, rows, hd, n, 1, dp, n, k[ko:], dk, betaQ, dQ[qi:], dq)
					SgemmSerial(true, false, n, hd, rows, 1, dp, n, q[qi:], dq, betaK, dK[ko:], dk)
				}
			}
		}
	})
}
