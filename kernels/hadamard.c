//go:build cgo && !purego

// The Hadamard transform's AVX-512 kernel (hadamard.go has the algebra
// and the Go reference, hadamardRows). It performs the Go loop's
// operations in the Go loop's order on every element, so it gives the Go
// loop's bits:
//
// - Butterflies, stage by stage with the half-width h doubling from 1:
//   (u, v) -> (u+v, u-v). Stages h = 1, 2, 4, 8 stay inside one 16-float
//   register: a permute brings each lane's partner, the lower lane of a
//   pair takes x + partner (addition commutes exactly), the upper lane
//   partner - x. Stages h >= 16 pair whole registers, two stages a pass
//   over memory (h and 2h: the same operations on the same values, one
//   pass instead of two).
// - Mixing across the m blocks: output block a is sum_i c[a][i] z_i in
//   block order i from +0, one fused multiply-add by c = ±1 a term: the
//   product is exact, so fma rounds once, as the Go loop's acc ± z does.
// - The scale: one multiplication at the end, fused into the last pass.

#include <immintrin.h>

#define TGT512 __attribute__((target("avx512f,fma")))

// bfly16: stages h = 1, 2, 4, 8 of a 16-float vector.
TGT512 static inline __m512 bfly16(__m512 v) {
	__m512 p;
	p = _mm512_permute_ps(v, 0xB1); // lanes i ^ 1
	v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xAAAA, p, v);
	p = _mm512_permute_ps(v, 0x4E); // i ^ 2
	v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xCCCC, p, v);
	p = _mm512_shuffle_f32x4(v, v, 0xB1); // i ^ 4
	v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xF0F0, p, v);
	p = _mm512_shuffle_f32x4(v, v, 0x4E); // i ^ 8
	v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xFF00, p, v);
	return v;
}

// wht512: the butterflies of x (p floats, p a power of two >= 16) in
// place, times s when scale is set.
TGT512 static void wht512(float *x, long p, int scale, float s) {
	const __m512 vs = _mm512_set1_ps(s);
	int stages = 0; // the stages h >= 16
	for (long q = p; q > 16; q >>= 1) stages++;
	for (long j = 0; j < p; j += 16) {
		__m512 v = bfly16(_mm512_loadu_ps(x + j));
		if (scale && stages == 0) v = _mm512_mul_ps(v, vs);
		_mm512_storeu_ps(x + j, v);
	}
	long h = 16;
	for (; stages >= 2; stages -= 2, h *= 4) {
		const int last = scale && stages == 2;
		for (long b = 0; b < p; b += 4 * h) {
			float *x0 = x + b, *x1 = x0 + h, *x2 = x1 + h, *x3 = x2 + h;
			for (long j = 0; j < h; j += 16) {
				__m512 a = _mm512_loadu_ps(x0 + j), c = _mm512_loadu_ps(x1 + j);
				__m512 d = _mm512_loadu_ps(x2 + j), e = _mm512_loadu_ps(x3 + j);
				__m512 a1 = _mm512_add_ps(a, c), c1 = _mm512_sub_ps(a, c);
				__m512 d1 = _mm512_add_ps(d, e), e1 = _mm512_sub_ps(d, e);
				__m512 a2 = _mm512_add_ps(a1, d1), d2 = _mm512_sub_ps(a1, d1);
				__m512 c2 = _mm512_add_ps(c1, e1), e2 = _mm512_sub_ps(c1, e1);
				if (last) {
					a2 = _mm512_mul_ps(a2, vs), c2 = _mm512_mul_ps(c2, vs);
					d2 = _mm512_mul_ps(d2, vs), e2 = _mm512_mul_ps(e2, vs);
				}
				_mm512_storeu_ps(x0 + j, a2), _mm512_storeu_ps(x1 + j, c2);
				_mm512_storeu_ps(x2 + j, d2), _mm512_storeu_ps(x3 + j, e2);
			}
		}
	}
	if (stages == 1) {
		for (long b = 0; b < p; b += 2 * h) {
			float *x0 = x + b, *x1 = x0 + h;
			for (long j = 0; j < h; j += 16) {
				__m512 a = _mm512_loadu_ps(x0 + j), c = _mm512_loadu_ps(x1 + j);
				__m512 u = _mm512_add_ps(a, c), v = _mm512_sub_ps(a, c);
				if (scale) u = _mm512_mul_ps(u, vs), v = _mm512_mul_ps(v, vs);
				_mm512_storeu_ps(x0 + j, u), _mm512_storeu_ps(x1 + j, v);
			}
		}
	}
}

// mix_tile: output blocks a..a+na-1 at the nj*16 columns from j of one
// row (na, nj constants where it is inlined, so the accumulators stay in
// registers): acc = sum_i coef[a'*m + i] col[i], from +0 in block order.
// col holds the row's nj*16 columns of every block, 16*nj floats a block.
TGT512 static inline __attribute__((always_inline)) void mix_tile(float *x, long m, long p, long j, long a, const float *coef, __m512 vs,
								  const float *col, const int na, const int nj) {
	__m512 acc[8][2];
	for (int k = 0; k < na; k++)
		for (int t = 0; t < nj; t++) acc[k][t] = _mm512_setzero_ps();
	for (long i = 0; i < m; i++) {
		__m512 z[2];
		for (int t = 0; t < nj; t++) z[t] = _mm512_loadu_ps(col + (nj * i + t) * 16);
		for (int k = 0; k < na; k++) {
			const __m512 c = _mm512_set1_ps(coef[(a + k) * m + i]);
			for (int t = 0; t < nj; t++) acc[k][t] = _mm512_fmadd_ps(z[t], c, acc[k][t]);
		}
	}
	for (int k = 0; k < na; k++)
		for (int t = 0; t < nj; t++) _mm512_storeu_ps(x + (a + k) * p + j + 16 * t, _mm512_mul_ps(acc[k][t], vs));
}

// mix512: the mixing of one row's m blocks of p (p a multiple of 16, m of
// 4) in place, scaled by s: block a <- s sum_i coef[a*m + i] block i. col
// holds 32*m floats: columns of every block, read before any is written.
// Tiles of 8 outputs x 16 columns, or 8 x 32 where p allows: the
// coefficient broadcasts (one load each) are then shared by two products.
TGT512 static void mix512(float *x, long m, long p, const float *coef, float s, float *col) {
	const __m512 vs = _mm512_set1_ps(s);
	const int nj = p >= 32 ? 2 : 1;
	for (long j = 0; j < p; j += 16 * nj) {
		for (long i = 0; i < m; i++)
			for (int t = 0; t < nj; t++) _mm512_storeu_ps(col + (nj * i + t) * 16, _mm512_loadu_ps(x + i * p + j + 16 * t));
		long a = 0;
		if (nj == 2) {
			for (; a + 8 <= m; a += 8) mix_tile(x, m, p, j, a, coef, vs, col, 8, 2);
			if (a < m) mix_tile(x, m, p, j, a, coef, vs, col, 4, 2);
		} else {
			for (; a + 8 <= m; a += 8) mix_tile(x, m, p, j, a, coef, vs, col, 8, 1);
			if (a < m) mix_tile(x, m, p, j, a, coef, vs, col, 4, 1);
		}
	}
}

// hadamard_avx512 transforms rows rows of m blocks of p floats (p a power
// of two >= 16) in place: the butterflies of every block, then, with coef
// (m x m, ±1, row a the coefficients of output block a; m a multiple of
// 4), the mixing, then the scale s. col: 32*m floats of scratch.
TGT512 void hadamard_avx512(float *x, long rows, long m, long p, const float *coef, float s, float *col) {
	for (long r = 0; r < rows; r++) {
		float *row = x + r * m * p;
		for (long i = 0; i < m; i++) wht512(row + i * p, p, coef == 0, s);
		if (coef) mix512(row, m, p, coef, s, col);
	}
}

// The AVX2 kernel: the same operations in the same order on 8-float
// vectors (stages h = 1, 2, 4 in a register, where a blend picks each
// lane's sum or difference, both computed exactly as the Go loop computes
// them), so it too gives the Go loop's bits.

#define TGT2 __attribute__((target("avx2,fma")))

// bfly8: stages h = 1, 2, 4 of an 8-float vector.
TGT2 static inline __m256 bfly8(__m256 v) {
	__m256 p;
	p = _mm256_permute_ps(v, 0xB1); // lanes i ^ 1
	v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xAA);
	p = _mm256_permute_ps(v, 0x4E); // i ^ 2
	v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xCC);
	p = _mm256_permute2f128_ps(v, v, 0x01); // i ^ 4
	v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xF0);
	return v;
}

// wht256: wht512 on 8-float vectors (p a power of two >= 8).
TGT2 static void wht256(float *x, long p, int scale, float s) {
	const __m256 vs = _mm256_set1_ps(s);
	int stages = 0; // the stages h >= 8
	for (long q = p; q > 8; q >>= 1) stages++;
	for (long j = 0; j < p; j += 8) {
		__m256 v = bfly8(_mm256_loadu_ps(x + j));
		if (scale && stages == 0) v = _mm256_mul_ps(v, vs);
		_mm256_storeu_ps(x + j, v);
	}
	long h = 8;
	for (; stages >= 2; stages -= 2, h *= 4) {
		const int last = scale && stages == 2;
		for (long b = 0; b < p; b += 4 * h) {
			float *x0 = x + b, *x1 = x0 + h, *x2 = x1 + h, *x3 = x2 + h;
			for (long j = 0; j < h; j += 8) {
				__m256 a = _mm256_loadu_ps(x0 + j), c = _mm256_loadu_ps(x1 + j);
				__m256 d = _mm256_loadu_ps(x2 + j), e = _mm256_loadu_ps(x3 + j);
				__m256 a1 = _mm256_add_ps(a, c), c1 = _mm256_sub_ps(a, c);
				__m256 d1 = _mm256_add_ps(d, e), e1 = _mm256_sub_ps(d, e);
				__m256 a2 = _mm256_add_ps(a1, d1), d2 = _mm256_sub_ps(a1, d1);
				__m256 c2 = _mm256_add_ps(c1, e1), e2 = _mm256_sub_ps(c1, e1);
				if (last) {
					a2 = _mm256_mul_ps(a2, vs), c2 = _mm256_mul_ps(c2, vs);
					d2 = _mm256_mul_ps(d2, vs), e2 = _mm256_mul_ps(e2, vs);
				}
				_mm256_storeu_ps(x0 + j, a2), _mm256_storeu_ps(x1 + j, c2);
				_mm256_storeu_ps(x2 + j, d2), _mm256_storeu_ps(x3 + j, e2);
			}
		}
	}
	if (stages == 1) {
		for (long b = 0; b < p; b += 2 * h) {
			float *x0 = x + b, *x1 = x0 + h;
			for (long j = 0; j < h; j += 8) {
				__m256 a = _mm256_loadu_ps(x0 + j), c = _mm256_loadu_ps(x1 + j);
				__m256 u = _mm256_add_ps(a, c), v = _mm256_sub_ps(a, c);
				if (scale) u = _mm256_mul_ps(u, vs), v = _mm256_mul_ps(v, vs);
				_mm256_storeu_ps(x0 + j, u), _mm256_storeu_ps(x1 + j, v);
			}
		}
	}
}

// mix_tile2: mix_tile on 8-float vectors (16 registers: 4 outputs x nj).
TGT2 static inline __attribute__((always_inline)) void mix_tile2(float *x, long m, long p, long j, long a, const float *coef, __m256 vs,
								 const float *col, const int nj) {
	__m256 acc[4][2];
	for (int k = 0; k < 4; k++)
		for (int t = 0; t < nj; t++) acc[k][t] = _mm256_setzero_ps();
	for (long i = 0; i < m; i++) {
		__m256 z[2];
		for (int t = 0; t < nj; t++) z[t] = _mm256_loadu_ps(col + (nj * i + t) * 8);
		for (int k = 0; k < 4; k++) {
			const __m256 c = _mm256_broadcast_ss(coef + (a + k) * m + i);
			for (int t = 0; t < nj; t++) acc[k][t] = _mm256_fmadd_ps(z[t], c, acc[k][t]);
		}
	}
	for (int k = 0; k < 4; k++)
		for (int t = 0; t < nj; t++) _mm256_storeu_ps(x + (a + k) * p + j + 8 * t, _mm256_mul_ps(acc[k][t], vs));
}

// mix256: mix512 on 8-float vectors (p a multiple of 8, m of 4; col: 16*m
// floats).
TGT2 static void mix256(float *x, long m, long p, const float *coef, float s, float *col) {
	const __m256 vs = _mm256_set1_ps(s);
	const int nj = p >= 16 ? 2 : 1;
	for (long j = 0; j < p; j += 8 * nj) {
		for (long i = 0; i < m; i++)
			for (int t = 0; t < nj; t++) _mm256_storeu_ps(col + (nj * i + t) * 8, _mm256_loadu_ps(x + i * p + j + 8 * t));
		for (long a = 0; a < m; a += 4) {
			if (nj == 2)
				mix_tile2(x, m, p, j, a, coef, vs, col, 2);
			else
				mix_tile2(x, m, p, j, a, coef, vs, col, 1);
		}
	}
}

// hadamard_avx2: hadamard_avx512 with AVX2 (p a power of two >= 8).
TGT2 void hadamard_avx2(float *x, long rows, long m, long p, const float *coef, float s, float *col) {
	for (long r = 0; r < rows; r++) {
		float *row = x + r * m * p;
		for (long i = 0; i < m; i++) wht256(row + i * p, p, coef == 0, s);
		if (coef) mix256(row, m, p, coef, s, col);
	}
}

// Blocks shorter than a vector (p = 1, 2, 4 or 8; 1376 = 344 x 4): the
// mixing runs along the output blocks instead. For each input block i
// (in order) and position j, z = block i's element j is broadcast and
// multiplied by row i of coefT (the coefficients of block i in outputs a,
// a+1, ...: the transpose of coef), into accumulators of 16 (or 8)
// outputs at position j: still each output's sum from +0 in block order
// i by exact ±1 products, so the Go loop's bits. The butterflies of such
// short blocks are the Go loop's scalar ones.

static inline void wht_short(float *x, long p) {
	for (long h = 1; h < p; h *= 2)
		for (long i = 0; i < p; i += 2 * h)
			for (long j = i; j < i + h; j++) {
				float u = x[j], v = x[j + h];
				x[j] = u + v, x[j + h] = u - v;
			}
}

static inline __mmask16 lanes16(long left) { return left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1); }

// mixs_tile512: outputs a0 .. a0+32 (fewer at the end) at the P positions
// of one row; z is the row after the butterflies.
TGT512 static inline __attribute__((always_inline)) void mixs_tile512(float *x, long m, long a0, const float *coefT, const float *z, __m512 vs,
								      const int P) {
	const __mmask16 k0 = lanes16(m - a0), k1 = lanes16(m - a0 - 16);
	__m512 acc[8][2];
	for (int j = 0; j < P; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
	for (long i = 0; i < m; i++) {
		const __m512 c0 = _mm512_maskz_loadu_ps(k0, coefT + i * m + a0);
		const __m512 c1 = _mm512_maskz_loadu_ps(k1, coefT + i * m + a0 + 16);
		for (int j = 0; j < P; j++) {
			const __m512 zb = _mm512_set1_ps(z[i * P + j]);
			acc[j][0] = _mm512_fmadd_ps(zb, c0, acc[j][0]);
			acc[j][1] = _mm512_fmadd_ps(zb, c1, acc[j][1]);
		}
	}
	const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(P));
	for (int j = 0; j < P; j++) {
		_mm512_mask_i32scatter_ps(x + a0 * P + j, k0, idx, _mm512_mul_ps(acc[j][0], vs), 4);
		if (k1) _mm512_mask_i32scatter_ps(x + (a0 + 16) * P + j, k1, idx, _mm512_mul_ps(acc[j][1], vs), 4);
	}
}

// hadamard_short_avx512: hadamard_avx512 for p = 1, 2, 4 or 8 with mixing
// (coefT: row i the coefficients of input block i; m a multiple of 4). z:
// m*p floats of scratch.
TGT512 void hadamard_short_avx512(float *x, long rows, long m, long p, const float *coefT, float s, float *z) {
	const __m512 vs = _mm512_set1_ps(s);
	const long n = m * p;
	for (long r = 0; r < rows; r++) {
		float *row = x + r * n;
		for (long i = 0; i < m; i++) wht_short(row + i * p, p);
		for (long e = 0; e < n; e++) z[e] = row[e];
		for (long a0 = 0; a0 < m; a0 += 32) {
			switch (p) {
			case 1: mixs_tile512(row, m, a0, coefT, z, vs, 1); break;
			case 2: mixs_tile512(row, m, a0, coefT, z, vs, 2); break;
			case 4: mixs_tile512(row, m, a0, coefT, z, vs, 4); break;
			default: mixs_tile512(row, m, a0, coefT, z, vs, 8); break;
			}
		}
	}
}

// mixs_tile2: mixs_tile512 on 8-float vectors, outputs a0 .. a0+16.
TGT2 static inline __attribute__((always_inline)) void mixs_tile2(float *x, long m, long a0, const float *coefT, const float *z, __m256 vs,
								  const int P) {
	const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
	// maskload takes the lanes whose mask is negative: lane < left
	const __m256i k0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(m - a0)), lane);
	const __m256i k1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(m - a0 - 8)), lane);
	__m256 acc[4][2];
	for (int j = 0; j < P; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
	for (long i = 0; i < m; i++) {
		const __m256 c0 = _mm256_maskload_ps(coefT + i * m + a0, k0);
		const __m256 c1 = _mm256_maskload_ps(coefT + i * m + a0 + 8, k1);
		for (int j = 0; j < P; j++) {
			const __m256 zb = _mm256_broadcast_ss(z + i * P + j);
			acc[j][0] = _mm256_fmadd_ps(zb, c0, acc[j][0]);
			acc[j][1] = _mm256_fmadd_ps(zb, c1, acc[j][1]);
		}
	}
	const long left = m - a0 < 16 ? m - a0 : 16;
	for (int j = 0; j < P; j++) {
		float out[16];
		_mm256_storeu_ps(out, _mm256_mul_ps(acc[j][0], vs));
		_mm256_storeu_ps(out + 8, _mm256_mul_ps(acc[j][1], vs));
		for (long l = 0; l < left; l++) x[(a0 + l) * P + j] = out[l];
	}
}

// hadamard_short_avx2: hadamard_short_avx512 with AVX2 (p = 1, 2 or 4).
TGT2 void hadamard_short_avx2(float *x, long rows, long m, long p, const float *coefT, float s, float *z) {
	const __m256 vs = _mm256_set1_ps(s);
	const long n = m * p;
	for (long r = 0; r < rows; r++) {
		float *row = x + r * n;
		for (long i = 0; i < m; i++) wht_short(row + i * p, p);
		for (long e = 0; e < n; e++) z[e] = row[e];
		for (long a0 = 0; a0 < m; a0 += 16) {
			switch (p) {
			case 1: mixs_tile2(row, m, a0, coefT, z, vs, 1); break;
			case 2: mixs_tile2(row, m, a0, coefT, z, vs, 2); break;
			default: mixs_tile2(row, m, a0, coefT, z, vs, 4); break;
			}
		}
	}
}
