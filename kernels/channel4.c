//go:build cgo && !purego

// W4A4: per-channel int4 weights (ChannelInt, bits 4) times activations
// quantized to 4-bit codes with a scale and zero point per row (TokenU4):
// the w4a4 recipe's per-token asymmetric activations, or one static pair
// (learned clip values) repeated on every row.
//
// The algebra. A weight row r is w = s_w[r]*q with q in [-8, 7]
// (symmetric), stored as nibbles n = q + 8 in [0, 15]. An activation row c
// is x = s_x[c]*(u - z[c]) with u in [0, 15] (asymmetric: z is where 0
// falls on the grid). Then
//
//	y[c,r] = s_w[r] s_x[c] sum_k q_k (u_k - z)
//	       = s_w[r] s_x[c] (sum_k n_k u_k - 8 sum_k u_k - z sum_k q_k).
//
// Only sum(n*u) depends on both operands: vpdpbusd (AVX-512 VNNI) or
// vpmaddubsw + vpmaddwd (AVX2) on bytes (u as the unsigned operand, n as a
// non-negative signed byte). The weights' nibbles are widened to bytes by
// a mask and a shift as each block streams in; the activations' codes are
// bytes already (TokenU4), written once by the quantizer, because every
// group of four rows reads them again.
// It is exact in int32: a product is at most 225, and vpmaddubsw's pair
// sums (at most 450, 900 for two of them) cannot saturate its int16
// lanes. sum(u) is the activation row's (TokenU4.Sum), sum(q) the weight
// row's (ChannelInt.Sum), both counted when the codes were made. D =
// sum(n*u) - 8*sum(u) is an exact integer; z*sum(q) is exact in double (a
// float32 times an integer below 2^29) whether or not z is an integer;
// D - z*sum(q) is rounded once to float32, then the two scales multiply,
// in that order in every kernel and in the Go loop (gemmChannel4Go), so
// all of them give the same bits.
//
// Activations packed as nibbles too, widened in registers (one broadcast
// load, a mask, a shift and a mask per block, column and group of rows),
// measured 1.1-1.2x slower than the W4A8 kernel at one token and 1.3-1.7x
// at 8 and 32 on AVX-512 VNNI (BenchmarkGemmChannel4 against
// BenchmarkGemmChannel's int4 rows). VNNI has no 4-bit product, so 4-bit
// activations cannot beat 8-bit ones in arithmetic here: the inner loop
// is the W4A8 kernel's, and what W4A4 changes is the quantizer and the
// exactness argument above (which also gives AVX2 a kernel).
//
// Layout: weights as ChannelInt's int4 (rows in groups of four, per
// block of 32 inputs 64 bytes, 16 per row, low nibble input j and high
// nibble j+16); activations one code a byte in input order, kp bytes a
// row (us). A weight block's 64 bytes are one AVX-512 vector; each half of
// an activation block (16 codes) is broadcast to its four 128-bit lanes,
// so one vpdpbusd gives four rows' partial sums.

#include <stdint.h>
#include <immintrin.h>

#define TGT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))
#define TGT2 __attribute__((target("avx2,fma")))

// ch4_out: the outputs of group g for nc columns from c0 from their
// integer dot products sum(n*u) (dot[4*c + i]: column c, row 4g+i).
static inline void ch4_out(const int32_t *dot, long nc, long c0, long g, const float *sw, const int32_t *sumw, const float *sx, const float *zx,
			   const int32_t *su, float *y, long ldy) {
	for (long c = 0; c < nc; c++) {
		for (int i = 0; i < 4; i++) {
			long r = 4 * g + i;
			long long d = (long long)dot[4 * c + i] - 8LL * su[c0 + c];
			double v = (double)d - (double)zx[c0 + c] * (double)sumw[r];
			y[(c0 + c) * ldy + r] = sw[r] * sx[c0 + c] * (float)v;
		}
	}
}

// ch4_tile512: sum(n*u) for the four rows at wg and nc columns of
// codes (u, column stride us bytes). nc is a constant where it is inlined,
// so the column loop unrolls and the accumulators stay in registers.
TGT512 static inline __attribute__((always_inline)) void ch4_tile512(const uint8_t *wg, long nb, const uint8_t *u, long us, const int nc, int32_t *dot) {
	const __m512i m4 = _mm512_set1_epi8(15);
	// one column: the low and high nibbles' products in separate
	// accumulators, so that a block's two vpdpbusd do not wait on each other
	const int na = nc == 1 ? 2 : nc;
	__m512i acc[8];
	for (int c = 0; c < na; c++) acc[c] = _mm512_setzero_si512();
	for (long b = 0; b < nb; b++) {
		// the weights stream from memory: ask for them a few blocks ahead
		_mm_prefetch((const char *)(wg + 64 * b + 8192), _MM_HINT_T1);
		__m512i w = _mm512_loadu_si512((const void *)(wg + 64 * b));
		__m512i lo = _mm512_and_si512(w, m4);
		__m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
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

#define CH4_CASE512(NC)                                      \
	case NC:                                             \
		ch4_tile512(wg, nb, u + c0 * us, us, NC, dot); \
		break;

// gemm_ch4_vnni: y[c*ldy + r] for the rows of groups g0..g1 and n columns
// of codes u (column stride us bytes) with scales sx, zero points zx and
// code sums su per column; sw and sumw per row. Columns go in tiles of up
// to 8 (8 accumulators, one weight decode per block and tile).
TGT512 void gemm_ch4_vnni(const uint8_t *w, const float *sw, const int32_t *sumw, long g0, long g1, long nb, const uint8_t *u, long us, const float *sx,
			  const float *zx, const int32_t *su, long n, float *y, long ldy) {
	for (long g = g0; g < g1; g++) {
		const uint8_t *wg = w + g * nb * 64;
		for (long c0 = 0; c0 < n; c0 += 8) {
			int32_t dot[32];
			long nc = n - c0 < 8 ? n - c0 : 8;
			switch (nc) {
				CH4_CASE512(1)
				CH4_CASE512(2)
				CH4_CASE512(3)
				CH4_CASE512(4)
				CH4_CASE512(5)
				CH4_CASE512(6)
				CH4_CASE512(7)
				CH4_CASE512(8)
			}
			ch4_out(dot, nc, c0, g, sw, sumw, sx, zx, su, y, ldy);
		}
	}
}

// ch4_tile2: ch4_tile512 for AVX2. A weight block is two vectors (rows 0
// and 1, rows 2 and 3); vpmaddubsw multiplies and adds pairs into int16
// (at most 450: exact), the low and high nibbles' pairs are added (at
// most 900) and vpmaddwd by ones widens them to int32.
TGT2 static inline __attribute__((always_inline)) void ch4_tile2(const uint8_t *wg, long nb, const uint8_t *u, long us, const int nc, int32_t *dot) {
	const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
	__m256i a01[4], a23[4];
	for (int c = 0; c < nc; c++) a01[c] = a23[c] = _mm256_setzero_si256();
	for (long b = 0; b < nb; b++) {
		_mm_prefetch((const char *)(wg + 64 * b + 8192), _MM_HINT_T1);
		__m256i w01 = _mm256_loadu_si256((const __m256i *)(wg + 64 * b));
		__m256i w23 = _mm256_loadu_si256((const __m256i *)(wg + 64 * b + 32));
		__m256i lo01 = _mm256_and_si256(w01, m4), hi01 = _mm256_and_si256(_mm256_srli_epi16(w01, 4), m4);
		__m256i lo23 = _mm256_and_si256(w23, m4), hi23 = _mm256_and_si256(_mm256_srli_epi16(w23, 4), m4);
		for (int c = 0; c < nc; c++) {
			const uint8_t *p = u + c * us + 32 * b;
			__m256i xl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
			__m256i xh = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 16)));
			__m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(xl, lo01), _mm256_maddubs_epi16(xh, hi01));
			__m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(xl, lo23), _mm256_maddubs_epi16(xh, hi23));
			a01[c] = _mm256_add_epi32(a01[c], _mm256_madd_epi16(p01, ones));
			a23[c] = _mm256_add_epi32(a23[c], _mm256_madd_epi16(p23, ones));
		}
	}
	for (int c = 0; c < nc; c++) {
		int32_t t[16];
		_mm256_storeu_si256((__m256i *)t, a01[c]);
		_mm256_storeu_si256((__m256i *)(t + 8), a23[c]);
		for (int i = 0; i < 4; i++) dot[4 * c + i] = (t[4 * i] + t[4 * i + 1]) + (t[4 * i + 2] + t[4 * i + 3]);
	}
}

#define CH4_CASE2(NC)                                      \
	case NC:                                           \
		ch4_tile2(wg, nb, u + c0 * us, us, NC, dot); \
		break;

// gemm_ch4_avx2: gemm_ch4_vnni for AVX2, in tiles of up to 4 columns
// (two accumulators a column).
TGT2 void gemm_ch4_avx2(const uint8_t *w, const float *sw, const int32_t *sumw, long g0, long g1, long nb, const uint8_t *u, long us, const float *sx,
			const float *zx, const int32_t *su, long n, float *y, long ldy) {
	for (long g = g0; g < g1; g++) {
		const uint8_t *wg = w + g * nb * 64;
		for (long c0 = 0; c0 < n; c0 += 4) {
			int32_t dot[16];
			long nc = n - c0 < 4 ? n - c0 : 4;
			switch (nc) {
				CH4_CASE2(1)
				CH4_CASE2(2)
				CH4_CASE2(3)
				CH4_CASE2(4)
			}
			ch4_out(dot, nc, c0, g, sw, sumw, sx, zx, su, y, ldy);
		}
	}
}
