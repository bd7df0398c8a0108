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

// Keeping a product out of an FMA: gcc contracts a*b+c written with
// operators or intrinsics alike (-ffp-contract=fast is its default in
// GNU C), while the Go references round every product (adamMoments in
// adam8.go). An empty asm that claims to change the product makes it
// opaque: it is rounded to float, then added.
#define K_NOFMA_S(x) __asm__("" : "+x"(x))
#define K_NOFMA_V(x) __asm__("" : "+v"(x))

// adam_mv / adam_p: adamMoments and adamParam of adam8.go, one value.
static inline void K(adam_mv)(float mo, float vo, float g, float b1, float b2, float *mi, float *vi) {
	float t1 = b1 * mo, t2 = (1.0f - b1) * g, u1 = b2 * vo, u2 = (1.0f - b2) * g;
	u2 = u2 * g;
	K_NOFMA_S(t1); K_NOFMA_S(t2); K_NOFMA_S(u1); K_NOFMA_S(u2);
	*mi = t1 + t2;
	*vi = u1 + u2;
}
static inline float K(adam_p)(float p, float mi, float vi, float decay, float step, float isb2, float eps) {
	float a = p * decay, s = __builtin_sqrtf(vi) * isb2, num = step * mi;
	K_NOFMA_S(a); K_NOFMA_S(s); K_NOFMA_S(num);
	return a - num / (s + eps);
}

// adam_consts: step, decay and isb2 as adam8.go derives them.
static inline void K(adam_consts)(float lr, float wd, float bc1, float bc2, float *step, float *decay, float *isb2) {
	float t = lr * wd;
	K_NOFMA_S(t);
	*step = lr / bc1;
	*decay = 1.0f - t;
	*isb2 = (float)(1.0 / __builtin_sqrt((double)bc2));
}

// code8_1: Map8.Code through the fine table (adam8.go): the magnitude
// index at |y|'s bucket, one more if |y| is above the bucket's bound.
static inline int K(code8_1)(float y, const uint32_t *fine, int zero) {
	float a = __builtin_fabsf(y); // -0 too: its sign bit would index past the table
	a = a < 1.0f ? a : 1.0f; // NaN: 1, as vminps gives
	uint32_t b;
	__builtin_memcpy(&b, &a, 4);
	uint32_t e = fine[b >> 16];
	int j = (int)(e & 0xFF) + ((b & 0xFFFF) > (e >> 8));
	int neg = zero - j;
	return y < 0 ? (neg < 0 ? 0 : neg) : zero + j;
}

#ifdef __AVX512F__
// lanes: the mask of the first min(n, 16) lanes.
static inline __mmask16 K(lanes)(long n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

// code8v: code8_1 on 16 lanes: one gather from the fine table.
static inline __m512i K(code8v)(__m512 y, const uint32_t *fine, __m512i zero) {
	__m512 a = _mm512_min_ps(_mm512_abs_ps(y), _mm512_set1_ps(1.0f));
	__m512i b = _mm512_castps_si512(a);
	__m512i e = _mm512_i32gather_epi32(_mm512_srli_epi32(b, 16), (const void *)fine, 4);
	__m512i j = _mm512_and_si512(e, _mm512_set1_epi32(0xFF));
	__mmask16 up = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0xFFFF)), _mm512_srli_epi32(e, 8));
	j = _mm512_mask_add_epi32(j, up, j, _mm512_set1_epi32(1));
	__mmask16 neg = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ);
	__m512i ng = _mm512_max_epi32(_mm512_sub_epi32(zero, j), _mm512_setzero_si512());
	return _mm512_mask_blend_epi32(neg, _mm512_add_epi32(zero, j), ng);
}

// lut256: t[c] for 16 codes c < 256 from a 256-float table by permutes:
// eight two-register permutes, each over 32 entries (c's low 5 bits),
// then blends by bits 5, 6 and 7. A 16-lane gather costs about 20 cycles
// on this machine's cores (AMD Zen 5, issue 27), these 18 instructions
// about half that; the requantization keeps its gather (code8v), whose
// table (64 KB) no register set can hold.
static inline __m512 K(lut256)(__m512i c, const float *t) {
	__m512 r[8];
	for (int q = 0; q < 8; q++) r[q] = _mm512_permutex2var_ps(_mm512_loadu_ps(t + 32 * q), c, _mm512_loadu_ps(t + 32 * q + 16));
	__mmask16 k5 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(32)), k6 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(64));
	__mmask16 k7 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(128));
	for (int q = 0; q < 4; q++) r[q] = _mm512_mask_blend_ps(k5, r[2 * q], r[2 * q + 1]);
	r[0] = _mm512_mask_blend_ps(k6, r[0], r[1]);
	r[1] = _mm512_mask_blend_ps(k6, r[2], r[3]);
	return _mm512_mask_blend_ps(k7, r[0], r[1]);
}
#endif

// adamw8: AdamW8 of adam8.go, bit for bit: per block, dequantize both
// moments (Values[code] * absmax), update m, v and p, requantize with the
// new absmax (0 -> 1) through the maps' fine tables. With AVX-512 each
// pass is 16 lanes wide (permutes for the map values, gathers for the
// fine tables, masked tails); the AVX2 build runs the same arithmetic one
// value at a time.
void K(adamw8)(float *p, const float *g, uint8_t *m, uint8_t *v, float *mabs, float *vabs, long n, long block, const float *mvals, const uint32_t *mfine, long mzero, const float *vvals, const uint32_t *vfine, long vzero, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
	float step, decay, isb2;
	K(adam_consts)(lr, wd, bc1, bc2, &step, &decay, &isb2);
	float mb[4096] __attribute__((aligned(64))), vb[4096] __attribute__((aligned(64)));
	for (long k = 0; k * block < n; k++) {
		long lo = k * block, len = n - lo < block ? n - lo : block;
		float am = mabs[k], av = vabs[k], nm = 0, nv = 0;
		float *pp = p + lo;
		const float *gg = g + lo;
		uint8_t *mm = m + lo, *vv = v + lo;
#ifdef __AVX512F__
		const __m512 vam = _mm512_set1_ps(am), vav = _mm512_set1_ps(av), vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2);
		const __m512 vc1 = _mm512_set1_ps(1.0f - b1), vc2 = _mm512_set1_ps(1.0f - b2), vdec = _mm512_set1_ps(decay);
		const __m512 vstep = _mm512_set1_ps(step), visb2 = _mm512_set1_ps(isb2), veps = _mm512_set1_ps(eps);
		__m512 xm = _mm512_setzero_ps(), xv = _mm512_setzero_ps();
		for (long i = 0; i < len; i += 16) {
			__mmask16 kl = K(lanes)(len - i);
			__m512i cm = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(kl, mm + i));
			__m512i cv = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(kl, vv + i));
			__m512 dm = _mm512_mul_ps(K(lut256)(cm, mvals), vam);
			__m512 dv = _mm512_mul_ps(K(lut256)(cv, vvals), vav);
			__m512 gi = _mm512_maskz_loadu_ps(kl, gg + i);
			__m512 t1 = _mm512_mul_ps(vb1, dm), t2 = _mm512_mul_ps(vc1, gi);
			__m512 u1 = _mm512_mul_ps(vb2, dv), u2 = _mm512_mul_ps(_mm512_mul_ps(vc2, gi), gi);
			K_NOFMA_V(t1); K_NOFMA_V(t2); K_NOFMA_V(u1); K_NOFMA_V(u2);
			__m512 mi = _mm512_add_ps(t1, t2), vi = _mm512_add_ps(u1, u2);
			_mm512_store_ps(mb + i, mi);
			_mm512_store_ps(vb + i, vi);
			xm = _mm512_mask_max_ps(xm, kl, xm, _mm512_abs_ps(mi));
			xv = _mm512_mask_max_ps(xv, kl, xv, vi);
			__m512 a = _mm512_mul_ps(_mm512_maskz_loadu_ps(kl, pp + i), vdec);
			__m512 s = _mm512_mul_ps(_mm512_sqrt_ps(vi), visb2), num = _mm512_mul_ps(vstep, mi);
			K_NOFMA_V(a); K_NOFMA_V(s); K_NOFMA_V(num);
			_mm512_mask_storeu_ps(pp + i, kl, _mm512_sub_ps(a, _mm512_div_ps(num, _mm512_add_ps(s, veps))));
		}
		nm = _mm512_reduce_max_ps(xm);
		nv = _mm512_reduce_max_ps(xv);
#else
		for (long i = 0; i < len; i++) {
			float mi, vi;
			K(adam_mv)(mvals[mm[i]] * am, vvals[vv[i]] * av, gg[i], b1, b2, &mi, &vi);
			mb[i] = mi;
			vb[i] = vi;
			float ami = mi < 0 ? -mi : mi;
			nm = ami > nm ? ami : nm;
			nv = vi > nv ? vi : nv;
			pp[i] = K(adam_p)(pp[i], mi, vi, decay, step, isb2, eps);
		}
#endif
		nm = nm == 0 ? 1.0f : nm;
		nv = nv == 0 ? 1.0f : nv;
		mabs[k] = nm;
		vabs[k] = nv;
		float im = 1.0f / nm, iv = 1.0f / nv;
#ifdef __AVX512F__
		const __m512 vim = _mm512_set1_ps(im), viv = _mm512_set1_ps(iv);
		const __m512i zm = _mm512_set1_epi32((int)mzero), zv = _mm512_set1_epi32((int)vzero);
		for (long i = 0; i < len; i += 16) {
			__mmask16 kl = K(lanes)(len - i);
			__m512i qm = K(code8v)(_mm512_mul_ps(_mm512_load_ps(mb + i), vim), mfine, zm);
			__m512i qv = K(code8v)(_mm512_mul_ps(_mm512_load_ps(vb + i), viv), vfine, zv);
			_mm_mask_storeu_epi8(mm + i, kl, _mm512_cvtepi32_epi8(qm));
			_mm_mask_storeu_epi8(vv + i, kl, _mm512_cvtepi32_epi8(qv));
		}
#else
		for (long i = 0; i < len; i++) {
			mm[i] = (uint8_t)K(code8_1)(mb[i] * im, mfine, (int)mzero);
			vv[i] = (uint8_t)K(code8_1)(vb[i] * iv, vfine, (int)vzero);
		}
#endif
	}
}

// FP8 states (adamfp8.go): the polynomials of exp2p and log2p, the same
// float32 coefficients, evaluated with FMAs in the same order (the Go
// reference rounds each FMA once, as the instruction does).
#define K_E2N 6
#define K_L2N 7
static const float K(e2c)[K_E2N] = {0.0013266970636323094f, 0.009675459936261177f, 0.05550742521882057f, 0.24022121727466583f,
	0.6931469440460205f, 1.0f};
static const float K(l2c)[K_L2N] = {0.11685951054096222f, -0.24032768607139587f, 0.29815673828125f, -0.3617551624774933f,
	0.4806441068649292f, -0.7213243246078491f, 1.442696213722229f};
#define K_LOG2_448 8.807354922057604f

static inline float K(bf16f)(uint16_t h) {
	uint32_t b = (uint32_t)h << 16;
	float f;
	__builtin_memcpy(&f, &b, 4);
	return f;
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

// dre: DREParams of adamfp8.go, with the same mantissa-log table l2m and
// the same double arithmetic, so k is identical on every path.
typedef struct {
	float k, invk, hi, ihi, l2hi;
	int zero;
	float te[16], tm[16];
} K(dre_t);

// dre: DREParams (without the tables, which dre_tables adds).
static inline K(dre_t) K(dre)(uint16_t hi, uint16_t lo, const double *l2m) {
	K(dre_t) d = {1, 1, 0, 1, 0, 1};
	if (hi < 0x0D80) return d;
	lo = lo < 0x0D80 ? 0x0D80 : lo;
	lo = lo > hi ? hi : lo;
	double l2r = (double)((int)(hi >> 7) - (int)(lo >> 7)) + l2m[hi & 127] - l2m[lo & 127];
	double kk = 256.0;
	if (l2r > 0) {
		kk = __builtin_floor(16.614709844115208 / l2r * 16) / 16;
		kk = kk < 1.0 / 16 ? 1.0 / 16 : kk;
		kk = kk > 256 ? 256 : kk;
	}
	d.k = (float)kk;
	d.invk = (float)(1 / kk);
	d.hi = K(bf16f)(hi);
	d.ihi = 1.0f / d.hi;
	d.l2hi = (float)((double)((int)(hi >> 7) - 127) + l2m[hi & 127]);
	d.zero = 0;
	return d;
}

// range_store: RangeDRE's bfloat16 pair from a group's max |x| and min
// nonzero |x| (0, 0 when the max is 0 or below 2^-100).
static inline void K(range_store)(uint16_t *r, float mx, float mn) {
	uint16_t h = mx > 0 ? K(bf16up)(mx) : 0;
	if (h < 0x0D80) {
		r[0] = 0;
		r[1] = 0;
		return;
	}
	r[0] = h;
	r[1] = K(bf16down)(mn);
}

// Scalar forms (the AVX2 build): exp2p, log2p, EncodeE4M3 of a
// non-negative value, Expand and Shrink.
static inline float K(exp2s)(float w) {
	w = w > -126.0f ? w : -126.0f;
	w = w < 127.0f ? w : 127.0f;
	float n = (w + 12582912.0f) - 12582912.0f; // round half even, |w| < 2^22
	float f = w - n, p = K(e2c)[0];
	for (int i = 1; i < K_E2N; i++) p = __builtin_fmaf(p, f, K(e2c)[i]);
	int32_t e = ((int32_t)n + 127) << 23;
	float s;
	__builtin_memcpy(&s, &e, 4);
	return p * s;
}

static inline float K(log2s)(float x) {
	uint32_t b;
	__builtin_memcpy(&b, &x, 4);
	uint32_t big = (b >> 22) & 1;
	float e = (float)((int32_t)(b >> 23) - 127 + (int32_t)big);
	uint32_t mb = (b & 0x7FFFFFu) | (0x3F800000u - (big << 23));
	float m;
	__builtin_memcpy(&m, &mb, 4);
	float t = m - 1.0f, p = K(l2c)[0];
	for (int i = 1; i < K_L2N; i++) p = __builtin_fmaf(p, t, K(l2c)[i]);
	return __builtin_fmaf(t, p, e);
}

static inline int K(e4m3s)(float u) {
	int32_t ab;
	__builtin_memcpy(&ab, &u, 4);
	ab = ab > 0x43E00000 ? 0x43E00000 : ab; // saturate at 448
	if (ab < 0x3C800000) { // below 2^-6: the subnormal grid of 2^-9
		float a;
		__builtin_memcpy(&a, &ab, 4);
		return (int)((a * 512.0f + 12582912.0f) - 12582912.0f); // a*512 is exact: fusing cannot change it
	}
	int32_t r = ab + 0x7FFFF + ((ab >> 20) & 1);
	return (r >> 20) - (120 << 3);
}

static inline int K(expand1)(float x, K(dre_t) d) {
	if (x == 0 || d.zero) return 0;
	float y = (x < 0 ? -x : x) * d.ihi;
	y = y > 0x1p-126f ? y : 0x1p-126f;
	int c = K(e4m3s)(K(exp2s)(__builtin_fmaf(d.k, K(log2s)(y), K_LOG2_448)));
	return x < 0 ? c | 0x80 : c;
}

static inline float K(shrink1)(uint8_t q, const K(dre_t) *d) {
	if ((q & 0x7F) == 0 || d->zero) return 0;
	int j = (q & 7) + ((q & 0x78) == 0 ? 8 : 0);
	float x = d->te[(q >> 3) & 15] * d->tm[j];
	return (q & 0x80) ? -x : x;
}

#ifdef __AVX512F__
static inline __m512 K(exp2v)(__m512 w) {
	w = _mm512_min_ps(_mm512_max_ps(w, _mm512_set1_ps(-126.0f)), _mm512_set1_ps(127.0f));
	__m512 n = _mm512_roundscale_ps(w, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 f = _mm512_sub_ps(w, n), p = _mm512_set1_ps(K(e2c)[0]);
	for (int i = 1; i < K_E2N; i++) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(K(e2c)[i]));
	return _mm512_scalef_ps(p, n); // p * 2^n, one rounding, as the Go multiply
}

// log2v: log2p of 16 positive normal values. getmant's [3/4, 3/2)
// interval halves a mantissa of 1.5 or more, exactly the fold of log2p's
// bits, and getexp gives the exponent, 1 added where it halved.
static inline __m512 K(log2v)(__m512 x) {
	__m512 e = _mm512_getexp_ps(x);
	__m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_zero);
	e = _mm512_mask_add_ps(e, _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.0f), _CMP_LT_OQ), e, _mm512_set1_ps(1.0f));
	__m512 t = _mm512_sub_ps(m, _mm512_set1_ps(1.0f)), p = _mm512_set1_ps(K(l2c)[0]);
	for (int i = 1; i < K_L2N; i++) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(K(l2c)[i]));
	return _mm512_fmadd_ps(t, p, e);
}

// exp2u: exp2v without exp2p's clamps, for arguments below 127: below
// -126 it underflows towards 0 where exp2p stops at 2^-126, and both
// encode to the E4M3 zero (below 2^-10), so the codes are the same.
static inline __m512 K(exp2u)(__m512 w) {
	__m512 n = _mm512_roundscale_ps(w, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 f = _mm512_sub_ps(w, n), p = _mm512_set1_ps(K(e2c)[0]);
	for (int i = 1; i < K_E2N; i++) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(K(e2c)[i]));
	return _mm512_scalef_ps(p, n);
}

// e4m3v: EncodeE4M3 of 16 non-negative values below 464 (the midpoint
// above 448), where its saturation changes nothing: Expand's values are
// at most 448 (1 + 1e-4). Normals round by adding the bias to the bits
// (the exponent's offset folded into the constant); below 2^-6 the
// subnormal grid of 2^-9.
static inline __m512i K(e4m3v)(__m512 u) {
	__m512i ab = _mm512_castps_si512(u);
	__m512i r = _mm512_add_epi32(_mm512_add_epi32(ab, _mm512_set1_epi32(0x7FFFF - (960 << 20))), _mm512_and_si512(_mm512_srli_epi32(ab, 20), _mm512_set1_epi32(1)));
	__m512i code = _mm512_srli_epi32(r, 20);
	__m512i rs = _mm512_cvt_roundps_epi32(_mm512_mul_ps(u, _mm512_set1_ps(512.0f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	return _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(ab, _mm512_set1_epi32(0x3C800000)), code, rs);
}

// shrinkv: Shrink of 16 codes (as int32) of one group, its tables in
// registers: te by the exponent bits (the permute reads the low 4 bits of
// q>>3), tm by the mantissa bits, 8 added for subnormals.
static inline __m512 K(shrinkv)(__m512i q, __m512 te, __m512 tm, __mmask16 live) {
	__m512i j = _mm512_and_si512(q, _mm512_set1_epi32(7));
	j = _mm512_mask_or_epi32(j, _mm512_testn_epi32_mask(q, _mm512_set1_epi32(0x78)), j, _mm512_set1_epi32(8));
	__m512 x = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q, 3), te), _mm512_permutexvar_ps(j, tm));
	__mmask16 nz = _mm512_test_epi32_mask(q, _mm512_set1_epi32(0x7F)) & live;
	__m512i sx = _mm512_ternarylogic_epi32(_mm512_castps_si512(x), _mm512_slli_epi32(q, 24), _mm512_set1_epi32((int)0x80000000), 0xF8);
	return _mm512_castsi512_ps(_mm512_maskz_mov_epi32(nz, sx));
}

// expandv: Expand of 16 values of one group, stored as bytes where kl
// (and the value is not 0 and the group not all zero: those store 0).
// y <= 1 (|x| <= Hi), so the power's argument is below 9: exp2u.
static inline void K(expandv)(uint8_t *dst, __mmask16 kl, __m512 x, __m512 k, __m512 ihi, __mmask16 live) {
	__m512i xb = _mm512_castps_si512(x);
	__m512 y = _mm512_max_ps(_mm512_mul_ps(_mm512_abs_ps(x), ihi), _mm512_set1_ps(0x1p-126f));
	__m512i c = K(e4m3v)(K(exp2u)(_mm512_fmadd_ps(k, K(log2v)(y), _mm512_set1_ps(K_LOG2_448))));
	c = _mm512_ternarylogic_epi32(c, _mm512_srli_epi32(xb, 24), _mm512_set1_epi32(0x80), 0xF8); // c | (sign bit >> 24)
	__mmask16 nz = _mm512_test_epi32_mask(xb, _mm512_set1_epi32(0x7FFFFFFF)) & live;
	_mm_mask_storeu_epi8(dst, kl, _mm512_maskz_cvtepi32_epi8(nz, c));
}
#endif

// dre_tables: DRE.te and DRE.tm (DREParams) from the exponent and
// mantissa logarithms lte and ltm.
static inline void K(dre_tables)(K(dre_t) *d, const float *lte, const float *ltm) {
	if (d->zero) return;
#ifdef __AVX512F__
	_mm512_storeu_ps(d->te, K(exp2v)(_mm512_fmadd_ps(_mm512_loadu_ps(lte), _mm512_set1_ps(d->invk), _mm512_set1_ps(d->l2hi))));
	_mm512_storeu_ps(d->tm, K(exp2v)(_mm512_mul_ps(_mm512_loadu_ps(ltm), _mm512_set1_ps(d->invk))));
#else
	for (int i = 0; i < 16; i++) {
		d->te[i] = K(exp2s)(__builtin_fmaf(lte[i], d->invk, d->l2hi));
		float t = ltm[i] * d->invk;
		d->tm[i] = K(exp2s)(t);
	}
#endif
}

// adamwfp8: AdamWFP8 of adamfp8.go, bit for bit: per group, shrink both
// moments back, update m, v and p, store the new ranges, expand again.
// With AVX-512 16 lanes at a time; the AVX2 build one value at a time.
void K(adamwfp8)(float *p, const float *g, uint8_t *m, uint8_t *v, uint16_t *mr, uint16_t *vr, long n, long group, const float *lte, const float *ltm, const double *l2m, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
	float step, decay, isb2;
	K(adam_consts)(lr, wd, bc1, bc2, &step, &decay, &isb2);
	float mb[4096] __attribute__((aligned(64))), vb[4096] __attribute__((aligned(64)));
	// Groups go in chunks of up to 4096 values: every group's update first,
	// then every group's expansion, so that a group's new range, its
	// parameters and tables (a chain of divisions and exp2s) are not
	// waited for between its two passes but overlap the next group's work.
	long per = 4096 / group;
	for (long k0 = 0; k0 * group < n; k0 += per) {
		long kend = k0 + per;
		for (long k = k0; k < kend && k * group < n; k++) {
			long lo = k * group, len = n - lo < group ? n - lo : group;
			K(dre_t) dm = K(dre)(mr[2 * k], mr[2 * k + 1], l2m), dv = K(dre)(vr[2 * k], vr[2 * k + 1], l2m);
			K(dre_tables)(&dm, lte, ltm);
			K(dre_tables)(&dv, lte, ltm);
			float *pp = p + lo, *mbk = mb + (lo - k0 * group), *vbk = vb + (lo - k0 * group);
			const float *gg = g + lo;
			const uint8_t *mm = m + lo, *vv = v + lo;
			float mxm = 0, mnm = 3.4028235e38f, mxv = 0, mnv = 3.4028235e38f;
#ifdef __AVX512F__
			const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2), vc1 = _mm512_set1_ps(1.0f - b1), vc2 = _mm512_set1_ps(1.0f - b2);
			const __m512 vdec = _mm512_set1_ps(decay), vstep = _mm512_set1_ps(step), visb2 = _mm512_set1_ps(isb2), veps = _mm512_set1_ps(eps);
			const __m512 big = _mm512_set1_ps(3.4028235e38f), zero = _mm512_setzero_ps();
			__m512 xm = zero, nm = big, xv = zero, nv = big;
			const __m512 tem = _mm512_loadu_ps(dm.te), tmm = _mm512_loadu_ps(dm.tm), tev = _mm512_loadu_ps(dv.te), tmv = _mm512_loadu_ps(dv.tm);
			const __mmask16 livem = dm.zero ? 0 : 0xFFFF, livev = dv.zero ? 0 : 0xFFFF;
			for (long i = 0; i < len; i += 16) {
				__mmask16 kl = K(lanes)(len - i);
				__m512 om = K(shrinkv)(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(kl, mm + i)), tem, tmm, livem);
				__m512 ov = K(shrinkv)(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(kl, vv + i)), tev, tmv, livev);
				__m512 gi = _mm512_maskz_loadu_ps(kl, gg + i);
				__m512 t1 = _mm512_mul_ps(vb1, om), t2 = _mm512_mul_ps(vc1, gi);
				__m512 u1 = _mm512_mul_ps(vb2, ov), u2 = _mm512_mul_ps(_mm512_mul_ps(vc2, gi), gi);
				K_NOFMA_V(t1); K_NOFMA_V(t2); K_NOFMA_V(u1); K_NOFMA_V(u2);
				__m512 mi = _mm512_add_ps(t1, t2), vi = _mm512_add_ps(u1, u2);
				_mm512_storeu_ps(mbk + i, mi);
				_mm512_storeu_ps(vbk + i, vi);
				__m512 am = _mm512_abs_ps(mi), av = _mm512_abs_ps(vi);
				xm = _mm512_mask_max_ps(xm, kl, xm, am);
				xv = _mm512_mask_max_ps(xv, kl, xv, av);
				nm = _mm512_mask_min_ps(nm, kl & _mm512_cmp_ps_mask(am, zero, _CMP_GT_OQ), nm, am);
				nv = _mm512_mask_min_ps(nv, kl & _mm512_cmp_ps_mask(av, zero, _CMP_GT_OQ), nv, av);
				__m512 a = _mm512_mul_ps(_mm512_maskz_loadu_ps(kl, pp + i), vdec);
				__m512 s = _mm512_mul_ps(_mm512_sqrt_ps(vi), visb2), num = _mm512_mul_ps(vstep, mi);
				K_NOFMA_V(a); K_NOFMA_V(s); K_NOFMA_V(num);
				_mm512_mask_storeu_ps(pp + i, kl, _mm512_sub_ps(a, _mm512_div_ps(num, _mm512_add_ps(s, veps))));
			}
			mxm = _mm512_reduce_max_ps(xm);
			mnm = _mm512_reduce_min_ps(nm);
			mxv = _mm512_reduce_max_ps(xv);
			mnv = _mm512_reduce_min_ps(nv);
#else
			for (long i = 0; i < len; i++) {
				float mi, vi;
				K(adam_mv)(K(shrink1)(mm[i], &dm), K(shrink1)(vv[i], &dv), gg[i], b1, b2, &mi, &vi);
				mbk[i] = mi;
				vbk[i] = vi;
				float am = mi < 0 ? -mi : mi, av = vi < 0 ? -vi : vi;
				mxm = am > mxm ? am : mxm;
				mxv = av > mxv ? av : mxv;
				mnm = am > 0 && am < mnm ? am : mnm;
				mnv = av > 0 && av < mnv ? av : mnv;
				pp[i] = K(adam_p)(pp[i], mi, vi, decay, step, isb2, eps);
			}
#endif
			K(range_store)(mr + 2 * k, mxm, mnm);
			K(range_store)(vr + 2 * k, mxv, mnv);
		}
		for (long k = k0; k < kend && k * group < n; k++) {
			long lo = k * group, len = n - lo < group ? n - lo : group;
			K(dre_t) dm = K(dre)(mr[2 * k], mr[2 * k + 1], l2m), dv = K(dre)(vr[2 * k], vr[2 * k + 1], l2m);
			const float *mbk = mb + (lo - k0 * group), *vbk = vb + (lo - k0 * group);
			uint8_t *mm = m + lo, *vv = v + lo;
#ifdef __AVX512F__
			const __m512 km = _mm512_set1_ps(dm.k), ihm = _mm512_set1_ps(dm.ihi), kv = _mm512_set1_ps(dv.k), ihv = _mm512_set1_ps(dv.ihi);
			const __mmask16 lm = dm.zero ? 0 : 0xFFFF, lv = dv.zero ? 0 : 0xFFFF;
			for (long i = 0; i < len; i += 16) {
				__mmask16 kl = K(lanes)(len - i);
				K(expandv)(mm + i, kl, _mm512_loadu_ps(mbk + i), km, ihm, lm);
				K(expandv)(vv + i, kl, _mm512_loadu_ps(vbk + i), kv, ihv, lv);
			}
#else
			for (long i = 0; i < len; i++) {
				mm[i] = (uint8_t)K(expand1)(mbk[i], dm);
				vv[i] = (uint8_t)K(expand1)(vbk[i], dv);
			}
#endif
		}
	}
}

// f16round: x rounded to the nearest float16 (ties to even), returned as
// a float: float16.Fromfloat32(x).Float32() for finite x. Normals keep 10
// mantissa bits by adding the rounding bias to the bits (from 65520 up,
// infinity); below 2^-14 the subnormal grid of 2^-24 (x*2^24 is exact).
static inline float K(f16round)(float x) {
	uint32_t b;
	__builtin_memcpy(&b, &x, 4);
	uint32_t sign = b & 0x80000000u, a = b & 0x7FFFFFFFu, r;
	if (a >= 0x477FF000u) {
		r = 0x7F800000u;
	} else if (a >= 0x38800000u) {
		r = (a + 0xFFFu + ((a >> 13) & 1)) & ~0x1FFFu;
	} else {
		float f;
		__builtin_memcpy(&f, &a, 4);
		f = ((f * 16777216.0f + 12582912.0f) - 12582912.0f) * 0x1p-24f;
		__builtin_memcpy(&r, &f, 4);
	}
	r |= sign;
	float o;
	__builtin_memcpy(&o, &r, 4);
	return o;
}

// fq_q4_0: FakeQuantQ4_0 of fakequant.go (llama.cpp's quantize_row_q4_0_ref)
// in one pass per block of 32: d = m/-8, m the block's first value of
// largest magnitude, id = 1/d (0 when d is 0), q = int8(float(x*id) + 8.5)
// as Go converts it (the low byte of the truncated int32, which is 0 for
// an infinite or NaN argument), y = (min(q, 15) - 8) * fp16(d), mask 0
// where 15 clipped. With AVX-512 the block is two registers: its absmax,
// the first lane holding it, and the rounding all stay in vectors.
void K(fq_q4_0)(float *y, uint8_t *mask, const float *x, long n) {
#ifdef __AVX512F__
	// 16 blocks at a time: each block's scale first (its absmax and first
	// lane holding it: chains that overlap across blocks), then 1/d and
	// fp16(d) of the 16 as one vector each, then the rounding.
	float ds[16] __attribute__((aligned(64))), ids[16] __attribute__((aligned(64))), dhs[16] __attribute__((aligned(64)));
	for (long b0 = 0; b0 < n / 32; b0 += 16) {
		long nb = n / 32 - b0 < 16 ? n / 32 - b0 : 16;
		for (long j = 0; j < nb; j++) {
			const float *v = x + 32 * (b0 + j);
			__m512 a0 = _mm512_abs_ps(_mm512_loadu_ps(v)), a1 = _mm512_abs_ps(_mm512_loadu_ps(v + 16));
			__m512 amax = _mm512_max_ps(a0, a1);
			amax = _mm512_max_ps(amax, _mm512_shuffle_f32x4(amax, amax, 0x4E));
			amax = _mm512_max_ps(amax, _mm512_shuffle_f32x4(amax, amax, 0xB1));
			amax = _mm512_max_ps(amax, _mm512_permute_ps(amax, 0x4E));
			amax = _mm512_max_ps(amax, _mm512_permute_ps(amax, 0xB1)); // every lane
			uint32_t hit = (uint32_t)_mm512_cmp_ps_mask(a0, amax, _CMP_EQ_OQ) | (uint32_t)_mm512_cmp_ps_mask(a1, amax, _CMP_EQ_OQ) << 16;
			// an all-zero block keeps the reference's m = +0 (no magnitude
			// beats its starting 0), whatever the signs of its zeros
			ds[j] = (_mm512_cvtss_f32(amax) > 0 ? v[__builtin_ctz(hit)] : 0.0f) / -8.0f;
		}
		__m512 d = _mm512_load_ps(ds);
		__mmask16 nz = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ);
		_mm512_store_ps(ids, _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), d));
		_mm512_store_ps(dhs, _mm512_cvtph_ps(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
		for (long j = 0; j < nb; j++) {
			long b = b0 + j;
			const float *v = x + 32 * b;
			float *o = y + 32 * b;
			uint8_t *mk = mask + 32 * b;
			__m512 x0 = _mm512_loadu_ps(v), x1 = _mm512_loadu_ps(v + 16);
			__m512 vid = _mm512_set1_ps(ids[j]), dh = _mm512_set1_ps(dhs[j]);
			__m512 t0 = _mm512_mul_ps(x0, vid), t1 = _mm512_mul_ps(x1, vid);
			K_NOFMA_V(t0); K_NOFMA_V(t1);
			__m512i q0 = _mm512_cvttps_epi32(_mm512_add_ps(t0, _mm512_set1_ps(8.5f)));
			__m512i q1 = _mm512_cvttps_epi32(_mm512_add_ps(t1, _mm512_set1_ps(8.5f)));
			q0 = _mm512_srai_epi32(_mm512_slli_epi32(q0, 24), 24); // int8 of the int32
			q1 = _mm512_srai_epi32(_mm512_slli_epi32(q1, 24), 24);
			__mmask16 in0 = _mm512_cmple_epi32_mask(q0, _mm512_set1_epi32(15)), in1 = _mm512_cmple_epi32_mask(q1, _mm512_set1_epi32(15));
			q0 = _mm512_min_epi32(q0, _mm512_set1_epi32(15));
			q1 = _mm512_min_epi32(q1, _mm512_set1_epi32(15));
			_mm512_storeu_ps(o, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q0, _mm512_set1_epi32(8))), dh));
			_mm512_storeu_ps(o + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q1, _mm512_set1_epi32(8))), dh));
			_mm256_storeu_si256((__m256i *)mk, _mm256_maskz_mov_epi8((__mmask32)in0 | (__mmask32)in1 << 16, _mm256_set1_epi8(1)));
		}
	}
#else
	for (long b = 0; b < n / 32; b++) {
		const float *v = x + 32 * b;
		float *o = y + 32 * b;
		uint8_t *mk = mask + 32 * b;
		float amax = 0, m = 0;
		for (int j = 0; j < 32; j++) {
			float a = v[j] < 0 ? -v[j] : v[j];
			if (amax < a) {
				amax = a;
				m = v[j];
			}
		}
		float d = m / -8.0f;
		float id = d != 0 ? 1.0f / d : 0.0f, h = K(f16round)(d);
		for (int j = 0; j < 32; j++) {
			float t = v[j] * id;
			K_NOFMA_S(t);
			int8_t q = (int8_t)(uint32_t)_mm_cvttss_si32(_mm_set_ss(t + 8.5f)); // 0x80000000 out of range, as Go
			mk[j] = q <= 15;
			q = q > 15 ? 15 : q;
			o[j] = (float)(q - 8) * h;
		}
	}
#endif
}
