// Package ref holds float64 references of every autograd op, written from
// the definitions with plain loops and sharing no code with the ops or the
// kernels. Tests of autograd and layers compare against it; finite
// differences of these functions are the gradient oracle.
package ref

import "math"

// Linear: x (rows, in), w (out, in) -> x w^T.
func Linear(x, w []float64, rows, in, out int) []float64 {
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for o := 0; o < out; o++ {
			var s float64
			for i := 0; i < in; i++ {
				s += x[r*in+i] * w[o*in+i]
			}
			y[r*out+o] = s
		}
	}
	return y
}

// MatMul: a (batch, ar, ac), b (batch, br, bc) with optional transposes.
func MatMul(a, b []float64, batch, ar, ac, br, bc int, ta, tb bool) []float64 {
	at := func(x []float64, r, c, i, j int, tr bool) float64 {
		if tr {
			return x[j*c+i]
		}
		return x[i*c+j]
	}
	m, k, n := ar, ac, bc
	if ta {
		m, k = ac, ar
	}
	if tb {
		n = br
	}
	y := make([]float64, batch*m*n)
	for p := 0; p < batch; p++ {
		A, Bm := a[p*ar*ac:], b[p*br*bc:]
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for l := 0; l < k; l++ {
					s += at(A, ar, ac, i, l, ta) * at(Bm, br, bc, l, j, tb)
				}
				y[p*m*n+i*n+j] = s
			}
		}
	}
	return y
}

// RMSNorm: x / sqrt(mean(x^2)+eps) * w per row.
func RMSNorm(x, w []float64, rows, d int, eps float64) []float64 {
	y := make([]float64, rows*d)
	for r := 0; r < rows; r++ {
		var ss float64
		for j := 0; j < d; j++ {
			ss += x[r*d+j] * x[r*d+j]
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		for j := 0; j < d; j++ {
			y[r*d+j] = x[r*d+j] * inv * w[j]
		}
	}
	return y
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// SwiGLU: silu(g) * u.
func SwiGLU(g, u []float64) []float64 {
	y := make([]float64, len(g))
	for i := range g {
		y[i] = g[i] * sigmoid(g[i]) * u[i]
	}
	return y
}

// SiLU: x * sigmoid(x).
func SiLU(x []float64) []float64 {
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] * sigmoid(x[i])
	}
	return y
}

// RoPE: rotate-half layout, angle pos * theta^(-2j/hd) for pair (j, j+hd/2).
func RoPE(x []float64, pos []int32, heads, hd int, theta float64) []float64 {
	y := make([]float64, len(x))
	d := heads * hd
	for r := range pos {
		for h := 0; h < heads; h++ {
			o := r*d + h*hd
			for j := 0; j < hd/2; j++ {
				a := float64(pos[r]) / math.Pow(theta, float64(2*j)/float64(hd))
				x0, x1 := x[o+j], x[o+j+hd/2]
				y[o+j] = x0*math.Cos(a) - x1*math.Sin(a)
				y[o+j+hd/2] = x1*math.Cos(a) + x0*math.Sin(a)
			}
		}
	}
	return y
}

// Attention: causal softmax(q k^T / sqrt(hd)) v per head, the full score
// matrix with -inf above the diagonal, as the textbook writes it.
func Attention(q, k, v []float64, B, T, heads, kvHeads, hd int) []float64 {
	dq, dk := heads*hd, kvHeads*hd
	y := make([]float64, B*T*dq)
	for b := 0; b < B; b++ {
		for h := 0; h < heads; h++ {
			kh := h / (heads / kvHeads)
			for i := 0; i < T; i++ {
				s := make([]float64, T)
				mx := math.Inf(-1)
				for j := 0; j < T; j++ {
					if j > i {
						s[j] = math.Inf(-1)
						continue
					}
					var dot float64
					for c := 0; c < hd; c++ {
						dot += q[(b*T+i)*dq+h*hd+c] * k[(b*T+j)*dk+kh*hd+c]
					}
					s[j] = dot / math.Sqrt(float64(hd))
					mx = math.Max(mx, s[j])
				}
				var z float64
				for j := range s {
					s[j] = math.Exp(s[j] - mx)
					z += s[j]
				}
				for c := 0; c < hd; c++ {
					var acc float64
					for j := 0; j < T; j++ {
						acc += s[j] / z * v[(b*T+j)*dk+kh*hd+c]
					}
					y[(b*T+i)*dq+h*hd+c] = acc
				}
			}
		}
	}
	return y
}

// CrossEntropy: mean over rows whose target is not ignore of logsumexp - x[target].
func CrossEntropy(x []float64, t []int32, V int, ignore int32) []float64 {
	var sum float64
	n := 0
	for r, y := range t {
		if y == ignore {
			continue
		}
		row := x[r*V : (r+1)*V]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, v)
		}
		var z float64
		for _, v := range row {
			z += math.Exp(v - mx)
		}
		sum += mx + math.Log(z) - row[y]
		n++
	}
	return []float64{sum / float64(n)}
}

// Embedding: rows of table for ids.
func Embedding(table []float64, ids []int32, d int) []float64 {
	y := make([]float64, len(ids)*d)
	for i, id := range ids {
		copy(y[i*d:(i+1)*d], table[int(id)*d:])
	}
	return y
}
