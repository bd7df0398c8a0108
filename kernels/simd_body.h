// simd_body.h is included once per instruction set by simd.c; K(name) gives each
// copy its suffix. The loops are written so that gcc vectorizes them at -O3
// (omp simd reductions, no calls inside loops): the target pragma in simd.c
// picks AVX-512 or AVX2 code for the same source.

// fexp: exp(x) for x in [-87.3, 88.3] (clamped outside) with about 2 ulp error. Written inline
// (range reduction by ln2, degree-6 polynomial, exponent built from bits) so
// loops that call it vectorize; libm's expf would stop vectorization.
static inline float K(fexp)(float x) {
	x = x < -87.3f ? -87.3f : x;
	x = x > 88.3f ? 88.3f : x;
	// Round to nearest by adding and removing 1.5*2^23: floorf is a libm
	// call under the default flags and would stop vectorization.
	float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	float r = x - n * 0.693359375f;
	r = r + n * 2.12194440e-4f;
	float p = 1.98756915e-4f;
	p = p * r + 1.39819994e-3f;
	p = p * r + 8.33345205e-3f;
	p = p * r + 4.16657659e-2f;
	p = p * r + 1.66666672e-1f;
	p = p * r + 5.00000000e-1f;
	p = p * r * r + r + 1.0f;
	int32_t e = ((int32_t)n + 127) << 23;
	float s;
	__builtin_memcpy(&s, &e, 4);
	return p * s;
}

void K(exp_inplace)(float *x, long n) {
	for (long i = 0; i < n; i++) x[i] = K(fexp)(x[i]);
}

static inline float K(maxv)(const float *x, long n) {
	float m = x[0];
#pragma omp simd reduction(max:m)
	for (long i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
	return m;
}

static inline float K(sumv)(const float *x, long n) {
	float s = 0;
#pragma omp simd reduction(+:s)
	for (long i = 0; i < n; i++) s += x[i];
	return s;
}

// causal_softmax: rows i0..i0+rows-1 of a score block s (row stride ld) whose
// row i attends to keys 0..i. Writes p = softmax(scale*s[i,0..i]) and zeros
// after it, stores log-sum-exp of the scaled row in lse[i-i0].
void K(causal_softmax)(float *s, long rows, long i0, long n, long ld, float scale, float *lse) {
	for (long r = 0; r < rows; r++) {
		float *x = s + r * ld;
		long m = i0 + r + 1;
		if (m > n) m = n;
		float mx = K(maxv)(x, m) * scale;
		float sum = 0;
#pragma omp simd reduction(+:sum)
		for (long j = 0; j < m; j++) {
			float e = K(fexp)(x[j] * scale - mx);
			x[j] = e;
			sum += e;
		}
		float inv = 1.0f / sum;
		for (long j = 0; j < m; j++) x[j] *= inv;
		for (long j = m; j < n; j++) x[j] = 0;
		lse[r] = mx + __builtin_logf(sum);
	}
}

// softmax_bwd: for each row, dp <- scale * p * (dp - sum_j p_j dp_j).
void K(softmax_bwd)(const float *p, float *dp, long rows, long n, long ld, float scale) {
	for (long r = 0; r < rows; r++) {
		const float *pr = p + r * ld;
		float *g = dp + r * ld;
		float d = 0;
#pragma omp simd reduction(+:d)
		for (long j = 0; j < n; j++) d += pr[j] * g[j];
		for (long j = 0; j < n; j++) g[j] = scale * pr[j] * (g[j] - d);
	}
}

// cross_entropy: for rows of logits x (rows, n) and targets t, writes the
// per-row loss (lse - x[t]) to loss, and dx = gscale*(softmax(x) - onehot(t)).
// A target < 0 (ignored) gives loss 0 and dx 0.
void K(cross_entropy)(const float *x, const int32_t *t, float *dx, float *loss, long rows, long n, float gscale) {
	for (long r = 0; r < rows; r++) {
		const float *xr = x + r * n;
		float *g = dx + r * n;
		if (t[r] < 0) {
			for (long j = 0; j < n; j++) g[j] = 0;
			loss[r] = 0;
			continue;
		}
		float mx = K(maxv)(xr, n);
		float sum = 0;
#pragma omp simd reduction(+:sum)
		for (long j = 0; j < n; j++) {
			float e = K(fexp)(xr[j] - mx);
			g[j] = e;
			sum += e;
		}
		float lse = mx + __builtin_logf(sum);
		float c = gscale / sum;
		for (long j = 0; j < n; j++) g[j] *= c;
		g[t[r]] -= gscale;
		loss[r] = lse - xr[t[r]];
	}
}

// rmsnorm_fwd: y = x * rstd * w per row, rstd = 1/sqrt(mean(x^2)+eps).
void K(rmsnorm_fwd)(float *y, float *rstd, const float *x, const float *w, long rows, long d, float eps) {
	for (long r = 0; r < rows; r++) {
		const float *xr = x + r * d;
		float *yr = y + r * d;
		float ss = 0;
#pragma omp simd reduction(+:ss)
		for (long j = 0; j < d; j++) ss += xr[j] * xr[j];
		float rs = 1.0f / __builtin_sqrtf(ss / (float)d + eps);
		rstd[r] = rs;
		for (long j = 0; j < d; j++) yr[j] = xr[j] * rs * w[j];
	}
}

// rmsnorm_bwd: dx += rstd*(w*dy - xhat*mean(w*dy*xhat)), dw += sum_rows dy*xhat
// with xhat = x*rstd.
void K(rmsnorm_bwd)(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd, long rows, long d) {
	for (long r = 0; r < rows; r++) {
		const float *xr = x + r * d, *gr = dy + r * d;
		float *dxr = dx + r * d;
		float rs = rstd[r];
		float dot = 0;
#pragma omp simd reduction(+:dot)
		for (long j = 0; j < d; j++) dot += gr[j] * w[j] * xr[j];
		float c = dot * rs * rs / (float)d;
		for (long j = 0; j < d; j++) {
			dxr[j] += rs * (gr[j] * w[j] - xr[j] * c);
			dw[j] += gr[j] * xr[j] * rs;
		}
	}
}

// swiglu_fwd: y = silu(g) * u, silu(g) = g*sigmoid(g).
void K(swiglu_fwd)(float *y, const float *g, const float *u, long n) {
	for (long i = 0; i < n; i++) {
		float s = 1.0f / (1.0f + K(fexp)(-g[i]));
		y[i] = g[i] * s * u[i];
	}
}

// swiglu_bwd: dg += dy*u*s*(1+g*(1-s)), du += dy*silu(g); with acc == 0
// they are written instead.
void K(swiglu_bwd)(float *dg, float *du, const float *dy, const float *g, const float *u, long n, int acc) {
	if (acc) {
		for (long i = 0; i < n; i++) {
			float s = 1.0f / (1.0f + K(fexp)(-g[i]));
			dg[i] += dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
			du[i] += dy[i] * g[i] * s;
		}
		return;
	}
	for (long i = 0; i < n; i++) {
		float s = 1.0f / (1.0f + K(fexp)(-g[i]));
		dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
		du[i] = dy[i] * g[i] * s;
	}
}

// silu_fwd / silu_bwd: y = x*sigmoid(x); dx += dy*s*(1+x*(1-s)).
void K(silu_fwd)(float *y, const float *x, long n) {
	for (long i = 0; i < n; i++) y[i] = x[i] / (1.0f + K(fexp)(-x[i]));
}
void K(silu_bwd)(float *dx, const float *dy, const float *x, long n) {
	for (long i = 0; i < n; i++) {
		float s = 1.0f / (1.0f + K(fexp)(-x[i]));
		dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
	}
}

// rope: rotate-half RoPE on rows of heads. x (rows, heads, hd) with row
// stride ldx (y: ldy), row r at position pos[r]; cos/sin tables (maxpos,
// hd/2). sign = +1 forward, -1 gives the transpose rotation used by
// backward. acc != 0 adds into y.
void K(rope)(float *y, const float *x, const int32_t *pos, const float *cs, const float *sn, long rows, long heads, long hd, long ldy, long ldx, float sign, int acc) {
	long h2 = hd / 2;
	for (long r = 0; r < rows; r++) {
		const float *c = cs + (long)pos[r] * h2, *s = sn + (long)pos[r] * h2;
		for (long h = 0; h < heads; h++) {
			const float *xr = x + r * ldx + h * hd;
			float *yr = y + r * ldy + h * hd;
			if (acc) {
				for (long j = 0; j < h2; j++) {
					float a = xr[j], b = xr[j + h2];
					yr[j] += a * c[j] - sign * b * s[j];
					yr[j + h2] += b * c[j] + sign * a * s[j];
				}
			} else {
				for (long j = 0; j < h2; j++) {
					float a = xr[j], b = xr[j + h2];
					yr[j] = a * c[j] - sign * b * s[j];
					yr[j + h2] = b * c[j] + sign * a * s[j];
				}
			}
		}
	}
}

// axpy: y += a*x. add: y = a + b. scale: y = a*x.
void K(axpy)(float *y, const float *x, float a, long n) {
	for (long i = 0; i < n; i++) y[i] += a * x[i];
}
void K(add)(float *y, const float *a, const float *b, long n) {
	for (long i = 0; i < n; i++) y[i] = a[i] + b[i];
}
void K(scale)(float *y, const float *x, float a, long n) {
	for (long i = 0; i < n; i++) y[i] = a * x[i];
}

// fsqrt: sqrt(x) for x >= 0 as x * rsqrt(x), the reciprocal root from the
// bit-level first guess and three Newton steps (relative error below 1e-7).
// sqrtf itself may set errno, which keeps gcc from vectorizing the loop,
// and cgo does not accept -fno-math-errno.
static inline float K(fsqrt)(float x) {
	int32_t i;
	__builtin_memcpy(&i, &x, 4);
	i = 0x5f375a86 - (i >> 1);
	float y;
	__builtin_memcpy(&y, &i, 4);
	float h = 0.5f * x;
	y = y * (1.5f - h * y * y);
	y = y * (1.5f - h * y * y);
	y = y * (1.5f - h * y * y);
	return x * y;
}

// adamw: one AdamW step (PyTorch's formulation, decoupled decay) over a
// flat slice: p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps).
void K(adamw)(float *p, const float *g, float *m, float *v, long n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
	float step = lr / bc1, decay = 1.0f - lr * wd, isb2 = 1.0f / __builtin_sqrtf(bc2);
	for (long i = 0; i < n; i++) {
		float gi = g[i];
		float mi = b1 * m[i] + (1.0f - b1) * gi;
		float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] = p[i] * decay - step * mi / (K(fsqrt)(vi) * isb2 + eps);
	}
}

// sumsq: sum of squares, accumulated in double so that norms of millions
// of values do not lose precision.
double K(sumsq)(const float *x, long n) {
	double s = 0;
#pragma omp simd reduction(+:s)
	for (long i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
	return s;
}

// rne32: round half to even for |v| < 2^22 (fake-quant arguments are
// small): adding and removing 1.5*2^23 leaves the integer the FPU's
// round-to-nearest-even chose. Callers must not feed it a product in the
// same expression: gcc would fuse x*inv + 2^23 into one FMA and decide
// ties on the unrounded product (unlike PyTorch and the Go path).
static inline float K(rne32)(float v) {
	return (v + 12582912.0f) - 12582912.0f;
}

// absmax_groups / minmax_groups: per group of g, max |x| / min and max.
void K(absmax_groups)(float *out, const float *x, long n, long g) {
	for (long k = 0; k < n / g; k++) {
		const float *p = x + k * g;
		float m = 0;
#pragma omp simd reduction(max:m)
		for (long i = 0; i < g; i++) {
			float a = p[i] < 0 ? -p[i] : p[i];
			m = a > m ? a : m;
		}
		out[k] = m;
	}
}
void K(minmax_groups)(float *lo, float *hi, const float *x, long n, long g) {
	for (long k = 0; k < n / g; k++) {
		const float *p = x + k * g;
		float a = p[0], b = p[0];
#pragma omp simd reduction(min:a) reduction(max:b)
		for (long i = 0; i < g; i++) {
			a = p[i] < a ? p[i] : a;
			b = p[i] > b ? p[i] : b;
		}
		lo[k] = a;
		hi[k] = b;
	}
}

// fq_affine: y = (clamp(rne(x*(1/s))+z, qmin, qmax) - z)*s per group of g;
// mask = 1 where rne(x/s)+z was inside [qmin, qmax].
void K(fq_affine)(float *y, uint8_t *mask, const float *x, const float *scale, const float *zero, long n, long g, float qmin, float qmax) {
	for (long k = 0; k < n / g; k++) {
		float s = scale[k], z = zero[k], inv = 1.0f / s;
		// restrict: the byte mask could otherwise alias the floats, and gcc
		// would not vectorize the loop.
		const float *restrict p = x + k * g;
		float *restrict o = y + k * g;
		uint8_t *restrict mk = mask + k * g;
		// Two passes: the product goes through memory, so it is rounded to
		// float before rne32 sees it (no FMA contraction).
		for (long i = 0; i < g; i++) o[i] = p[i] * inv;
		for (long i = 0; i < g; i++) {
			float q = K(rne32)(o[i]) + z;
			mk[i] = (q >= qmin) & (q <= qmax);
			q = q < qmin ? qmin : q;
			q = q > qmax ? qmax : q;
			o[i] = (q - z) * s;
		}
	}
}

// mask_grad: dx += dy where mask is set.
void K(mask_grad)(float *restrict dx, const float *restrict dy, const uint8_t *restrict mask, long n) {
	for (long i = 0; i < n; i++) dx[i] += mask[i] ? dy[i] : 0.0f;
}

// fq_lsq: LSQ's forward with step s per group: v = x/s (a division, as the
// Go path computes it), y = rne(clamp(v, -qn, qp))*s, mask = -qn <= v <= qp.
void K(fq_lsq)(float *y, uint8_t *mask, const float *x, const float *scale, long n, long g, float qn, float qp) {
	for (long k = 0; k < n / g; k++) {
		float s = scale[k];
		const float *restrict p = x + k * g;
		float *restrict o = y + k * g;
		uint8_t *restrict mk = mask + k * g;
		for (long i = 0; i < g; i++) o[i] = p[i] / s;
		for (long i = 0; i < g; i++) {
			float v = o[i];
			mk[i] = (v >= -qn) & (v <= qp);
			v = v < -qn ? -qn : v;
			v = v > qp ? qp : v;
			o[i] = K(rne32)(v) * s;
		}
	}
}

// lsq_grad: dx += dy inside the range (dx may be NULL); per group
// ds += gscale * sum(dy*e), e = rne(v)-v inside, -qn below, qp above.
void K(lsq_grad)(float *dx, float *ds, const float *dy, const float *x, const float *scale, float *tmp, long n, long g, float qn, float qp, float gscale) {
	for (long k = 0; k < n / g; k++) {
		float s = scale[k];
		const float *restrict p = x + k * g;
		const float *restrict gy = dy + k * g;
		float *restrict v = tmp;
		for (long i = 0; i < g; i++) v[i] = p[i] / s;
		double acc = 0;
#pragma omp simd reduction(+:acc)
		for (long i = 0; i < g; i++) {
			float vi = v[i];
			float r = K(rne32)(vi);
			float e = vi < -qn ? -qn : (vi > qp ? qp : r - vi);
			acc += (double)(gy[i] * e);
		}
		ds[k] += gscale * (float)acc;
		if (dx) {
			float *restrict d = dx + k * g;
			for (long i = 0; i < g; i++) d[i] += (v[i] >= -qn && v[i] <= qp) ? gy[i] : 0.0f;
		}
	}
}

// code8: the byte of the dynamic map's value nearest to y (Map8.Levels in
// adam8.go), without table lookups (gathers are slow): the level of |y|
// from 8 thresholds, the nearest midpoint inside the level from its
// uniform spacing, then zero+J or the mirrored negative. lv must be a
// local copy (gcc does not vectorize the loop when it reads the
// thresholds through a pointer argument).
static inline int K(code8)(float y, const float *lv, int zero) {
	float a = y < 0 ? -y : y;
	a = a > 1.0f ? 1.0f : a;
	float is = 0, k = 1, o = 0;
	for (int i = 0; i < 8; i++) {
		int ge = a >= lv[i];
		is = ge ? lv[8 + i] : is;
		k = ge ? lv[16 + i] : k;
		o = ge ? lv[24 + i] : o;
	}
	float t = (a * is - 0.1f) * k * 1.11111111f;
	t = t < 0 ? 0 : t;
	t = t > k - 1 ? k - 1 : t;
	int J = (int)o + (int)t;
	int neg = zero - J;
	neg = neg < 0 ? 0 : neg;
	return y < 0 ? neg : zero + J;
}

// adamw8: AdamW (the adamw kernel's arithmetic) with both moments stored
// as 8-bit codes of a map and a float32 absmax per block: per block,
// dequantize, update m, v and p, requantize with the new absmax (0 -> 1).
void K(adamw8)(float *p, const float *g, uint8_t *m, uint8_t *v, float *mabs, float *vabs, long n, long block, const float *mvals, const float *mlevels, long mzero, const float *vvals, const float *vlevels, long vzero, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
	float step = lr / bc1, decay = 1.0f - lr * wd, isb2 = 1.0f / __builtin_sqrtf(bc2);
	float mb[4096], vb[4096];
	int32_t cm[4096], cv[4096];
	float lvm[32], lvv[32];
	for (int i = 0; i < 32; i++) {
		lvm[i] = mlevels[i];
		lvv[i] = vlevels[i];
	}
	for (long k = 0; k * block < n; k++) {
		long lo = k * block, len = n - lo < block ? n - lo : block;
		float am = mabs[k], av = vabs[k], nm = 0, nv = 0;
		float *pp = p + lo;
		const float *gg = g + lo;
		uint8_t *mm = m + lo, *vv = v + lo;
#pragma omp simd reduction(max:nm, nv)
		for (long i = 0; i < len; i++) {
			float gi = gg[i];
			float mi = b1 * (mvals[mm[i]] * am) + (1.0f - b1) * gi;
			float vi = b2 * (vvals[vv[i]] * av) + (1.0f - b2) * gi * gi;
			mb[i] = mi;
			vb[i] = vi;
			float ami = mi < 0 ? -mi : mi;
			nm = ami > nm ? ami : nm;
			nv = vi > nv ? vi : nv;
			pp[i] = pp[i] * decay - step * mi / (K(fsqrt)(vi) * isb2 + eps);
		}
		nm = nm == 0 ? 1.0f : nm;
		nv = nv == 0 ? 1.0f : nv;
		mabs[k] = nm;
		vabs[k] = nv;
		float im = 1.0f / nm, iv = 1.0f / nv;
		// codes as int32 first (one element width: gcc vectorizes the
		// lookups), narrowed to bytes in a second loop
#pragma omp simd
		for (long i = 0; i < len; i++) {
			cm[i] = K(code8)(mb[i] * im, lvm, (int)mzero);
			cv[i] = K(code8)(vb[i] * iv, lvv, (int)vzero);
		}
		for (long i = 0; i < len; i++) {
			mm[i] = (uint8_t)cm[i];
			vv[i] = (uint8_t)cv[i];
		}
	}
}

// flog2: log2|x| for a normal x (log2f32 in adamfp8.go: exponent from the
// bits, mantissa folded into [sqrt(1/2), sqrt(2)), atanh series); finite
// garbage for 0.
static inline float K(flog2)(float x) {
	// The fold is done on the bits (a float that is conditionally changed
	// after a reinterpretation keeps gcc from vectorizing).
	uint32_t b;
	__builtin_memcpy(&b, &x, 4);
	b &= 0x7FFFFFFFu; // |x|: callers mask zeros out afterwards
	int32_t mant = (int32_t)(b & 0x7FFFFFu);
	int32_t big = mant > 0x3504F3; // mantissa above sqrt(2)
	float e = (float)((int32_t)(b >> 23) - 127 + big);
	uint32_t mb = (uint32_t)mant | (0x3F800000u - ((uint32_t)big << 23)); // arithmetic, not a select: see code8
	float m;
	__builtin_memcpy(&m, &mb, 4);
	float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
	float p = 0.11111111f;
	p = p * s2 + 0.14285714f;
	p = p * s2 + 0.2f;
	p = p * s2 + 0.33333333f;
	p = p * s2 + 1.0f;
	return e + 2.8853900817779268f * s * p;
}

static inline float K(fexp2)(float x) { return K(fexp)(x * 0.69314718f); }

// e4m3: the E4M3 byte nearest to v (EncodeE4M3 in adamfp8.go).
static inline int K(e4m3)(float v) {
	// No conditionally assigned variable is reinterpreted (gcc then does
	// not vectorize): the clamp is done on the bits after the copy.
	int32_t b;
	__builtin_memcpy(&b, &v, 4);
	int32_t ab = b & 0x7FFFFFFF;
	ab = ab > 0x43E00000 ? 0x43E00000 : ab; // saturate at 448
	float a = v < 0 ? -v : v;
	float rs = (a * 512.0f + 12582912.0f) - 12582912.0f; // a*512 is exact: fusing cannot change it
	int32_t r = ab + 0x7FFFF + ((ab >> 20) & 1);
	int code = (r >> 20) - (120 << 3);
	code = ab < 0x3C800000 ? (int)rs : code; // below 2^-6: subnormal grid
	return b < 0 ? (code | 0x80) : code;
}

static inline float K(bf16f)(uint16_t h) {
	uint32_t b = (uint32_t)h << 16;
	float f;
	__builtin_memcpy(&f, &b, 4);
	return f;
}

// dre: a group's expansion from its stored bfloat16 range (DREParams in
// adamfp8.go, with the same mantissa-log table l2m and the same double
// arithmetic, so k is identical on every path).
static inline void K(dre)(uint16_t hi, uint16_t lo, const double *l2m, float *k, float *invk, float *c, float *s, int *zero) {
	if (hi == 0) {
		*k = 1; *invk = 1; *c = 1; *s = 1; *zero = 1;
		return;
	}
	*zero = 0;
	lo = lo < 0x0D80 ? 0x0D80 : lo;
	lo = lo > hi ? hi : lo;
	double l2r = (double)((int)(hi >> 7) - (int)(lo >> 7)) + l2m[hi & 127] - l2m[lo & 127];
	double kk = 256.0;
	if (l2r > 0) {
		kk = __builtin_floor(16.614709844115208 / l2r * 16) / 16;
		kk = kk < 1.0 / 16 ? 1.0 / 16 : kk;
		kk = kk > 256 ? 256 : kk;
	}
	*k = (float)kk;
	*invk = (float)(1 / kk);
	*c = (float)__builtin_sqrt((double)K(bf16f)(hi) * (double)K(bf16f)(lo));
	*s = K(fexp2)((float)(kk * l2r / 2)) / 448.0f;
}

static inline uint16_t K(bf16up)(float x) {
	uint32_t b;
	__builtin_memcpy(&b, &x, 4);
	b += (b & 0xFFFFu) ? 0x10000u : 0;
	return (uint16_t)(b >> 16);
}

static inline uint16_t K(bf16down)(float x) {
	uint32_t b;
	__builtin_memcpy(&b, &x, 4);
	return (uint16_t)(b >> 16);
}

// adamwfp8: AdamW (the adamw kernel's arithmetic) with both moments stored
// as E4M3 bytes under COAT's dynamic range expansion per group (AdamWFP8
// in adamfp8.go): shrink, update m, v and p, store the new ranges, expand.
void K(adamwfp8)(float *p, const float *g, uint8_t *m, uint8_t *v, uint16_t *mr, uint16_t *vr, long n, long group, const float *e4m3, const double *l2m, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
	float step = lr / bc1, decay = 1.0f - lr * wd, isb2 = 1.0f / __builtin_sqrtf(bc2);
	float mb[4096], vb[4096];
	int32_t qm[4096], qv[4096];
	for (long k = 0; k * group < n; k++) {
		long lo = k * group, len = n - lo < group ? n - lo : group;
		float km, ikm, cm, sm, kv, ikv, cv, sv;
		int zm, zv;
		K(dre)(mr[2 * k], mr[2 * k + 1], l2m, &km, &ikm, &cm, &sm, &zm);
		K(dre)(vr[2 * k], vr[2 * k + 1], l2m, &kv, &ikv, &cv, &sv, &zv);
		const float dikm = ikm, dcm = cm, dsm = sm, dikv = ikv, dcv = cv, dsv = sv;
		const int dnzm = !zm, dnzv = !zv;
		float *pp = p + lo;
		const float *gg = g + lo;
		uint8_t *mm = m + lo, *vv = v + lo;
		float mxm = 0, mnm = 3.4e38f, mxv = 0, mnv = 3.4e38f;
#pragma omp simd reduction(max:mxm, mxv) reduction(min:mnm, mnv)
		for (long i = 0; i < len; i++) {
			float ym = e4m3[mm[i]] * dsm, yv = e4m3[vv[i]] * dsv;
			float om = K(fexp2)(K(flog2)(ym) * dikm) * dcm;
			om *= (float)((ym != 0) & dnzm); // finite garbage for 0: the product is 0
			om = ym < 0 ? -om : om;
			float ov = K(fexp2)(K(flog2)(yv) * dikv) * dcv;
			ov *= (float)((yv > 0) & dnzv);
			float gi = gg[i];
			float mi = b1 * om + (1.0f - b1) * gi;
			float vi = b2 * ov + (1.0f - b2) * gi * gi;
			mb[i] = mi;
			vb[i] = vi;
			pp[i] = pp[i] * decay - step * mi / (K(fsqrt)(vi) * isb2 + eps);
			float ami = mi < 0 ? -mi : mi;
			mxm = ami > mxm ? ami : mxm;
			float tm = ami > 0 ? ami : 3.4e38f;
			mnm = tm < mnm ? tm : mnm;
			mxv = vi > mxv ? vi : mxv;
			float tv = vi > 0 ? vi : 3.4e38f;
			mnv = tv < mnv ? tv : mnv;
		}
		uint16_t mh = mxm > 0 ? K(bf16up)(mxm) : 0, ml = mxm > 0 ? K(bf16down)(mnm) : 0;
		uint16_t vh = mxv > 0 ? K(bf16up)(mxv) : 0, vl = mxv > 0 ? K(bf16down)(mnv) : 0;
		mr[2 * k] = mh; mr[2 * k + 1] = ml;
		vr[2 * k] = vh; vr[2 * k + 1] = vl;
		K(dre)(mh, ml, l2m, &km, &ikm, &cm, &sm, &zm);
		K(dre)(vh, vl, l2m, &kv, &ikv, &cv, &sv, &zv);
		// plain locals: the ones K(dre) wrote through pointers would be
		// memory references inside the loop, which gcc does not vectorize
		const float icm = 1.0f / cm, icv = 1.0f / cv, ism = 1.0f / sm, isv = 1.0f / sv, ekm = km, ekv = kv;
		const int nzm = !zm, nzv = !zv;
#pragma omp simd
		for (long i = 0; i < len; i++) {
			float x = mb[i];
			float u = K(fexp2)(ekm * K(flog2)(x * icm)) * ism;
			int q = K(e4m3)(u) | (x < 0 ? 0x80 : 0);
			float y = vb[i];
			float w = K(fexp2)(ekv * K(flog2)(y * icv)) * isv;
			int r = K(e4m3)(w);
			// masks by and, not a select: gcc vectorizes this form
			qm[i] = q & -((x != 0) & nzm);
			qv[i] = r & -((y > 0) & nzv);
		}
		for (long i = 0; i < len; i++) {
			mm[i] = (uint8_t)qm[i];
			vv[i] = (uint8_t)qv[i];
		}
	}
}

// q4_0_scales: per block of 32, d = m/-8, m the first value of largest
// magnitude (llama.cpp's quantize_row_q4_0_ref; FakeQuantQ4_0).
void K(q4_0_scales)(float *d, const float *x, long n) {
	for (long b = 0; b < n / 32; b++) {
		const float *v = x + 32 * b;
		float amax = 0;
#pragma omp simd reduction(max:amax)
		for (int j = 0; j < 32; j++) {
			float a = v[j] < 0 ? -v[j] : v[j];
			amax = a > amax ? a : amax;
		}
		int first = 32;
#pragma omp simd reduction(min:first)
		for (int j = 0; j < 32; j++) {
			float a = v[j] < 0 ? -v[j] : v[j];
			int c = a == amax ? j : 32;
			first = c < first ? c : first;
		}
		d[b] = first < 32 ? v[first] / -8.0f : 0.0f;
	}
}

// fq_q4_0: y = (min(15, trunc(x*(1/d) + 8.5)) - 8) * dh per block (dh: d
// rounded to fp16, from the caller); mask is 0 where 15 clipped. The
// product is stored before 8.5 is added: fused, the sum could round
// differently from the reference.
void K(fq_q4_0)(float *y, uint8_t *mask, const float *x, const float *d, const float *dh, long n) {
	for (long b = 0; b < n / 32; b++) {
		float id = d[b] != 0 ? 1.0f / d[b] : 0.0f, h = dh[b];
		const float *restrict v = x + 32 * b;
		float *restrict o = y + 32 * b;
		uint8_t *restrict mk = mask + 32 * b;
		for (int j = 0; j < 32; j++) o[j] = v[j] * id;
		for (int j = 0; j < 32; j++) {
			float t = o[j] + 8.5f;
			int q = (int)t;
			mk[j] = q <= 15;
			q = q > 15 ? 15 : q;
			o[j] = (float)(q - 8) * h;
		}
	}
}
