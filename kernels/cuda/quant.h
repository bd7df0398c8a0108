// The arithmetic of the device kernels, one function per element or per
// block of 32, written once and compiled twice: by nvcc into kernels.ptx
// (kernels.cu) and by the host C compiler into this package's host build
// (host.go). The tests of host.go compare it bit for bit with the CPU
// kernels of package kernels on any machine, so what the GPU computes is
// checked even where no GPU is present; the GPU tests then compare the
// device with the same CPU kernels.
//
// Bit-identity with the CPU path rests on three rules: every float
// operation is a single correctly rounded IEEE operation (MUL/ADD/DIV are
// __fmul_rn/__fadd_rn/__fdiv_rn on the device, which nvcc never fuses into
// an FMA; host.c turns contraction off), rounding
// functions are the ones Go uses (rintf: half to even; roundf: half away
// from zero), and the operations come in the CPU loops' order.
#ifndef QAT_QUANT_H
#define QAT_QUANT_H

#ifdef __CUDACC__
#define QD static __device__ __forceinline__
#define MUL(a, b) __fmul_rn((a), (b))
#define ADD(a, b) __fadd_rn((a), (b))
#define SUB(a, b) __fsub_rn((a), (b))
#define DIV(a, b) __fdiv_rn((a), (b))
#define SQRT(a) __fsqrt_rn(a)
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
#else
#include <math.h>
#include <stdint.h>
#include <string.h>
#define QD static inline
#define MUL(a, b) ((float)(a) * (float)(b))
#define ADD(a, b) ((float)(a) + (float)(b))
#define SUB(a, b) ((float)(a) - (float)(b))
#define DIV(a, b) ((float)(a) / (float)(b))
#define SQRT(a) sqrtf(a)
typedef uint8_t u8;
typedef int8_t i8;
typedef uint16_t u16;
typedef uint32_t u32;
#endif

QD u32 f32_bits(float f) {
#ifdef __CUDACC__
	return __float_as_uint(f);
#else
	u32 u;
	memcpy(&u, &f, 4);
	return u;
#endif
}

QD float f32_from(u32 u) {
#ifdef __CUDACC__
	return __uint_as_float(u);
#else
	float f;
	memcpy(&f, &u, 4);
	return f;
#endif
}

// f16_bits rounds a float32 to IEEE half precision, ties to even, with
// subnormals, overflow to infinity and quiet NaNs: what
// github.com/x448/float16's Fromfloat32 returns. Block scales (Q4_0, Q8_0)
// are stored in half precision, so the device must round them exactly as
// the CPU packer does.
QD u16 f16_bits(float f) {
	u32 x = f32_bits(f);
	u32 sign = (x >> 16) & 0x8000;
	u32 exp = (x >> 23) & 0xff;
	u32 man = x & 0x7fffff;
	if (exp == 0xff) { // Inf, NaN (quiet, top payload bits kept)
		if (man == 0) {
			return (u16)(sign | 0x7c00);
		}
		return (u16)(sign | 0x7e00 | (man >> 13));
	}
	int e = (int)exp - 127 + 15;
	if (e >= 31) {
		return (u16)(sign | 0x7c00);
	}
	if (e <= 0) { // subnormal half (or zero)
		if (e < -10) {
			return (u16)sign;
		}
		man |= 0x800000;
		int shift = 14 - e; // 14..24
		u32 h = man >> shift;
		u32 rem = man & ((1u << shift) - 1);
		u32 half = 1u << (shift - 1);
		if (rem > half || (rem == half && (h & 1))) {
			h++;
		}
		return (u16)(sign | h);
	}
	u32 h = ((u32)e << 10) | (man >> 13);
	u32 rem = man & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) {
		h++; // a carry into the exponent is the right result, up to Inf
	}
	return (u16)(sign | h);
}

// f16_float widens half-precision bits to float32 (exact).
QD float f16_float(u16 h) {
	u32 sign = ((u32)h & 0x8000) << 16;
	u32 exp = ((u32)h >> 10) & 0x1f;
	u32 man = (u32)h & 0x3ff;
	if (exp == 0x1f) {
		return f32_from(sign | 0x7f800000 | (man << 13));
	}
	if (exp == 0) {
		if (man == 0) {
			return f32_from(sign);
		}
		// subnormal: man * 2^-24, exact in float32
		float v = MUL((float)man, f32_from(0x33800000));
		return sign ? -v : v;
	}
	return f32_from(sign | ((exp + 112) << 23) | (man << 13));
}

// fq_affine is kernels.FakeQuantAffine for one value: y = (clamp(rne(x *
// inv) + z, qmin, qmax) - z) * s with inv = 1/s of its group; *m = 1 where
// the value was not clipped (the straight-through gradient passes).
QD float fq_affine(float x, float s, float inv, float z, float qmin, float qmax, u8 *m) {
	float q = ADD(rintf(MUL(x, inv)), z);
	*m = 1;
	if (q < qmin) {
		q = qmin;
		*m = 0;
	} else if (q > qmax) {
		q = qmax;
		*m = 0;
	}
	return MUL(SUB(q, z), s);
}

// fq_lsq is kernels.FakeQuantLSQ for one value: v = x/s clamped to [-qn,
// qp], y = rne(v) * s.
QD float fq_lsq(float x, float s, float qn, float qp, u8 *m) {
	float v = DIV(x, s);
	*m = 1;
	if (v < -qn) {
		v = -qn;
		*m = 0;
	} else if (v > qp) {
		v = qp;
		*m = 0;
	}
	return MUL(rintf(v), s);
}

// lsq_err is LSQ's d(y/s)/ds term for one value (kernels.LSQGrad): rne(v)
// - v inside the range, -qn below, qp above; *inside says whether dx gets dy.
QD float lsq_err(float x, float s, float qn, float qp, int *inside) {
	float v = DIV(x, s);
	*inside = 0;
	if (v < -qn) {
		return -qn;
	}
	if (v > qp) {
		return qp;
	}
	*inside = 1;
	return SUB(rintf(v), v);
}

// q4_0_code is llama.cpp's Q4_0 code of one value before the clip at 15:
// int8(x * id + 8.5) truncated, id = 1/d (0 for an all-zero block).
QD int q4_0_code(float x, float id) {
	return (int)ADD(MUL(x, id), 8.5f);
}

// q4_0_scale is the Q4_0 block scale d = m / -8 from m, the block's first
// value of largest magnitude.
QD float q4_0_scale(float m) { return DIV(m, -8.0f); }

// q8_0_code is llama.cpp's Q8_0 code: x * id rounded half away from zero.
QD int q8_0_code(float x, float id) { return (int)roundf(MUL(x, id)); }

// inv_or_zero is 1/d, or 0 where d is 0 (an all-zero block).
QD float inv_or_zero(float d) { return d != 0.0f ? DIV(1.0f, d) : 0.0f; }

// q8_act_code is the code of kernels.QuantizeQ8 (activations for the
// packed products): x * id rounded half to even.
QD int q8_act_code(float x, float id) { return (int)rintf(MUL(x, id)); }

// q8_act_corr is QuantizeQ8's correction terms for a block with code sum
// s and scale d: c = k * float(s) * d, k = 8 for Q4_0 weights, 128 for
// the unsigned form.
QD float q8_act_corr(float k, int s, float d) { return MUL(MUL(k, (float)s), d); }

// packed_block_add adds one block's contribution to a packed dot product
// as kernels.GemmPacked does: sum + float(dot) * (dw * dx), then minus
// dw * c4 for Q4_0, whose codes carry +8, in double.
QD double packed_block_add(double sum, int dot, float dw, float dx, float c4, int q4) {
	sum += (double)MUL((float)dot, MUL(dw, dx));
	if (q4) {
		sum -= (double)MUL(dw, c4);
	}
	return sum;
}

// gmax and gmin are Go's built-in max and min on float32: NaN wins, and
// max(-0, +0) = +0, min(-0, +0) = -0 (fmaxf and fminf promise neither).
QD float gmax(float a, float b) {
	if (a != a || b != b) {
		return a + b;
	}
	if (a == b) {
		return (f32_bits(a) >> 31) ? b : a;
	}
	return a > b ? a : b;
}

QD float gmin(float a, float b) {
	if (a != a || b != b) {
		return a + b;
	}
	if (a == b) {
		return (f32_bits(a) >> 31) ? a : b;
	}
	return a < b ? a : b;
}

// map8_code is kernels.Map8.Code: the byte of the map value nearest to y
// (|y| <= 1), from the bucket of |y|'s exponent and top mantissa bits and
// at most two comparisons with the midpoints between magnitudes.
QD u8 map8_code(float y, const int *bucket, const float *bound, int zero) {
	float a = gmin(fabsf(y), 1.0f);
	int j = bucket[f32_bits(a) >> 17];
	if (a > bound[j]) {
		j++;
	}
	if (a > bound[j]) {
		j++;
	}
	if (y < 0) {
		return (u8)(zero - j > 0 ? zero - j : 0);
	}
	return (u8)(zero + j);
}

// adam_step is one value of kernels.AdamW8's update: the dequantized
// moments mq*am and vq*av move to mi and vi, and the parameter takes the
// AdamW step; step = lr/bc1, decay = 1 - lr*wd, isb2 = 1/sqrt(bc2).
QD float adam_step(float p, float g, float mq, float am, float vq, float av, float step, float decay,
                   float b1, float b2, float eps, float isb2, float *mo, float *vo) {
	float mi = ADD(MUL(b1, MUL(mq, am)), MUL(SUB(1.0f, b1), g));
	float vi = ADD(MUL(b2, MUL(vq, av)), MUL(MUL(SUB(1.0f, b2), g), g));
	*mo = mi;
	*vo = vi;
	return SUB(MUL(p, decay), DIV(MUL(step, mi), ADD(MUL(SQRT(vi), isb2), eps)));
}

// round_fp is kernels.FPFormat.RoundFP: v rounded to the nearest value of a
// small float format (man mantissa bits, exponent bias, largest value
// fmax), ties to even, saturating. The step of v's binade comes from its
// float32 exponent (subnormals share the smallest normal binade's step), so
// a/step and the product are exact: only rintf rounds.
QD float round_fp(float v, int man, int bias, float fmax) {
	if (v != v) {
		return v;
	}
	float a = fabsf(v);
	if (a >= fmax) {
		return (f32_bits(v) >> 31) ? -fmax : fmax;
	}
	if (a == 0) {
		return v;
	}
	int e = (int)((f32_bits(a) >> 23) & 0xff) - 127;
	if (e < 1 - bias) {
		e = 1 - bias;
	}
	float step = f32_from((u32)(e - man + 127) << 23);
	float r = MUL(rintf(DIV(a, step)), step);
	if (r > fmax) {
		r = fmax;
	}
	return (f32_bits(v) >> 31) ? -r : r;
}

// fq_fp is kernels.FakeQuantFP for one value: RoundFP(x/s)*s; the mask
// stops the gradient of values past +-fmax*s.
QD float fq_fp(float x, float s, int man, int bias, float fmax, u8 *m) {
	float u = DIV(x, s);
	*m = (u > fmax || u < -fmax) ? 0 : 1;
	return MUL(round_fp(u, man, bias, fmax), s);
}

// tok_sym_scale is kernels.TokenScheme's symmetric per-token step,
// max(amax / ((127-qmin)/2), 2^-23), and tok_sym_code its code, shifted
// by 128 to a byte.
QD float tok_sym_scale(float amax, float qmin) {
	return gmax(DIV(amax, DIV(SUB(127.0f, qmin), 2.0f)), 1.1920929e-07f);
}

QD int tok_sym_code(float v, float inv, float qmin) {
	return (int)ADD(gmin(gmax(rintf(MUL(v, inv)), qmin), 127.0f), 128.0f);
}

// tok_asym_scale is kernels.QuantizeTokens' per-token step over the range
// [lo, hi] (which contains 0), tok_asym_zero its zero point and
// tok_asym_code the code of one value.
QD float tok_asym_scale(float lo, float hi) { return gmax(DIV(SUB(hi, lo), 255.0f), 1.1920929e-07f); }

QD float tok_asym_zero(float lo, float s) { return gmin(gmax(-rintf(DIV(lo, s)), 0.0f), 255.0f); }

QD int tok_asym_code(float v, float inv, float z) { return (int)gmin(gmax(ADD(rintf(MUL(v, inv)), z), 0.0f), 255.0f); }

// channel_out is kernels.GemmChannel's output from the exact integer dot
// product d = sum_k w[r,k] (u[k] - z): s_w * s_x * float32(d).
QD float channel_out(float sw, float sx, long long d) { return MUL(MUL(sw, sx), (float)d); }

// The dynamic (minmax) scales of qat.Spec, per group from its range:
// symmetric int s = max(amax / ((qmax-qmin)/2), 2^-23); asymmetric int over
// the range widened to contain 0, s = max((h-l)/(qmax-qmin), 2^-23) and
// zero point clamp(qmin - rne(l/s), qmin, qmax); FP s = max(amax/fmax,
// 1e-12). kind: 0 symmetric int, 1 asymmetric int, 2 FP.
QD void dyn_scale(int kind, float lo, float hi, float qmin, float qmax, float fmax, float *s, float *z) {
	if (kind == 0) {
		*s = gmax(DIV(hi, DIV(SUB(qmax, qmin), 2.0f)), 1.1920929e-07f);
		*z = 0;
	} else if (kind == 1) {
		float l = gmin(lo, 0.0f), h = gmax(hi, 0.0f);
		float sc = gmax(DIV(SUB(h, l), SUB(qmax, qmin)), 1.1920929e-07f);
		*s = sc;
		*z = gmin(gmax(SUB(qmin, rintf(DIV(l, sc))), qmin), qmax);
	} else {
		*s = gmax(DIV(hi, fmax), 1e-12f);
		*z = 0;
	}
}

#endif
