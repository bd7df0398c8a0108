package kernels

import (
	"fmt"
	"math"
)

func checkLen(op string, x []float32, n int) {
	if len(x) < n {
		panic(fmt.Sprintf("kernels: %s: slice length %d, need %d", op, len(x), n))
	}
}

func checkTargets(t []int32, rows, n int) {
	if len(t) < rows {
		panic(fmt.Sprintf("kernels: CrossEntropy: %d targets for %d rows", len(t), rows))
	}
	for _, v := range t[:rows] {
		if int(v) >= n {
			panic(fmt.Sprintf("kernels: CrossEntropy: target %d out of range [0,%d)", v, n))
		}
	}
}

func checkRoPE(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd, ldy, ldx int) {
	if hd%2 != 0 {
		panic(fmt.Sprintf("kernels: RoPE: odd head dim %d", hd))
	}
	if ldy < heads*hd || ldx < heads*hd {
		panic(fmt.Sprintf("kernels: RoPE: row strides %d and %d under %d heads of %d", ldy, ldx, heads, hd))
	}
	if rows > 0 {
		checkLen("RoPE x", x, (rows-1)*ldx+heads*hd)
		checkLen("RoPE y", y, (rows-1)*ldy+heads*hd)
	}
	if len(pos) < rows {
		panic(fmt.Sprintf("kernels: RoPE: %d positions for %d rows", len(pos), rows))
	}
	maxPos := len(cos) / (hd / 2)
	for _, p := range pos[:rows] {
		if p < 0 || int(p) >= maxPos || len(sin) < len(cos) {
			panic(fmt.Sprintf("kernels: RoPE: position %d outside table of %d", p, maxPos))
		}
	}
}

func exp32(x float32) float32 { return float32(math.Exp(float64(x))) }

// Generic is the portable Go implementation of every kernel: the reference
// the SIMD sets are tested against and the fallback on other CPUs.
var Generic = withChecks(Set{
	Name: "generic",
	Exp: func(x []float32) {
		for i, v := range x {
			x[i] = exp32(v)
		}
	},
	// CausalSoftmax: s holds rows of a score block (row stride ld, n columns);
	// row r is query i0+r and attends to keys 0..i0+r. It is replaced by
	// softmax(scale*s) over those keys and zeros after them; lse[r] gets the
	// log-sum-exp of the scaled row.
	CausalSoftmax: func(s []float32, rows, i0, n, ld int, scale float32, lse []float32) {
		for r := 0; r < rows; r++ {
			x := s[r*ld : r*ld+n]
			m := min(i0+r+1, n)
			mx := x[0]
			for _, v := range x[:m] {
				mx = max(mx, v)
			}
			mx *= scale
			var sum float32
			for j := 0; j < m; j++ {
				e := exp32(x[j]*scale - mx)
				x[j] = e
				sum += e
			}
			inv := 1 / sum
			for j := 0; j < m; j++ {
				x[j] *= inv
			}
			clear(x[m:])
			lse[r] = mx + float32(math.Log(float64(sum)))
		}
	},
	// SoftmaxBwd: dp <- scale * p * (dp - rowsum(p*dp)), the softmax
	// gradient, row by row.
	SoftmaxBwd: func(p, dp []float32, rows, n, ld int, scale float32) {
		for r := 0; r < rows; r++ {
			pr, g := p[r*ld:r*ld+n], dp[r*ld:r*ld+n]
			var d float32
			for j := range pr {
				d += pr[j] * g[j]
			}
			for j := range pr {
				g[j] = scale * pr[j] * (g[j] - d)
			}
		}
	},
	// CrossEntropy: loss[r] = logsumexp(x[r]) - x[r][t[r]] and
	// dx[r] = gscale*(softmax(x[r]) - onehot(t[r])); a negative target is
	// ignored (loss and gradient 0).
	CrossEntropy: func(x []float32, t []int32, dx, loss []float32, rows, n int, gscale float32) {
		for r := 0; r < rows; r++ {
			xr, g := x[r*n:(r+1)*n], dx[r*n:(r+1)*n]
			if t[r] < 0 {
				clear(g)
				loss[r] = 0
				continue
			}
			mx := xr[0]
			for _, v := range xr {
				mx = max(mx, v)
			}
			var sum float32
			for j, v := range xr {
				e := exp32(v - mx)
				g[j] = e
				sum += e
			}
			c := gscale / sum
			for j := range g {
				g[j] *= c
			}
			g[t[r]] -= gscale
			loss[r] = mx + float32(math.Log(float64(sum))) - xr[t[r]]
		}
	},
	// RMSNormFwd: y = x * rstd * w per row of d, rstd = 1/sqrt(mean(x^2)+eps).
	RMSNormFwd: func(y, rstd, x, w []float32, rows, d int, eps float32) {
		for r := 0; r < rows; r++ {
			xr, yr := x[r*d:(r+1)*d], y[r*d:(r+1)*d]
			var ss float32
			for _, v := range xr {
				ss += v * v
			}
			rs := float32(1 / math.Sqrt(float64(ss/float32(d)+eps)))
			rstd[r] = rs
			for j, v := range xr {
				yr[j] = v * rs * w[j]
			}
		}
	},
	// RMSNormBwd: dx += rstd*(w*dy - xhat*mean(w*dy*xhat)), dw += sum over
	// rows of dy*xhat, with xhat = x*rstd.
	RMSNormBwd: func(dx, dw, dy, x, w, rstd []float32, rows, d int) {
		for r := 0; r < rows; r++ {
			xr, gr, dxr := x[r*d:(r+1)*d], dy[r*d:(r+1)*d], dx[r*d:(r+1)*d]
			rs := rstd[r]
			var dot float32
			for j := range xr {
				dot += gr[j] * w[j] * xr[j]
			}
			c := dot * rs * rs / float32(d)
			for j := range xr {
				dxr[j] += rs * (gr[j]*w[j] - xr[j]*c)
				dw[j] += gr[j] * xr[j] * rs
			}
		}
	},
	// SwiGLUFwd: y = silu(g) * u.
	SwiGLUFwd: func(y, g, u []float32) {
		for i := range y {
			s := 1 / (1 + exp32(-g[i]))
			y[i] = g[i] * s * u[i]
		}
	},
	// SwiGLUBwd: dg += dy*u*s*(1+g*(1-s)), du += dy*silu(g), s = sigmoid(g);
	// without acc they are written instead.
	SwiGLUBwd: func(dg, du, dy, g, u []float32, acc bool) {
		for i := range dy {
			s := 1 / (1 + exp32(-g[i]))
			a, b := dy[i]*u[i]*s*(1+g[i]*(1-s)), dy[i]*g[i]*s
			if acc {
				dg[i] += a
				du[i] += b
			} else {
				dg[i], du[i] = a, b
			}
		}
	},
	// SiLUFwd: y = x*sigmoid(x).
	SiLUFwd: func(y, x []float32) {
		for i := range y {
			y[i] = x[i] / (1 + exp32(-x[i]))
		}
	},
	// SiLUBwd: dx += dy*s*(1+x*(1-s)).
	SiLUBwd: func(dx, dy, x []float32) {
		for i := range dx {
			s := 1 / (1 + exp32(-x[i]))
			dx[i] += dy[i] * s * (1 + x[i]*(1-s))
		}
	},
	// RoPE rotates pairs (j, j+hd/2) of each head (the rotate-half layout of
	// Hugging Face Llama) by angle pos*theta_j: x (rows, heads, hd) with row
	// stride ldx (y: ldy; heads*hd when contiguous, wider for columns of a
	// joint product), row r at position pos[r], cos/sin tables (maxpos,
	// hd/2). sign -1 applies the inverse rotation (backward); acc adds into
	// y instead of writing.
	RoPE: func(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd, ldy, ldx int, sign float32, acc bool) {
		h2 := hd / 2
		for r := 0; r < rows; r++ {
			c, s := cos[int(pos[r])*h2:], sin[int(pos[r])*h2:]
			for h := 0; h < heads; h++ {
				xr, yr := x[r*ldx+h*hd:r*ldx+(h+1)*hd], y[r*ldy+h*hd:r*ldy+(h+1)*hd]
				for j := 0; j < h2; j++ {
					a, b := xr[j], xr[j+h2]
					v0 := a*c[j] - sign*b*s[j]
					v1 := b*c[j] + sign*a*s[j]
					if acc {
						yr[j] += v0
						yr[j+h2] += v1
					} else {
						yr[j], yr[j+h2] = v0, v1
					}
				}
			}
		}
	},
	// Axpy: y += a*x.
	Axpy: func(y, x []float32, a float32) {
		for i := range y {
			y[i] += a * x[i]
		}
	},
	// Add: y = a + b.
	Add: func(y, a, b []float32) {
		for i := range y {
			y[i] = a[i] + b[i]
		}
	},
	// Scale: y = a*x.
	Scale: func(y, x []float32, a float32) {
		for i := range y {
			y[i] = a * x[i]
		}
	},
	// AdamW is one step of PyTorch's AdamW over flat slices, with bias
	// corrections bc1 = 1-b1^t and bc2 = 1-b2^t: p *= 1-lr*wd;
	// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
	// p -= (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps).
	AdamW: func(p, g, m, v []float32, lr, b1, b2, eps, wd, bc1, bc2 float32) {
		step, decay := lr/bc1, 1-lr*wd
		isb2 := float32(1 / math.Sqrt(float64(bc2)))
		for i := range p {
			gi := g[i]
			mi := b1*m[i] + (1-b1)*gi
			vi := b2*v[i] + (1-b2)*gi*gi
			m[i], v[i] = mi, vi
			p[i] = p[i]*decay - step*mi/(float32(math.Sqrt(float64(vi)))*isb2+eps)
		}
	},
	// SumSq returns the sum of squares, accumulated in float64.
	SumSq: func(x []float32) float64 {
		var s float64
		for _, v := range x {
			s += float64(v) * float64(v)
		}
		return s
	},
})
