// Device kernels of package cuda, compiled to PTX (kernels.ptx, `make ptx`)
// and loaded by the driver, which JIT-compiles the PTX for whatever GPU it
// finds (sm_80 and later). The arithmetic lives in quant.h, shared with
// the host build that the CPU tests check; this file only maps it onto
// threads: elementwise kernels are grid-stride loops, per-group reductions
// give one warp to a group (a Q4_0/Q8_0 block of 32 is one value a lane),
// and the 8-bit AdamW gives one thread block to a state block.
//
// Every kernel is extern "C" so the names in the PTX are the ones Go asks
// the module for (ptx.go lists them, and a test checks the PTX has them).
#include "quant.h"
#include "train.h"

#define FULL 0xffffffffu

static __device__ __forceinline__ long gtid() { return (long)blockIdx.x * blockDim.x + threadIdx.x; }
static __device__ __forceinline__ long gstride() { return (long)gridDim.x * blockDim.x; }

// warp_max is Go's max over a warp (NaN wins; -0 below +0).
static __device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) {
		v = gmax(v, __shfl_xor_sync(FULL, v, o));
	}
	return v;
}

static __device__ __forceinline__ int warp_sum_i(int v) {
	for (int o = 16; o > 0; o >>= 1) {
		v += __shfl_xor_sync(FULL, v, o);
	}
	return v;
}

static __device__ __forceinline__ double warp_sum_d(double v) {
	for (int o = 16; o > 0; o >>= 1) {
		v += __shfl_xor_sync(FULL, v, o);
	}
	return v;
}

extern "C" {

// qat_copy is the bandwidth yardstick of the benchmarks: dst = src.
__global__ void qat_copy(float *dst, const float *src, long n) {
	for (long i = gtid(); i < n; i += gstride()) {
		dst[i] = src[i];
	}
}

// qat_absmax_groups: out[k] = max |x| over group k (one warp a group).
__global__ void qat_absmax_groups(float *out, const float *x, long ngroups, int group) {
	long k = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (k >= ngroups) {
		return;
	}
	const float *g = x + k * group;
	float m = 0;
	for (int i = lane; i < group; i += 32) {
		m = gmax(m, fabsf(g[i]));
	}
	m = warp_max(m);
	if (lane == 0) {
		out[k] = m;
	}
}

// qat_minmax_groups: lo[k], hi[k] = min and max over group k.
__global__ void qat_minmax_groups(float *lo, float *hi, const float *x, long ngroups, int group) {
	long k = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (k >= ngroups) {
		return;
	}
	const float *g = x + k * group;
	float a = g[0], b = g[0];
	for (int i = lane; i < group; i += 32) {
		a = gmin(a, g[i]);
		b = gmax(b, g[i]);
	}
	for (int o = 16; o > 0; o >>= 1) {
		a = gmin(a, __shfl_xor_sync(FULL, a, o));
		b = gmax(b, __shfl_xor_sync(FULL, b, o));
	}
	if (lane == 0) {
		lo[k] = a;
		hi[k] = b;
	}
}

// qat_fq_affine: integer fake quant with a scale and zero point per group
// (kernels.FakeQuantAffine).
__global__ void qat_fq_affine(float *y, u8 *mask, const float *x, const float *scale, const float *zero,
                              long n, int group, float qmin, float qmax) {
	for (long i = gtid(); i < n; i += gstride()) {
		long k = i / group;
		float s = scale[k];
		y[i] = fq_affine(x[i], s, DIV(1.0f, s), zero[k], qmin, qmax, &mask[i]);
	}
}

// qat_fq_lsq: LSQ's forward with a learned step per group.
__global__ void qat_fq_lsq(float *y, u8 *mask, const float *x, const float *scale, long n, int group, float qn, float qp) {
	for (long i = gtid(); i < n; i += gstride()) {
		y[i] = fq_lsq(x[i], scale[i / group], qn, qp, &mask[i]);
	}
}

// qat_mask_grad: the straight-through backward, dx += dy where mask is set.
__global__ void qat_mask_grad(float *dx, const float *dy, const u8 *mask, long n) {
	for (long i = gtid(); i < n; i += gstride()) {
		if (mask[i]) {
			dx[i] = ADD(dx[i], dy[i]);
		}
	}
}

// qat_lsq_grad: LSQ's backward (kernels.LSQGrad), one warp a group: dx +=
// dy inside the range (dx may be null), ds[k] += gscale * sum(dy * e) with
// the sum in double, as on the CPU (only its order differs).
__global__ void qat_lsq_grad(float *dx, float *ds, const float *dy, const float *x, const float *scale,
                             long ngroups, int group, float qn, float qp, float gscale) {
	long k = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (k >= ngroups) {
		return;
	}
	float s = scale[k];
	double acc = 0;
	for (int j = lane; j < group; j += 32) {
		long i = k * group + j;
		int inside;
		float e = lsq_err(x[i], s, qn, qp, &inside);
		if (inside && dx) {
			dx[i] = ADD(dx[i], dy[i]);
		}
		acc += (double)MUL(dy[i], e);
	}
	acc = warp_sum_d(acc);
	if (lane == 0) {
		ds[k] = ADD(ds[k], MUL(gscale, (float)acc));
	}
}

// qat_fq_q4_0: llama.cpp's Q4_0 grid (kernels.FakeQuantQ4_0), one warp a
// block of 32. The block scale comes from the first value of largest
// magnitude: the warp reduces (|x|, lane) pairs, lower lane on ties.
__global__ void qat_fq_q4_0(float *y, u8 *mask, const float *x, long nblocks) {
	long b = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (b >= nblocks) {
		return;
	}
	float v = x[b * 32 + lane];
	float a = fabsf(v);
	if (!(a > 0)) {
		a = 0; // zeros and NaN never set the scale (the CPU loop skips them)
	}
	float best = a;
	int at = lane;
	for (int o = 16; o > 0; o >>= 1) {
		float ob = __shfl_xor_sync(FULL, best, o);
		int oa = __shfl_xor_sync(FULL, at, o);
		if (ob > best || (ob == best && oa < at)) {
			best = ob;
			at = oa;
		}
	}
	float m = __shfl_sync(FULL, v, at);
	if (best == 0) {
		m = 0;
	}
	float d = q4_0_scale(m);
	float id = inv_or_zero(d);
	float dh = f16_float(f16_bits(d));
	int q = q4_0_code(v, id);
	u8 mk = 1;
	if (q > 15) {
		q = 15;
		mk = 0;
	}
	y[b * 32 + lane] = MUL((float)(q - 8), dh);
	mask[b * 32 + lane] = mk;
}

// qat_fq_q8_0: llama.cpp's Q8_0 grid (kernels.FakeQuantQ8_0); nothing
// clips, so the mask is all ones.
__global__ void qat_fq_q8_0(float *y, u8 *mask, const float *x, long nblocks) {
	long b = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (b >= nblocks) {
		return;
	}
	float v = x[b * 32 + lane];
	float d = DIV(warp_max(fabsf(v)), 127.0f);
	float id = inv_or_zero(d);
	float dh = f16_float(f16_bits(d));
	y[b * 32 + lane] = MUL((float)q8_0_code(v, id), dh);
	mask[b * 32 + lane] = 1;
}

// qat_quantize_q8: activations to Q8_0 blocks for the packed products
// (kernels.QuantizeQ8), one warp a block: scale dx, the Q4_0 correction
// c4 = 8 * sum(q) * dx, the unsigned one c8 = 128 * sum(q) * dx, codes qx.
__global__ void qat_quantize_q8(float *dx, float *c4, float *c8, i8 *qx, const float *x, long nblocks) {
	long b = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (b >= nblocks) {
		return;
	}
	float v = x[b * 32 + lane];
	float d = DIV(warp_max(fabsf(v)), 127.0f);
	float id = inv_or_zero(d);
	int q = q8_act_code(v, id);
	qx[b * 32 + lane] = (i8)q;
	int s = warp_sum_i(q);
	if (lane == 0) {
		dx[b] = d;
		c4[b] = q8_act_corr(8.0f, s, d);
		c8[b] = q8_act_corr(128.0f, s, d);
	}
}

// load4 reads 4 bytes from an address that may not be 4-aligned (Q4_0
// blocks are 18 bytes, Q8_0 blocks 34).
static __device__ __forceinline__ int load4(const u8 *p) {
	return (int)((u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24);
}

// block_dot is the exact integer dot product of one packed weight block
// with 32 int8 activation codes, through dp4a (4 byte products a step).
static __device__ __forceinline__ int block_dot(const u8 *p, const i8 *q, int q4) {
	int dot = 0;
	if (q4) {
		for (int j = 0; j < 16; j += 4) {
			int w = load4(p + 2 + j);
			dot = __dp4a(w & 0x0f0f0f0f, load4((const u8 *)q + j), dot);
			dot = __dp4a((w >> 4) & 0x0f0f0f0f, load4((const u8 *)q + 16 + j), dot);
		}
	} else {
		for (int j = 0; j < 32; j += 4) {
			dot = __dp4a(load4(p + 2 + j), load4((const u8 *)q + j), dot);
		}
	}
	return dot;
}

// qat_gemm_packed: y[c*rows + r] = sum_k W[r,k] x_c[k] for Q4_0 (q4 = 1) or
// Q8_0 weights (rows of nb packed blocks) and ncols Q8_0 activation
// columns (kernels.GemmPacked); one warp per output, lanes over blocks,
// terms in double.
__global__ void qat_gemm_packed(float *y, const u8 *w, const float *dx, const float *c4, const i8 *qx,
                                int rows, int nb, int ncols, int q4) {
	long o = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (o >= (long)rows * ncols) {
		return;
	}
	int r = (int)(o % rows), c = (int)(o / rows);
	int bw = q4 ? 18 : 34;
	const u8 *row = w + (long)r * nb * bw;
	double sum = 0;
	for (int b = lane; b < nb; b += 32) {
		const u8 *p = row + (long)b * bw;
		float d = f16_float((u16)(p[0] | p[1] << 8));
		long cb = (long)c * nb + b;
		sum = packed_block_add(sum, block_dot(p, qx + cb * 32, q4), d, dx[cb], c4[cb], q4);
	}
	sum = warp_sum_d(sum);
	if (lane == 0) {
		y[(long)c * rows + r] = (float)sum;
	}
}

// qat_adamw8: one AdamW step on moments stored as 8-bit dynamic-map codes
// with a float32 absmax per block (kernels.AdamW8), one thread block per
// state block: dequantize, update m, v and p, reduce the new absmax, and
// requantize. Dynamic shared memory holds the block's new moments (2 *
// block floats) and the reduction.
__global__ void qat_adamw8(float *p, const float *g, u8 *m, u8 *v, float *mAbs, float *vAbs,
                           const float *mVals, const int *mBucket, const float *mBound, int mZero,
                           const float *vVals, const int *vBucket, const float *vBound, int vZero,
                           long n, int block, float step, float decay, float b1, float b2, float eps, float isb2) {
	extern __shared__ float sh[];
	float *mb = sh, *vb = sh + block, *red = sh + 2 * block;
	long lo = (long)blockIdx.x * block;
	int len = (int)min((long)block, n - lo);
	float am = mAbs[blockIdx.x], av = vAbs[blockIdx.x];
	float nm = 0, nv = 0;
	for (int t = threadIdx.x; t < len; t += blockDim.x) {
		long i = lo + t;
		float mi, vi;
		p[i] = adam_step(p[i], g[i], mVals[m[i]], am, vVals[v[i]], av, step, decay, b1, b2, eps, isb2, &mi, &vi);
		mb[t] = mi;
		vb[t] = vi;
		nm = gmax(nm, fabsf(mi));
		nv = gmax(nv, vi);
	}
	// block max of nm and nv (blockDim is a multiple of 32)
	nm = warp_max(nm);
	nv = warp_max(nv);
	int wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
	if ((threadIdx.x & 31) == 0) {
		red[wid] = nm;
		red[32 + wid] = nv;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int k = 1; k < nw; k++) {
			red[0] = gmax(red[0], red[k]);
			red[32] = gmax(red[32], red[32 + k]);
		}
		if (red[0] == 0) {
			red[0] = 1;
		}
		if (red[32] == 0) {
			red[32] = 1;
		}
		mAbs[blockIdx.x] = red[0];
		vAbs[blockIdx.x] = red[32];
	}
	__syncthreads();
	float im = DIV(1.0f, red[0]), iv = DIV(1.0f, red[32]);
	for (int t = threadIdx.x; t < len; t += blockDim.x) {
		m[lo + t] = map8_code(MUL(mb[t], im), mBucket, mBound, mZero);
		v[lo + t] = map8_code(MUL(vb[t], iv), vBucket, vBound, vZero);
	}
}

// qat_fq_fp: fake quant to a small float format (FP8 E4M3/E5M2, FP4 E2M1)
// with a scale per group (kernels.FakeQuantFP).
__global__ void qat_fq_fp(float *y, u8 *mask, const float *x, const float *scale, long n, int group, int man, int bias,
                          float fmax) {
	for (long i = gtid(); i < n; i += gstride()) {
		y[i] = fq_fp(x[i], scale[i / group], man, bias, fmax, &mask[i]);
	}
}

// qat_quantize_tokens: activations to 8-bit codes per token
// (kernels.TokenScheme.Quantize), one warp a row of k values: symmetric
// (codes + 128, zero point 128) or asymmetric over the row's range widened
// to contain 0. Rows of u are kp bytes, the tail past k zeroed.
__global__ void qat_quantize_tokens(u8 *u, float *scale, float *zero, int *sum, const float *x, long n, int k, int kp,
                                    int sym, float qmin) {
	long r = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (r >= n) {
		return;
	}
	const float *row = x + r * k;
	u8 *ur = u + r * kp;
	float lo = 0, hi = 0;
	for (int j = lane; j < k; j += 32) {
		if (sym) {
			hi = gmax(hi, fabsf(row[j]));
		} else {
			lo = gmin(lo, row[j]);
			hi = gmax(hi, row[j]);
		}
	}
	for (int o = 16; o > 0; o >>= 1) {
		lo = gmin(lo, __shfl_xor_sync(FULL, lo, o));
		hi = gmax(hi, __shfl_xor_sync(FULL, hi, o));
	}
	float s, z;
	if (sym) {
		s = tok_sym_scale(hi, qmin);
		z = 128;
	} else {
		s = tok_asym_scale(lo, hi);
		z = tok_asym_zero(lo, s);
	}
	float inv = DIV(1.0f, s);
	int acc = 0;
	for (int j = lane; j < kp; j += 32) {
		int q = 0;
		if (j < k) {
			q = sym ? tok_sym_code(row[j], inv, qmin) : tok_asym_code(row[j], inv, z);
		}
		ur[j] = (u8)q;
		acc += q;
	}
	acc = warp_sum_i(acc);
	if (lane == 0) {
		scale[r] = s;
		zero[r] = z;
		sum[r] = acc;
	}
}

// qat_gemm_channel: per-channel int4/int8 weights x per-token 8-bit
// activations (kernels.GemmChannel: the w4a8 and w8a8 recipes, QQQ's
// per-channel layout), one warp per output. Weight rows are kpw codes
// (int8 bytes, or int4 as nibble pairs: code j in the low nibble of byte
// j/2 for even j, + 8), activation rows kpx bytes; both zero-padded past k
// to a multiple of 32. dp4a needs signed bytes on both sides, so the
// activations enter as u - 128 and the product is corrected exactly:
// sum w (u - z) = sum w (u - 128) + (128 - z) sum w.
__global__ void qat_gemm_channel(float *y, const u8 *w, const float *wscale, const int *wsum, const u8 *u,
                                 const float *xscale, const float *xzero, int rows, int kp, int ncols, int bits) {
	long o = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (o >= (long)rows * ncols) {
		return;
	}
	int r = (int)(o % rows), c = (int)(o / rows);
	const u8 *ur = u + (long)c * kp;
	long long d = 0;
	if (bits == 8) {
		const u8 *wr = w + (long)r * kp;
		for (int j = 4 * lane; j < kp; j += 128) {
			d += __dp4a(load4(wr + j), (int)(load4(ur + j) ^ 0x80808080), 0);
		}
	} else {
		const u8 *wr = w + (long)r * (kp / 2);
		for (int j = 8 * lane; j < kp; j += 256) {
			int pw = load4(wr + j / 2);
			int even = __vsub4(pw & 0x0f0f0f0f, 0x08080808);
			int odd = __vsub4((pw >> 4) & 0x0f0f0f0f, 0x08080808);
			u32 a = (u32)load4(ur + j) ^ 0x80808080u, b = (u32)load4(ur + j + 4) ^ 0x80808080u;
			d += __dp4a(even, (int)__byte_perm(a, b, 0x6420), 0);
			d += __dp4a(odd, (int)__byte_perm(a, b, 0x7531), 0);
		}
	}
	for (int off = 16; off > 0; off >>= 1) {
		d += __shfl_xor_sync(FULL, d, off);
	}
	if (lane == 0) {
		d += (long long)(128 - (int)xzero[c]) * wsum[r];
		y[(long)c * rows + r] = channel_out(wscale[r], xscale[c], d);
	}
}

// Training kernels (train.h): the fp32 Llama step's ops other than the
// products and attention.

static __device__ __forceinline__ float warp_sum_f(float v) {
	for (int o = 16; o > 0; o >>= 1) {
		v += __shfl_xor_sync(FULL, v, o);
	}
	return v;
}

// qat_rmsnorm_fwd: y = x * rstd * w per row of d, one warp a row.
__global__ void qat_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, long rows, int d, float eps) {
	long r = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (r >= rows) {
		return;
	}
	const float *xr = x + r * d;
	float ss = 0;
	for (int j = lane; j < d; j += 32) {
		ss = ADD(ss, MUL(xr[j], xr[j]));
	}
	float rs = rms_rstd(warp_sum_f(ss), d, eps);
	for (int j = lane; j < d; j += 32) {
		y[r * d + j] = rms_out(xr[j], rs, w[j]);
	}
	if (lane == 0) {
		rstd[r] = rs;
	}
}

// qat_rmsnorm_dx: dx += rstd*(dy*w - x*c) per row, one warp a row.
__global__ void qat_rmsnorm_dx(float *dx, const float *dy, const float *x, const float *w, const float *rstd, long rows,
                               int d) {
	long r = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (r >= rows) {
		return;
	}
	const float *xr = x + r * d, *gr = dy + r * d;
	float dot = 0;
	for (int j = lane; j < d; j += 32) {
		dot = ADD(dot, MUL(MUL(gr[j], w[j]), xr[j]));
	}
	float rs = rstd[r], c = rms_c(warp_sum_f(dot), rs, d);
	for (int j = lane; j < d; j += 32) {
		dx[r * d + j] = rms_dx(dx[r * d + j], rs, gr[j], w[j], xr[j], c);
	}
}

// qat_rmsnorm_dw: dw[j] += sum over rows of dy*x*rstd, one thread a
// column adding the rows in order, as the CPU loop does (exact).
__global__ void qat_rmsnorm_dw(float *dw, const float *dy, const float *x, const float *rstd, long rows, int d) {
	long j = gtid();
	if (j >= d) {
		return;
	}
	float acc = dw[j];
	for (long r = 0; r < rows; r++) {
		acc = ADD(acc, MUL(MUL(dy[r * d + j], x[r * d + j]), rstd[r]));
	}
	dw[j] = acc;
}

// qat_rope: rotary embedding of rows x heads x hd values (kernels' RoPE:
// pairs (j, j + hd/2), row r at position pos[r]); sign -1 is the backward;
// acc adds into y.
__global__ void qat_rope(float *y, const float *x, const int *pos, const float *cosT, const float *sinT, long rows,
                         int heads, int hd, float sign, int acc) {
	int h2 = hd / 2;
	long n = rows * heads * h2;
	for (long i = gtid(); i < n; i += gstride()) {
		long rh = i / h2;
		int j = (int)(i % h2);
		long r = rh / heads;
		long o = rh * hd;
		rope_pair(y, x, o, j, h2, (long)pos[r] * h2 + j, cosT, sinT, sign, acc);
	}
}

// qat_swiglu_fwd: y = silu(g) * u.
__global__ void qat_swiglu_fwd(float *y, const float *g, const float *u, long n) {
	for (long i = gtid(); i < n; i += gstride()) {
		y[i] = swiglu_out(g[i], u[i]);
	}
}

// qat_swiglu_bwd: dg += dy*u*s*(1 + g*(1-s)), du += dy*g*s.
__global__ void qat_swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, long n) {
	for (long i = gtid(); i < n; i += gstride()) {
		swiglu_grads(&dg[i], &du[i], dy[i], g[i], u[i]);
	}
}

// qat_cross_entropy: per row of n logits, loss = logsumexp - x[t] and dx =
// gscale*(softmax - onehot(t)); a negative target gives 0 and 0. One block
// of 256 threads a row.
__global__ void qat_cross_entropy(const float *x, const int *t, float *dx, float *loss, long rows, int n, float gscale) {
	__shared__ float red[32];
	long r = blockIdx.x;
	if (r >= rows) {
		return;
	}
	const float *xr = x + r * n;
	float *g = dx + r * n;
	int tr = t[r];
	if (tr < 0) {
		for (int j = threadIdx.x; j < n; j += blockDim.x) {
			g[j] = 0;
		}
		if (threadIdx.x == 0) {
			loss[r] = 0;
		}
		return;
	}
	int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
	float mx = xr[0];
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		mx = gmax(mx, xr[j]);
	}
	mx = warp_max(mx);
	if (lane == 0) {
		red[wid] = mx;
	}
	__syncthreads();
	mx = red[0];
	for (int k = 1; k < nw; k++) {
		mx = gmax(mx, red[k]);
	}
	__syncthreads();
	float sum = 0;
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		float e = exp32(SUB(xr[j], mx));
		g[j] = e;
		sum = ADD(sum, e);
	}
	sum = warp_sum_f(sum);
	if (lane == 0) {
		red[wid] = sum;
	}
	__syncthreads();
	sum = red[0];
	for (int k = 1; k < nw; k++) {
		sum = ADD(sum, red[k]);
	}
	float c = DIV(gscale, sum);
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		g[j] = MUL(g[j], c);
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		g[tr] = SUB(g[tr], gscale);
		loss[r] = SUB(ADD(mx, log32(sum)), xr[tr]);
	}
}

// qat_adamw: kernels' fp32 AdamW over n values.
__global__ void qat_adamw(float *p, const float *g, float *m, float *v, long n, float step, float decay, float b1,
                          float b2, float eps, float isb2) {
	for (long i = gtid(); i < n; i += gstride()) {
		p[i] = adamw32(p[i], g[i], &m[i], &v[i], step, decay, b1, b2, eps, isb2);
	}
}

// qat_add: y = a + b.
__global__ void qat_add(float *y, const float *a, const float *b, long n) {
	for (long i = gtid(); i < n; i += gstride()) {
		y[i] = ADD(a[i], b[i]);
	}
}

// qat_axpy: y += a*x.
__global__ void qat_axpy(float *y, const float *x, float a, long n) {
	for (long i = gtid(); i < n; i += gstride()) {
		y[i] = ADD(y[i], MUL(a, x[i]));
	}
}

// qat_embedding_fwd: row r of y is row ids[r] of the table w (d wide).
__global__ void qat_embedding_fwd(float *y, const float *w, const int *ids, long rows, int d) {
	long n = rows * d;
	for (long i = gtid(); i < n; i += gstride()) {
		y[i] = w[(long)ids[i / d] * d + i % d];
	}
}

// qat_embedding_bwd: dw[ids[r]] += dy[r], one thread a column adding the
// rows in order (the CPU's order: exact, and no atomics).
__global__ void qat_embedding_bwd(float *dw, const float *dy, const int *ids, long rows, int d) {
	long j = gtid();
	if (j >= d) {
		return;
	}
	for (long r = 0; r < rows; r++) {
		long o = (long)ids[r] * d + j;
		dw[o] = ADD(dw[o], MUL(1.0f, dy[r * d + j]));
	}
}

// qat_sgemm: C = alpha op(A) op(B) + beta C, row-major (kernels.Sgemm's
// arguments), op(A) m x k, op(B) k x n. Tiles of 64 x 64 outputs, 16 of k
// at a time through shared memory; 256 threads, 4 x 4 outputs each. beta
// 0 never reads C. A plain kernel (no tensor cores): the step's products
// until cuBLAS is loaded.
#define GT 64
#define GK 16
__global__ void qat_sgemm(int tA, int tB, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                          int ldb, float beta, float *c, int ldc) {
	__shared__ float As[GK][GT + 4];
	__shared__ float Bs[GK][GT + 4];
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	int row0 = blockIdx.y * GT, col0 = blockIdx.x * GT;
	float acc[4][4];
	for (int i = 0; i < 4; i++) {
		for (int j = 0; j < 4; j++) {
			acc[i][j] = 0;
		}
	}
	for (int p0 = 0; p0 < k; p0 += GK) {
		for (int l = threadIdx.x; l < GT * GK; l += 256) {
			// p fastest for row-major A, i fastest for a transposed one
			int i = tA ? l % GT : l / GK, p = tA ? l / GT : l % GK;
			int gi = row0 + i, gp = p0 + p;
			float v = 0;
			if (gi < m && gp < k) {
				v = tA ? a[(long)gp * lda + gi] : a[(long)gi * lda + gp];
			}
			As[p][i] = v;
		}
		for (int l = threadIdx.x; l < GK * GT; l += 256) {
			int j = tB ? l / GK : l % GT, p = tB ? l % GK : l / GT;
			int gp = p0 + p, gj = col0 + j;
			float v = 0;
			if (gp < k && gj < n) {
				v = tB ? b[(long)gj * ldb + gp] : b[(long)gp * ldb + gj];
			}
			Bs[p][j] = v;
		}
		__syncthreads();
		for (int p = 0; p < GK; p++) {
			float ar[4], br[4];
			for (int i = 0; i < 4; i++) {
				ar[i] = As[p][ty + 16 * i];
				br[i] = Bs[p][tx + 16 * i];
			}
			for (int i = 0; i < 4; i++) {
				for (int j = 0; j < 4; j++) {
					acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
				}
			}
		}
		__syncthreads();
	}
	for (int i = 0; i < 4; i++) {
		for (int j = 0; j < 4; j++) {
			int gi = row0 + ty + 16 * i, gj = col0 + tx + 16 * j;
			if (gi < m && gj < n) {
				float *o = c + (long)gi * ldc + gj;
				*o = beta == 0 ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *o;
			}
		}
	}
}

// Causal attention with grouped-query heads (kernels.Attn's layout: q
// (B*T, heads*hd), k and v (B*T, kvheads*hd), query head h reads kv head
// h / (heads/kvheads)), one warp per query row (forward, dQ) or key row
// (dK, dV). Nothing T x T is stored: the forward keeps each row's
// log-sum-exp, and the backward recomputes the probabilities from it, as
// flash attention does. The warp's scores live in dynamic shared memory
// (T floats a warp, T <= 1024). Plain loops: correctness first.

// qat_attn_fwd: out and lse (B*heads*T) from q, k, v.
__global__ void qat_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                             int heads, int kvheads, int hd, float scale) {
	extern __shared__ float sh[];
	long w = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (w >= (long)B * heads * T) {
		return;
	}
	float *s = sh + (threadIdx.x >> 5) * T;
	int i = (int)(w % T), h = (int)(w / T % heads), b = (int)(w / T / heads);
	int dq = heads * hd, dk = kvheads * hd, kh = h / (heads / kvheads);
	const float *qi = q + ((long)b * T + i) * dq + h * hd;
	float mx = -INFINITY;
	for (int j = lane; j <= i; j += 32) {
		const float *kj = k + ((long)b * T + j) * dk + kh * hd;
		float d = 0;
		for (int e = 0; e < hd; e++) {
			d = fmaf(qi[e], kj[e], d);
		}
		s[j] = d * scale;
		mx = fmaxf(mx, s[j]);
	}
	mx = warp_max(mx);
	float sum = 0;
	for (int j = lane; j <= i; j += 32) {
		s[j] = expf(s[j] - mx);
		sum += s[j];
	}
	sum = warp_sum_f(sum);
	__syncwarp();
	float inv = 1.0f / sum;
	float *oi = out + ((long)b * T + i) * dq + h * hd;
	for (int e = lane; e < hd; e += 32) {
		float acc = 0;
		for (int j = 0; j <= i; j++) {
			acc = fmaf(s[j], v[((long)b * T + j) * dk + kh * hd + e], acc);
		}
		oi[e] = acc * inv;
	}
	if (lane == 0) {
		lse[w] = mx + logf(sum);
	}
}

// attn_p recomputes probability p_ij from q_i, k_j and row i's lse.
static __device__ __forceinline__ float attn_dot(const float *x, const float *y, int hd, int lane) {
	float d = 0;
	for (int e = lane; e < hd; e += 32) {
		d = fmaf(x[e], y[e], d);
	}
	return warp_sum_f(d);
}

// qat_attn_delta: delta (B*heads*T) = rowsum(dout * out), the softmax
// backward's per-row term.
__global__ void qat_attn_delta(float *delta, const float *dout, const float *out, int B, int T, int heads, int hd) {
	long w = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (w >= (long)B * heads * T) {
		return;
	}
	int i = (int)(w % T), h = (int)(w / T % heads), b = (int)(w / T / heads);
	long o = ((long)b * T + i) * heads * hd + h * hd;
	float d = attn_dot(dout + o, out + o, hd, lane);
	if (lane == 0) {
		delta[w] = d;
	}
}

// qat_attn_dq: dQ_i (written, or added when acc) = sum_j dS_ij k_j with
// dS_ij = scale p_ij (dO_i . v_j - delta_i), one warp a query row.
__global__ void qat_attn_dq(float *dQ, const float *dout, const float *q, const float *k, const float *v,
                            const float *lse, const float *delta, int B, int T, int heads, int kvheads, int hd,
                            float scale, int acc) {
	long w = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (w >= (long)B * heads * T) {
		return;
	}
	int i = (int)(w % T), h = (int)(w / T % heads), b = (int)(w / T / heads);
	int dq = heads * hd, dk = kvheads * hd, kh = h / (heads / kvheads);
	long qo = ((long)b * T + i) * dq + h * hd;
	float g[4] = {0, 0, 0, 0}; // hd <= 128: four dimensions a lane
	for (int j = 0; j <= i; j++) {
		long ko = ((long)b * T + j) * dk + kh * hd;
		float p = expf(attn_dot(q + qo, k + ko, hd, lane) * scale - lse[w]);
		float ds = scale * p * (attn_dot(dout + qo, v + ko, hd, lane) - delta[w]);
		for (int e = lane, x = 0; e < hd; e += 32, x++) {
			g[x] = fmaf(ds, k[ko + e], g[x]);
		}
	}
	for (int e = lane, x = 0; e < hd; e += 32, x++) {
		dQ[qo + e] = acc ? dQ[qo + e] + g[x] : g[x];
	}
}

// qat_attn_dkv: dK_j and dV_j (written, or added when acc) over the query
// heads of kv head kh and the queries i >= j: dV_j = sum p_ij dO_i, dK_j =
// sum dS_ij q_i, one warp a key row.
__global__ void qat_attn_dkv(float *dK, float *dV, const float *dout, const float *q, const float *k, const float *v,
                             const float *lse, const float *delta, int B, int T, int heads, int kvheads, int hd,
                             float scale, int accK, int accV) {
	long w = gtid() >> 5;
	int lane = threadIdx.x & 31;
	if (w >= (long)B * kvheads * T) {
		return;
	}
	int j = (int)(w % T), kh = (int)(w / T % kvheads), b = (int)(w / T / kvheads);
	int dq = heads * hd, dk = kvheads * hd, group = heads / kvheads;
	long ko = ((long)b * T + j) * dk + kh * hd;
	float gk[4] = {0, 0, 0, 0}, gv[4] = {0, 0, 0, 0};
	for (int h = kh * group; h < (kh + 1) * group; h++) {
		for (int i = j; i < T; i++) {
			long qo = ((long)b * T + i) * dq + h * hd;
			long row = ((long)b * heads + h) * T + i;
			float p = expf(attn_dot(q + qo, k + ko, hd, lane) * scale - lse[row]);
			float ds = scale * p * (attn_dot(dout + qo, v + ko, hd, lane) - delta[row]);
			for (int e = lane, x = 0; e < hd; e += 32, x++) {
				gv[x] = fmaf(p, dout[qo + e], gv[x]);
				gk[x] = fmaf(ds, q[qo + e], gk[x]);
			}
		}
	}
	for (int e = lane, x = 0; e < hd; e += 32, x++) {
		dK[ko + e] = accK ? dK[ko + e] + gk[x] : gk[x];
		dV[ko + e] = accV ? dV[ko + e] + gv[x] : gv[x];
	}
}

// qat_dyn_scales: each group's dynamic scale and zero point from its
// range (lo, hi; hi alone, the absmax, for kinds 0 and 2). scale may be
// hi: each group is read before it is written.
__global__ void qat_dyn_scales(float *scale, float *zero, const float *lo, const float *hi, long ngroups, int kind,
                               float qmin, float qmax, float fmax) {
	for (long k = gtid(); k < ngroups; k += gstride()) {
		float l = kind == 1 ? lo[k] : 0, h = hi[k], s, z;
		dyn_scale(kind, l, h, qmin, qmax, fmax, &s, &z);
		scale[k] = s;
		zero[k] = z;
	}
}

} // extern "C"
