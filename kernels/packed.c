//go:build cgo && !purego

// Packed matrix-vector and small matrix-matrix products for llama.cpp's
// block formats: weights in Q4_0 or Q8_0 rows (blocks of 32 along the
// input: an fp16 scale and 16 bytes of nibbles, or 32 int8), activations
// quantized on the fly to Q8_0 blocks (scale amax/127, values rounded half
// to even as llama.cpp's SIMD paths do). Each block's integer dot product
// is exact; the scales multiply in float32.
//
// Q4_0 nibbles are unsigned (q = w/d + 8): sum((q-8)*x) = sum(q*x) - 8*sum(x),
// so the kernels take u8 x s8 products (VNNI's vpdpbusd, AVX2's
// vpmaddubsw) and subtract the precomputed corr[b] = 8*sum(x_b)*dx_b
// times the weight scale. Q8_0 weights are signed: VNNI adds 128 to make
// them unsigned (corr = 128*sum(x)*dx); AVX2 moves the sign onto x.
//
// Layout of the activations (PackedQ8 in packed.go): per column, dx[nb],
// corr4[nb], corr8[nb] floats and qx[nb*32] int8; columns follow each other.

#include <stdint.h>
#include <string.h>
#include <immintrin.h>

// q8_quant: x (nb*32 floats) to Q8_0 blocks with RNE rounding; corr4[b] =
// 8*sum(q)*d, corr8[b] = 128*sum(q)*d.
void q8_quant(const float *x, long nb, float *dx, float *corr4, float *corr8, int8_t *qx) {
	for (long b = 0; b < nb; b++) {
		const float *v = x + 32 * b;
		float amax = 0;
		for (int j = 0; j < 32; j++) {
			float a = v[j] < 0 ? -v[j] : v[j];
			amax = a > amax ? a : amax;
		}
		float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
		int s = 0;
		for (int j = 0; j < 32; j++) {
			float t = v[j] * id;
			float r = (t + 12582912.0f) - 12582912.0f;
			int q = (int)r;
			qx[32 * b + j] = (int8_t)q;
			s += q;
		}
		dx[b] = d;
		corr4[b] = 8.0f * (float)s * d;
		corr8[b] = 128.0f * (float)s * d;
	}
}

#define TGT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define TGT2 __attribute__((target("avx2,fma,f16c")))

// q8_quant_512: q8_quant in AVX-512, the same values bit for bit: the
// lanes' max is q8_quant's (max_ps(a, m) keeps m where a is NaN, as
// "a > m ? a : m" does), x * id is the same product, and the conversion
// rounds half to even as the 1.5*2^23 addition does for |t| <= 127.
// Prompts quantize every linear's input for a block of tokens: scalar,
// this took 7% of the prompt's time.
TGT512 void q8_quant_512(const float *x, long nb, float *dx, float *corr4, float *corr8, int8_t *qx) {
	const __m512 sign = _mm512_set1_ps(-0.0f);
	for (long b = 0; b < nb; b++) {
		__m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
		__m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v1), _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_setzero_ps()));
		float amax = _mm512_reduce_max_ps(m);
		float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
		__m512 vid = _mm512_set1_ps(id);
		__m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
		_mm_storeu_si128((__m128i *)(qx + 32 * b), _mm512_cvtepi32_epi8(q0));
		_mm_storeu_si128((__m128i *)(qx + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
		int s = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
		dx[b] = d;
		corr4[b] = 8.0f * (float)s * d;
		corr8[b] = 128.0f * (float)s * d;
	}
}

__attribute__((target("f16c"))) static inline float f16(const uint8_t *p) {
	uint16_t h;
	memcpy(&h, p, 2);
	return _cvtsh_ss(h);
}

// nibbles of one Q4_0 block as 32 bytes: elements 0..15 (low nibbles),
// then 16..31 (high nibbles).
TGT512 static inline __m256i nib512(const uint8_t *qs) {
	__m128i q = _mm_loadu_si128((const __m128i *)qs);
	__m128i m = _mm_set1_epi8(15);
	return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

TGT2 static inline __m256i nib2(const uint8_t *qs) {
	__m128i q = _mm_loadu_si128((const __m128i *)qs);
	__m128i m = _mm_set1_epi8(15);
	return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

TGT512 static inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

TGT2 static inline float hsum256(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// wvec2_512: the unsigned weight bytes of two consecutive blocks (p0, and
// p1 right after it) as one vector: Q4_0 nibbles, or Q8_0 values + 128.
TGT512 static inline __m512i wvec2_512(const uint8_t *p0, const uint8_t *p1, int fmt) {
	if (fmt == 4) return _mm512_inserti64x4(_mm512_castsi256_si512(nib512(p0 + 2)), nib512(p1 + 2), 1);
	__m256i a0 = _mm256_loadu_si256((const __m256i *)(p0 + 2)), a1 = _mm256_loadu_si256((const __m256i *)(p1 + 2));
	return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(a0), a1, 1), _mm512_set1_epi8((char)0x80));
}

// wvec1_512: the same for one block.
TGT512 static inline __m256i wvec1_512(const uint8_t *p0, int fmt) {
	if (fmt == 4) return nib512(p0 + 2);
	return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p0 + 2)), _mm256_set1_epi8((char)0x80));
}

// Column-chunked GEMM: y[c*ldy + r] for rows r0..r1 and n columns (the
// activations of column c at act + c*cstride bytes). fmt 4: Q4_0, 8: Q8_0.
// Columns go in chunks of 4 so each weight block is decoded once per chunk.
#define NC 4

// gemv4_vnni: one column, four rows at a time (the activation blocks and
// their scales are loaded once for the four rows). Rows r0..r1-(r1-r0)%4.
TGT512 static long gemv4_vnni(const uint8_t *w, long r0, long r1, long nb, const uint8_t *act, float *y, int fmt) {
	const long bw = fmt == 4 ? 18 : 34;
	const float *dx = (const float *)act, *cr = (const float *)act + (fmt == 4 ? nb : 2 * nb);
	const int8_t *qx = (const int8_t *)(act + 12 * nb);
	long r = r0;
	for (; r + 4 <= r1; r += 4) {
		__m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
		float corr[4] = {0, 0, 0, 0};
		long b = 0;
		for (; b + 1 < nb; b += 2) {
			__m512i xv = _mm512_loadu_si512((const void *)(qx + 32 * b));
			__m512 dxv = _mm512_insertf32x8(_mm512_set1_ps(dx[b]), _mm256_set1_ps(dx[b + 1]), 1);
			for (int i = 0; i < 4; i++) {
				const uint8_t *p0 = w + (r + i) * nb * bw + b * bw, *p1 = p0 + bw;
				__m512i wv = wvec2_512(p0, p1, fmt);
				float d0 = f16(p0), d1 = f16(p1);
				__m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
				__m512 sc = _mm512_mul_ps(_mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1), dxv);
				acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[i]);
				corr[i] += d0 * cr[b] + d1 * cr[b + 1];
			}
		}
		for (; b < nb; b++) {
			__m256i xv = _mm256_loadu_si256((const __m256i *)(qx + 32 * b));
			for (int i = 0; i < 4; i++) {
				const uint8_t *p0 = w + (r + i) * nb * bw + b * bw;
				__m256i wv = wvec1_512(p0, fmt);
				float d0 = f16(p0);
				__m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
				__m512 v = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d0 * dx[b])));
				acc[i] = _mm512_add_ps(acc[i], _mm512_insertf32x8(v, _mm256_setzero_ps(), 1));
				corr[i] += d0 * cr[b];
			}
		}
		for (int i = 0; i < 4; i++) y[r + i] = hsum512(acc[i]) - corr[i];
	}
	return r;
}

TGT512 void gemm_vnni(const uint8_t *w, long r0, long r1, long nb, const uint8_t *act, long n, long cstride, float *y, long ldy, int fmt) {
	const long bw = fmt == 4 ? 18 : 34;
	if (n == 1) {
		r0 = gemv4_vnni(w, r0, r1, nb, act, y, fmt); // the remainder rows below
	}
	for (long c0 = 0; c0 < n; c0 += NC) {
		long nc = n - c0 < NC ? n - c0 : NC;
		const float *dx[NC], *cr[NC];
		const int8_t *qx[NC];
		for (long c = 0; c < nc; c++) {
			const uint8_t *a = act + (c0 + c) * cstride;
			dx[c] = (const float *)a;
			cr[c] = (const float *)a + (fmt == 4 ? nb : 2 * nb);
			qx[c] = (const int8_t *)(a + 12 * nb);
		}
		for (long r = r0; r < r1; r++) {
			const uint8_t *row = w + r * nb * bw;
			__m512 acc[NC];
			float corr[NC];
			for (long c = 0; c < nc; c++) {
				acc[c] = _mm512_setzero_ps();
				corr[c] = 0;
			}
			long b = 0;
			for (; b + 1 < nb; b += 2) {
				const uint8_t *p0 = row + b * bw, *p1 = p0 + bw;
				__m512i wv = wvec2_512(p0, p1, fmt);
				float d0 = f16(p0), d1 = f16(p1);
				for (long c = 0; c < nc; c++) {
					__m512i xv = _mm512_loadu_si512((const void *)(qx[c] + 32 * b));
					__m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
					__m512 sc = _mm512_insertf32x8(_mm512_set1_ps(d0 * dx[c][b]), _mm256_set1_ps(d1 * dx[c][b + 1]), 1);
					acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[c]);
					corr[c] += d0 * cr[c][b] + d1 * cr[c][b + 1];
				}
			}
			for (; b < nb; b++) {
				const uint8_t *p0 = row + b * bw;
				__m256i wv = wvec1_512(p0, fmt);
				float d0 = f16(p0);
				for (long c = 0; c < nc; c++) {
					__m256i xv = _mm256_loadu_si256((const __m256i *)(qx[c] + 32 * b));
					__m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
					__m512 v = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d0 * dx[c][b])));
					v = _mm512_insertf32x8(v, _mm256_setzero_ps(), 1);
					acc[c] = _mm512_add_ps(acc[c], v);
					corr[c] += d0 * cr[c][b];
				}
			}
			for (long c = 0; c < nc; c++) y[(c0 + c) * ldy + r] = hsum512(acc[c]) - corr[c];
		}
	}
}

TGT2 void gemm_avx2(const uint8_t *w, long r0, long r1, long nb, const uint8_t *act, long n, long cstride, float *y, long ldy, int fmt) {
	const long bw = fmt == 4 ? 18 : 34;
	const __m256i ones = _mm256_set1_epi16(1);
	for (long c0 = 0; c0 < n; c0 += NC) {
		long nc = n - c0 < NC ? n - c0 : NC;
		const float *dx[NC], *cr[NC];
		const int8_t *qx[NC];
		for (long c = 0; c < nc; c++) {
			const uint8_t *a = act + (c0 + c) * cstride;
			dx[c] = (const float *)a;
			cr[c] = (const float *)a + nb;
			qx[c] = (const int8_t *)(a + 12 * nb);
		}
		for (long r = r0; r < r1; r++) {
			const uint8_t *row = w + r * nb * bw;
			__m256 acc[NC];
			float corr[NC];
			for (long c = 0; c < nc; c++) {
				acc[c] = _mm256_setzero_ps();
				corr[c] = 0;
			}
			for (long b = 0; b < nb; b++) {
				const uint8_t *p0 = row + b * bw;
				float d0 = f16(p0);
				if (fmt == 4) {
					__m256i wv = nib2(p0 + 2);
					for (long c = 0; c < nc; c++) {
						__m256i xv = _mm256_loadu_si256((const __m256i *)(qx[c] + 32 * b));
						__m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), ones);
						acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d0 * dx[c][b]), acc[c]);
						corr[c] += d0 * cr[c][b];
					}
				} else {
					__m256i wv = _mm256_loadu_si256((const __m256i *)(p0 + 2));
					__m256i aw = _mm256_sign_epi8(wv, wv);
					for (long c = 0; c < nc; c++) {
						__m256i xv = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(qx[c] + 32 * b)), wv);
						__m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xv), ones);
						acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d0 * dx[c][b]), acc[c]);
					}
				}
			}
			for (long c = 0; c < nc; c++) y[(c0 + c) * ldy + r] = hsum256(acc[c]) - (fmt == 4 ? corr[c] : 0);
		}
	}
}

// R4: Q4_0 or Q8_0 weights repacked at load (llama.cpp repacks likewise):
// rows in groups of four, per block the four rows' bytes side by side so
// one 64-byte vector holds a block of four rows. Q4_0: the 16 nibble bytes
// of each row (64 bytes per block); Q8_0: the values + 128 as unsigned
// bytes, elements 0..15 of the four rows, then 16..31 (128 bytes). Scales
// stay fp16, four per block (converted in the kernel: decoding streams
// the weights from memory, every byte counts).
//
// The activations (r4_prep) hold per block, in 80 bytes: the 32 int8
// values, the Q4_0 and Q8_0 corrections -8*sum(x) and -128*sum(x) per
// 4-value lane (lane l covers x[4l..4l+3] and x[16+4l..16+4l+3]), and the
// scale dx. A 128-bit broadcast gives every row the same x, and two
// vpdpbusd starting from the correction give exact signed dot products
// for four rows at once, 4 lanes per row.
#define R4X 80

void r4_prep(const int8_t *qx, const float *dx, long nb, uint8_t *xp) {
	for (long b = 0; b < nb; b++) {
		uint8_t *p = xp + R4X * b;
		const int8_t *x = qx + 32 * b;
		int32_t c[8];
		for (int l = 0; l < 4; l++) {
			int s = 0;
			for (int j = 4 * l; j < 4 * l + 4; j++) s += x[j] + x[16 + j];
			c[l] = -8 * s;
			c[4 + l] = -128 * s;
		}
		memcpy(p, x, 32);
		memcpy(p + 32, c, 32);
		memcpy(p + 64, dx + b, 4);
		memset(p + 68, 0, 12);
	}
}

// r4_block: block b of rows 4g..4g+3 times nc columns, into acc[c] (or,
// for a column alone, acc[alt]: even and odd blocks in separate
// accumulators, so that consecutive blocks' multiply-adds do not wait on
// each other).
TGT512 static inline __attribute__((always_inline)) void r4_block(const uint8_t *wn, const uint16_t *ws, long b, const uint8_t *xp, long xs,
								  const int nc, const int fmt, __m512 *acc, const int alt) {
	const __m512i m4 = _mm512_set1_epi8(15);
	const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
	const long wb = fmt == 4 ? 64 : 128;
	const int co = fmt == 4 ? 32 : 48;
	// the weights stream from memory: ask for them a few blocks ahead
	// (on a 2-core Zen 5, streaming from DRAM, 4, 16 or 32 KB ahead
	// and the T0, T2 and NTA hints did no better than 8 KB into L2;
	// T0 looked faster only while part of the matrix stayed in L3)
	_mm_prefetch((const char *)(wn + wb * b + 8192), _MM_HINT_T1);
	__m512i lo, hi;
	if (fmt == 4) {
		__m512i w = _mm512_loadu_si512((const void *)(wn + 64 * b));
		lo = _mm512_and_si512(w, m4);
		hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
	} else {
		_mm_prefetch((const char *)(wn + wb * b + 8192 + 64), _MM_HINT_T1);
		lo = _mm512_loadu_si512((const void *)(wn + 128 * b));
		hi = _mm512_loadu_si512((const void *)(wn + 128 * b + 64));
	}
	__m512 s = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(ws + 4 * b)))));
	_Pragma("GCC unroll 8") for (int c = 0; c < nc; c++) {
		const uint8_t *p = xp + c * xs + R4X * b;
		__m512i xl = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
		__m512i xh = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + 16)));
		__m512i d = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + co)));
		d = _mm512_dpbusd_epi32(d, lo, xl);
		d = _mm512_dpbusd_epi32(d, hi, xh);
		const int a = nc == 1 ? alt : c;
		acc[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(s, _mm512_set1_ps(*(const float *)(p + 64))), acc[a]);
	}
}

// r4_tile: rows 4g..4g+3 (weights wn, scales ws of that group) times nc
// columns of prepared activations (xp, column stride xs bytes), into
// y[c*ldy + i]. nc and fmt are constants where it is inlined, so the
// column loop unrolls and the accumulators stay in registers (a column
// alone takes its blocks in pairs: with the accumulator chosen by b & 1,
// GCC kept the two on the stack and every block waited on a store).
TGT512 static inline __attribute__((always_inline)) void r4_tile(const uint8_t *wn, const uint16_t *ws, long nb, const uint8_t *xp, long xs,
								 const int nc, const int fmt, float *y, long ldy) {
	const int na = nc == 1 ? 2 : nc;
	__m512 acc[na];
	_Pragma("GCC unroll 8") for (int c = 0; c < na; c++) acc[c] = _mm512_setzero_ps();
	if (nc == 1) {
		long b = 0;
		for (; b + 1 < nb; b += 2) {
			r4_block(wn, ws, b, xp, xs, 1, fmt, acc, 0);
			r4_block(wn, ws, b + 1, xp, xs, 1, fmt, acc, 1);
		}
		if (b < nb) r4_block(wn, ws, b, xp, xs, 1, fmt, acc, 0);
		acc[0] = _mm512_add_ps(acc[0], acc[1]);
	} else {
		for (long b = 0; b < nb; b++) r4_block(wn, ws, b, xp, xs, nc, fmt, acc, 0);
	}
	_Pragma("GCC unroll 8") for (int c = 0; c < nc; c++) {
		float t[16];
		_mm512_storeu_ps(t, acc[c]);
		for (int i = 0; i < 4; i++) y[c * ldy + i] = (t[4 * i] + t[4 * i + 1]) + (t[4 * i + 2] + t[4 * i + 3]);
	}
}

#define R4_CASE(NC)                                                                                      \
	case NC:                                                                                         \
		if (fmt == 4) r4_tile(wn, ws, nb, x, xs, NC, 4, yy, ldy);                                \
		else r4_tile(wn, ws, nb, x, xs, NC, 8, yy, ldy);                                         \
		break;

// gemm_r4_vnni: y[c*ldy + r] for the rows of groups g0..g1 and n columns.
// Columns go in tiles of up to 8 (8 accumulators, one weight decode per
// block and tile); a group's weights stay in L1/L2 across its tiles.
// GemmR4 gives it one token (decode) and the 1 to 3 columns a batch has
// beyond its quads (gemm_r4q_vnni), so its tiles hold at most 3 columns.
TGT512 void gemm_r4_vnni(const uint8_t *w, const uint16_t *sc, long g0, long g1, long nb, const uint8_t *xp, long n, float *y, long ldy, int fmt) {
	const long wb = fmt == 4 ? 64 : 128, xs = R4X * nb;
	for (long g = g0; g < g1; g++) {
		const uint8_t *wn = w + g * nb * wb;
		const uint16_t *ws = sc + g * nb * 4;
		for (long c0 = 0; c0 < n; c0 += 8) {
			const uint8_t *x = xp + c0 * xs;
			float *yy = y + c0 * ldy + 4 * g;
			switch (n - c0 < 8 ? n - c0 : 8) {
				R4_CASE(1)
				R4_CASE(2)
				R4_CASE(3)
				R4_CASE(4)
				R4_CASE(5)
				R4_CASE(6)
				R4_CASE(7)
				R4_CASE(8)
			}
		}
	}
}

// Batches of four or more columns (prompts) take the columns in quads and
// give each 32-bit lane one (row, column) pair: vpshufd spreads a row's
// four weight bytes 4j..4j+3 over the four lanes of its 128-bit quarter,
// a broadcast puts the four columns' bytes 4j..4j+3 in every quarter, and
// eight vpdpbusd (j = 0..7, elements 4j.. and 16+4j..) leave the exact
// block dot product of each of the 16 (row, column) pairs in its lane.
// The scale product, its conversion and the fused multiply-add then run
// once per 16 outputs instead of once per 4, which halves the work on the
// two pipes that carry both the integer and the float multiply-adds.
//
// The activations of a quad (r4q_prep), per block in R4Q bytes: eight
// 16-byte groups X_j (column c's bytes 4j..4j+3 for j < 4, 16+4(j-4)..
// for j >= 4, at 4c), the Q4_0 and Q8_0 corrections -8*sum(x_c) and
// -128*sum(x_c) (four int32 each) and the four scales dx_c.
#define R4Q 176

// r4q_prep: the quad of columns at buf (PackedQ8 columns of stride bytes:
// dx[nb] floats, two correction arrays, then the int8 values at 12*nb).
void r4q_prep(const uint8_t *buf, long stride, long nb, uint8_t *xq) {
	for (long b = 0; b < nb; b++) {
		uint8_t *p = xq + R4Q * b;
		for (int c = 0; c < 4; c++) {
			const uint8_t *col = buf + c * stride;
			const int8_t *x = (const int8_t *)(col + 12 * nb) + 32 * b;
			int32_t s = 0;
			for (int j = 0; j < 32; j++) s += x[j];
			for (int j = 0; j < 4; j++) {
				memcpy(p + 16 * j + 4 * c, x + 4 * j, 4);
				memcpy(p + 16 * (4 + j) + 4 * c, x + 16 + 4 * j, 4);
			}
			int32_t c4 = -8 * s, c8 = -128 * s;
			memcpy(p + 128 + 4 * c, &c4, 4);
			memcpy(p + 144 + 4 * c, &c8, 4);
			memcpy(p + 160 + 4 * c, col + 4 * b, 4);
		}
	}
}

// r4q_tile: G groups of four rows (weights wn, scales ws, the next group
// gs blocks on) times Q quads of columns (xq, quad stride qs bytes), into
// y[(4q+c)*ldy + 4g + r]. G, Q and fmt are constants where it is inlined;
// the exact-size arrays and the unrolled loops keep the 2x2 tile's 4
// accumulators and 16 spread weight vectors in registers (with a loop
// left rolled, GCC kept the accumulators on the stack: half the speed).
TGT512 static inline __attribute__((always_inline)) void r4q_tile(const uint8_t *wn, const uint16_t *ws, long gs, long nb, const uint8_t *xq,
								  long qs, const int G, const int Q, const int fmt, float *y, long ldy) {
	const __m512i m4 = _mm512_set1_epi8(15);
	const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
	const long wb = fmt == 4 ? 64 : 128;
	const int co = fmt == 4 ? 128 : 144;
	__m512 acc[G * Q];
	_Pragma("GCC unroll 4") for (int a = 0; a < G * Q; a++) acc[a] = _mm512_setzero_ps();
	for (long b = 0; b < nb; b++) {
		_Pragma("GCC unroll 2") for (int g = 0; g < G; g++) {
			const uint8_t *wg = wn + g * gs * wb + wb * b;
			_mm_prefetch((const char *)(wg + 8192), _MM_HINT_T1);
			__m512i lo, hi;
			if (fmt == 4) {
				__m512i w = _mm512_loadu_si512((const void *)wg);
				lo = _mm512_and_si512(w, m4);
				hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
			} else {
				_mm_prefetch((const char *)(wg + 8192 + 64), _MM_HINT_T1);
				lo = _mm512_loadu_si512((const void *)wg);
				hi = _mm512_loadu_si512((const void *)(wg + 64));
			}
			__m512 s = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(ws + g * gs * 4 + 4 * b)))));
			__m512i W[8] = {_mm512_shuffle_epi32(lo, 0x00), _mm512_shuffle_epi32(lo, 0x55), _mm512_shuffle_epi32(lo, 0xaa), _mm512_shuffle_epi32(lo, 0xff),
					_mm512_shuffle_epi32(hi, 0x00), _mm512_shuffle_epi32(hi, 0x55), _mm512_shuffle_epi32(hi, 0xaa), _mm512_shuffle_epi32(hi, 0xff)};
			_Pragma("GCC unroll 2") for (int q = 0; q < Q; q++) {
				const uint8_t *p = xq + q * qs + R4Q * b;
				// two chains of four, added at the end (exact integers)
				__m512i d0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + co)));
				__m512i d1 = _mm512_setzero_si512();
				_Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
					d0 = _mm512_dpbusd_epi32(d0, W[j], _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + 16 * j))));
					d1 = _mm512_dpbusd_epi32(d1, W[4 + j], _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + 64 + 16 * j))));
				}
				__m512 sx = _mm512_broadcast_f32x4(_mm_loadu_ps((const float *)(p + 160)));
				acc[g * Q + q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d0, d1)), _mm512_mul_ps(s, sx), acc[g * Q + q]);
			}
		}
	}
	_Pragma("GCC unroll 4") for (int a = 0; a < G * Q; a++) {
		float t[16];
		_mm512_storeu_ps(t, acc[a]);
		const int g = a / Q, q = a % Q;
		for (int r = 0; r < 4; r++)
			for (int c = 0; c < 4; c++) y[(4 * q + c) * ldy + 4 * g + r] = t[4 * r + c];
	}
}

#define R4Q_TILE(G, Q)                                                                                                    \
	do {                                                                                                              \
		if (fmt == 4) r4q_tile(wn, ws, nb, nb, x, qs, G, Q, 4, yy, ldy);                                          \
		else r4q_tile(wn, ws, nb, nb, x, qs, G, Q, 8, yy, ldy);                                                   \
	} while (0)

// gemm_r4q_vnni: y[c*ldy + r] for the rows of groups g0..g1 and the nq
// quads of columns at xq: tiles of two groups by two quads (8 rows by 8
// columns), one group or one quad at the edges. Every column of the
// matrix's x is read once per pair of groups: streaming it from L2 or L3
// costs less than streaming the weights again per block of columns.
TGT512 void gemm_r4q_vnni(const uint8_t *w, const uint16_t *sc, long g0, long g1, long nb, const uint8_t *xq, long nq, float *y, long ldy, int fmt) {
	const long wb = fmt == 4 ? 64 : 128, qs = R4Q * nb;
	for (long g = g0; g < g1;) {
		const long G = g1 - g >= 2 ? 2 : 1;
		const uint8_t *wn = w + g * nb * wb;
		const uint16_t *ws = sc + g * nb * 4;
		for (long q = 0; q < nq;) {
			const long Q = nq - q >= 2 ? 2 : 1;
			const uint8_t *x = xq + q * qs;
			float *yy = y + 4 * q * ldy + 4 * g;
			if (G == 2 && Q == 2) R4Q_TILE(2, 2);
			else if (G == 2) R4Q_TILE(2, 1);
			else if (Q == 2) R4Q_TILE(1, 2);
			else R4Q_TILE(1, 1);
			q += Q;
		}
		g += G;
	}
}

// Per-channel integer weights (the w4a8 and w8a8 recipes, QQQ's
// per-channel W4A8): signed codes with one float scale per row, times
// activations quantized per token to unsigned 8-bit codes u with a zero
// point z (x = s*(u - z)). The whole row's dot product is one exact int32
// sum, sum(w*u), so there is no per-block float work at all; the zero
// point and the scales apply once per output:
// y = s_w * s_x * (sum(w*u) - z*sum(w)).
//
// Layout (ChannelInt in packed.go): rows in groups of four as R4, per
// block of 32 inputs: int8, the codes of elements 0..15 of the four rows
// then 16..31 (128 bytes); int4, the codes + 8 as nibbles, low nibble
// element j, high nibble j+16 (64 bytes). The nibbles (0..15) go into
// vpdpbusd as signed bytes and the -8 comes back as -8*sum(u).
// u is per column kp bytes (k rounded up to 32, padded with 0).

TGT512 static inline __attribute__((always_inline)) void chi_tile(const uint8_t *wg, long nb, const uint8_t *u, long us, const int nc, const int bits,
								  int32_t *dot) {
	const __m512i m4 = _mm512_set1_epi8(15);
	const long wb = bits == 4 ? 64 : 128;
	// one column: lo and hi products in separate accumulators, so that
	// the two vpdpbusd of a block do not wait on each other
	const int na = nc == 1 ? 2 : nc;
	__m512i acc[8];
	for (int c = 0; c < na; c++) acc[c] = _mm512_setzero_si512();
	for (long b = 0; b < nb; b++) {
		_mm_prefetch((const char *)(wg + wb * b + 8192), _MM_HINT_T1);
		__m512i lo, hi;
		if (bits == 4) {
			__m512i w = _mm512_loadu_si512((const void *)(wg + 64 * b));
			lo = _mm512_and_si512(w, m4);
			hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
		} else {
			_mm_prefetch((const char *)(wg + wb * b + 8192 + 64), _MM_HINT_T1);
			lo = _mm512_loadu_si512((const void *)(wg + 128 * b));
			hi = _mm512_loadu_si512((const void *)(wg + 128 * b + 64));
		}
		for (int c = 0; c < nc; c++) {
			const uint8_t *p = u + c * us + 32 * b;
			__m512i xl = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
			__m512i xh = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + 16)));
			if (nc == 1) {
				acc[0] = _mm512_dpbusd_epi32(acc[0], xl, lo);
				acc[1] = _mm512_dpbusd_epi32(acc[1], xh, hi);
			} else {
				acc[c] = _mm512_dpbusd_epi32(acc[c], xl, lo);
				acc[c] = _mm512_dpbusd_epi32(acc[c], xh, hi);
			}
		}
	}
	if (nc == 1) acc[0] = _mm512_add_epi32(acc[0], acc[1]);
	for (int c = 0; c < nc; c++) {
		int32_t t[16];
		_mm512_storeu_si512((void *)t, acc[c]);
		for (int i = 0; i < 4; i++) dot[4 * c + i] = (t[4 * i] + t[4 * i + 1]) + (t[4 * i + 2] + t[4 * i + 3]);
	}
}

#define CHI_CASE(NC)                                                       \
	case NC:                                                           \
		if (bits == 4) chi_tile(wg, nb, x, us, NC, 4, dot);        \
		else chi_tile(wg, nb, x, us, NC, 8, dot);                  \
		break;

// gemm_chi_vnni: y[c*ldy + r] for the rows of groups g0..g1 and n columns
// of codes u (column stride us bytes) with scales sx, zero points zx and
// code sums su per column; sw and sumw per row.
TGT512 void gemm_chi_vnni(const uint8_t *w, const float *sw, const int32_t *sumw, long g0, long g1, long nb, const uint8_t *u, long us,
			  const float *sx, const float *zx, const int32_t *su, long n, float *y, long ldy, int bits) {
	const long wb = bits == 4 ? 64 : 128;
	for (long g = g0; g < g1; g++) {
		const uint8_t *wg = w + g * nb * wb;
		for (long c0 = 0; c0 < n; c0 += 8) {
			const uint8_t *x = u + c0 * us;
			int32_t dot[32];
			long nc = n - c0 < 8 ? n - c0 : 8;
			switch (nc) {
				CHI_CASE(1)
				CHI_CASE(2)
				CHI_CASE(3)
				CHI_CASE(4)
				CHI_CASE(5)
				CHI_CASE(6)
				CHI_CASE(7)
				CHI_CASE(8)
			}
			for (long c = 0; c < nc; c++) {
				for (int i = 0; i < 4; i++) {
					long r = 4 * g + i;
					// exact in 64 bits; one rounding to float
					long long d = (long long)dot[4 * c + i] - (long long)zx[c0 + c] * sumw[r];
					if (bits == 4) d -= 8LL * su[c0 + c];
					y[(c0 + c) * ldy + r] = sw[r] * sx[c0 + c] * (float)d;
				}
			}
		}
	}
}
