package kernels

// withChecks returns raw with every kernel wrapped in the length checks of
// its arguments, so each implementation (Go or C) is checked in one place
// and no slice too short for its length reaches C.
func withChecks(raw Set) Set {
	s := raw
	s.CausalSoftmax = func(x []float32, rows, i0, n, ld int, scale float32, lse []float32) {
		checkLen("CausalSoftmax", x, (rows-1)*ld+n)
		checkLen("CausalSoftmax lse", lse, rows)
		raw.CausalSoftmax(x, rows, i0, n, ld, scale, lse)
	}
	s.SoftmaxBwd = func(p, dp []float32, rows, n, ld int, scale float32) {
		checkLen("SoftmaxBwd", p, (rows-1)*ld+n)
		checkLen("SoftmaxBwd", dp, (rows-1)*ld+n)
		raw.SoftmaxBwd(p, dp, rows, n, ld, scale)
	}
	s.CrossEntropy = func(x []float32, t []int32, dx, loss []float32, rows, n int, gscale float32) {
		checkLen("CrossEntropy", x, rows*n)
		checkLen("CrossEntropy dx", dx, rows*n)
		checkTargets(t, rows, n)
		checkLen("CrossEntropy loss", loss, rows)
		raw.CrossEntropy(x, t, dx, loss, rows, n, gscale)
	}
	s.RMSNormFwd = func(y, rstd, x, w []float32, rows, d int, eps float32) {
		checkLen("RMSNormFwd", x, rows*d)
		checkLen("RMSNormFwd", y, rows*d)
		checkLen("RMSNormFwd", w, d)
		checkLen("RMSNormFwd", rstd, rows)
		raw.RMSNormFwd(y, rstd, x, w, rows, d, eps)
	}
	s.RMSNormBwd = func(dx, dw, dy, x, w, rstd []float32, rows, d int) {
		checkLen("RMSNormBwd", x, rows*d)
		checkLen("RMSNormBwd", dx, rows*d)
		checkLen("RMSNormBwd", dy, rows*d)
		checkLen("RMSNormBwd", w, d)
		checkLen("RMSNormBwd", dw, d)
		checkLen("RMSNormBwd", rstd, rows)
		raw.RMSNormBwd(dx, dw, dy, x, w, rstd, rows, d)
	}
	s.SwiGLUFwd = func(y, g, u []float32) {
		checkLen("SwiGLUFwd", g, len(y))
		checkLen("SwiGLUFwd", u, len(y))
		raw.SwiGLUFwd(y, g, u)
	}
	s.SwiGLUBwd = func(dg, du, dy, g, u []float32, acc bool) {
		checkLen("SwiGLUBwd", dg, len(dy))
		checkLen("SwiGLUBwd", du, len(dy))
		checkLen("SwiGLUBwd", g, len(dy))
		checkLen("SwiGLUBwd", u, len(dy))
		raw.SwiGLUBwd(dg, du, dy, g, u, acc)
	}
	s.SiLUFwd = func(y, x []float32) {
		checkLen("SiLUFwd", x, len(y))
		raw.SiLUFwd(y, x)
	}
	s.SiLUBwd = func(dx, dy, x []float32) {
		checkLen("SiLUBwd", dy, len(dx))
		checkLen("SiLUBwd", x, len(dx))
		raw.SiLUBwd(dx, dy, x)
	}
	s.RoPE = func(y, x []float32, pos []int32, cos, sin []float32, rows, heads, hd, ldy, ldx int, sign float32, acc bool) {
		checkRoPE(y, x, pos, cos, sin, rows, heads, hd, ldy, ldx)
		raw.RoPE(y, x, pos, cos, sin, rows, heads, hd, ldy, ldx, sign, acc)
	}
	s.Axpy = func(y, x []float32, a float32) {
		checkLen("Axpy", x, len(y))
		raw.Axpy(y, x, a)
	}
	s.Add = func(y, a, b []float32) {
		checkLen("Add", a, len(y))
		checkLen("Add", b, len(y))
		raw.Add(y, a, b)
	}
	s.Scale = func(y, x []float32, a float32) {
		checkLen("Scale", x, len(y))
		raw.Scale(y, x, a)
	}
	s.AdamW = func(p, g, m, v []float32, lr, b1, b2, eps, wd, bc1, bc2 float32) {
		checkLen("AdamW", g, len(p))
		checkLen("AdamW", m, len(p))
		checkLen("AdamW", v, len(p))
		raw.AdamW(p, g, m, v, lr, b1, b2, eps, wd, bc1, bc2)
	}
	return s
}
