// The host build of the device arithmetic (quant.h), in the CPU loops'
// order: what host.go exposes to the tests, which compare it bit for bit
// with package kernels. No multiply-add may be fused (cgo refuses
// -ffp-contract=off as a flag, hence the pragma; plain x86-64 code has no
// FMA instruction anyway).
#pragma GCC optimize("fp-contract=off")
#include "host.h"
#include "quant.h"
#include "train.h"

void host_fq_affine(float *y, uint8_t *mask, const float *x, const float *scale, const float *zero, long n, int group,
                    float qmin, float qmax) {
	for (long k = 0; k < n / group; k++) {
		float s = scale[k], inv = DIV(1.0f, s);
		for (long i = k * group; i < (k + 1) * group; i++) {
			y[i] = fq_affine(x[i], s, inv, zero[k], qmin, qmax, &mask[i]);
		}
	}
}

void host_fq_lsq(float *y, uint8_t *mask, const float *x, const float *scale, long n, int group, float qn, float qp) {
	for (long i = 0; i < n; i++) {
		y[i] = fq_lsq(x[i], scale[i / group], qn, qp, &mask[i]);
	}
}

void host_lsq_grad(float *dx, float *ds, const float *dy, const float *x, const float *scale, long n, int group,
                   float qn, float qp, float gscale) {
	for (long k = 0; k < n / group; k++) {
		double acc = 0;
		for (long i = k * group; i < (k + 1) * group; i++) {
			int inside;
			float e = lsq_err(x[i], scale[k], qn, qp, &inside);
			if (inside && dx) {
				dx[i] = ADD(dx[i], dy[i]);
			}
			acc += (double)MUL(dy[i], e);
		}
		ds[k] = ADD(ds[k], MUL(gscale, (float)acc));
	}
}

void host_fq_q4_0(float *y, uint8_t *mask, const float *x, long nblocks) {
	for (long b = 0; b < nblocks; b++) {
		const float *v = x + 32 * b;
		float amax = 0, m = 0;
		for (int j = 0; j < 32; j++) {
			float a = fabsf(v[j]);
			if (amax < a) {
				amax = a;
				m = v[j];
			}
		}
		float d = q4_0_scale(m), id = inv_or_zero(d), dh = f16_float(f16_bits(d));
		for (int j = 0; j < 32; j++) {
			int q = q4_0_code(v[j], id);
			uint8_t mk = 1;
			if (q > 15) {
				q = 15;
				mk = 0;
			}
			y[32 * b + j] = MUL((float)(q - 8), dh);
			mask[32 * b + j] = mk;
		}
	}
}

static float block_absmax(const float *v) {
	float a = 0;
	for (int j = 0; j < 32; j++) {
		a = gmax(a, fabsf(v[j]));
	}
	return a;
}

void host_fq_q8_0(float *y, uint8_t *mask, const float *x, long nblocks) {
	for (long b = 0; b < nblocks; b++) {
		float d = DIV(block_absmax(x + 32 * b), 127.0f), id = inv_or_zero(d), dh = f16_float(f16_bits(d));
		for (int j = 0; j < 32; j++) {
			y[32 * b + j] = MUL((float)q8_0_code(x[32 * b + j], id), dh);
			mask[32 * b + j] = 1;
		}
	}
}

void host_quantize_q8(float *dx, float *c4, float *c8, int8_t *qx, const float *x, long nblocks) {
	for (long b = 0; b < nblocks; b++) {
		float d = DIV(block_absmax(x + 32 * b), 127.0f), id = inv_or_zero(d);
		int s = 0;
		for (int j = 0; j < 32; j++) {
			int q = q8_act_code(x[32 * b + j], id);
			qx[32 * b + j] = (int8_t)q;
			s += q;
		}
		dx[b] = d;
		c4[b] = q8_act_corr(8.0f, s, d);
		c8[b] = q8_act_corr(128.0f, s, d);
	}
}

void host_gemm_packed(float *y, const uint8_t *w, const float *dx, const float *c4, const int8_t *qx, int rows, int nb,
                      int ncols, int q4) {
	int bw = q4 ? 18 : 34;
	for (int c = 0; c < ncols; c++) {
		for (int r = 0; r < rows; r++) {
			double sum = 0;
			for (int b = 0; b < nb; b++) {
				const uint8_t *p = w + ((long)r * nb + b) * bw;
				const int8_t *q = qx + ((long)c * nb + b) * 32;
				int dot = 0;
				for (int j = 0; j < 16 && q4; j++) {
					dot += (p[2 + j] & 15) * q[j] + (p[2 + j] >> 4) * q[16 + j];
				}
				for (int j = 0; j < 32 && !q4; j++) {
					dot += (int8_t)p[2 + j] * q[j];
				}
				long cb = (long)c * nb + b;
				sum = packed_block_add(sum, dot, f16_float((uint16_t)(p[0] | p[1] << 8)), dx[cb], c4[cb], q4);
			}
			y[(long)c * rows + r] = (float)sum;
		}
	}
}

void host_adamw8(float *p, const float *g, uint8_t *m, uint8_t *v, float *mAbs, float *vAbs, const float *mVals,
                 const int *mBucket, const float *mBound, int mZero, const float *vVals, const int *vBucket,
                 const float *vBound, int vZero, long n, int block, float step, float decay, float b1, float b2,
                 float eps, float isb2, float *scratch) {
	float *mb = scratch, *vb = scratch + block;
	for (long k = 0; k * block < n; k++) {
		long lo = k * block, hi = lo + block < n ? lo + block : n;
		float nm = 0, nv = 0;
		for (long i = lo; i < hi; i++) {
			float mi, vi;
			p[i] = adam_step(p[i], g[i], mVals[m[i]], mAbs[k], vVals[v[i]], vAbs[k], step, decay, b1, b2, eps, isb2,
			                 &mi, &vi);
			mb[i - lo] = mi;
			vb[i - lo] = vi;
			nm = gmax(nm, fabsf(mi));
			nv = gmax(nv, vi);
		}
		mAbs[k] = nm == 0 ? 1 : nm;
		vAbs[k] = nv == 0 ? 1 : nv;
		float im = DIV(1.0f, mAbs[k]), iv = DIV(1.0f, vAbs[k]);
		for (long i = lo; i < hi; i++) {
			m[i] = map8_code(MUL(mb[i - lo], im), mBucket, mBound, mZero);
			v[i] = map8_code(MUL(vb[i - lo], iv), vBucket, vBound, vZero);
		}
	}
}

void host_fq_fp(float *y, uint8_t *mask, const float *x, const float *scale, long n, int group, int man, int bias,
                float fmax) {
	for (long i = 0; i < n; i++) {
		y[i] = fq_fp(x[i], scale[i / group], man, bias, fmax, &mask[i]);
	}
}

void host_quantize_tokens(uint8_t *u, float *scale, float *zero, int32_t *sum, const float *x, long n, int k, int kp,
                          int sym, float qmin) {
	for (long r = 0; r < n; r++) {
		const float *row = x + r * k;
		float lo = 0, hi = 0;
		for (int j = 0; j < k; j++) {
			if (sym) {
				hi = gmax(hi, fabsf(row[j]));
			} else {
				lo = gmin(lo, row[j]);
				hi = gmax(hi, row[j]);
			}
		}
		float s = sym ? tok_sym_scale(hi, qmin) : tok_asym_scale(lo, hi);
		float z = sym ? 128 : tok_asym_zero(lo, s), inv = DIV(1.0f, s);
		int32_t acc = 0;
		for (int j = 0; j < kp; j++) {
			int q = j >= k ? 0 : sym ? tok_sym_code(row[j], inv, qmin) : tok_asym_code(row[j], inv, z);
			u[r * kp + j] = (uint8_t)q;
			acc += q;
		}
		scale[r] = s;
		zero[r] = z;
		sum[r] = acc;
	}
}

void host_gemm_channel(float *y, const uint8_t *w, const float *wscale, const int32_t *wsum, const uint8_t *u,
                       const float *xscale, const float *xzero, int rows, int kp, int ncols, int bits) {
	for (int c = 0; c < ncols; c++) {
		for (int r = 0; r < rows; r++) {
			long long d = 0;
			for (int j = 0; j < kp; j++) {
				int q = bits == 8 ? (int8_t)w[(long)r * kp + j]
				                  : ((w[(long)r * (kp / 2) + j / 2] >> (4 * (j & 1))) & 15) - 8;
				d += (long long)q * u[(long)c * kp + j];
			}
			d -= (long long)xzero[c] * wsum[r];
			y[(long)c * rows + r] = channel_out(wscale[r], xscale[c], d);
		}
	}
}

// The training kernels in the CPU loops' order (kernels.Generic).

void host_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, long rows, int d, float eps) {
	for (long r = 0; r < rows; r++) {
		float ss = 0;
		for (int j = 0; j < d; j++) {
			ss = ADD(ss, MUL(x[r * d + j], x[r * d + j]));
		}
		float rs = rms_rstd(ss, d, eps);
		rstd[r] = rs;
		for (int j = 0; j < d; j++) {
			y[r * d + j] = rms_out(x[r * d + j], rs, w[j]);
		}
	}
}

void host_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                      long rows, int d) {
	for (long r = 0; r < rows; r++) {
		const float *xr = x + r * d, *gr = dy + r * d;
		float dot = 0;
		for (int j = 0; j < d; j++) {
			dot = ADD(dot, MUL(MUL(gr[j], w[j]), xr[j]));
		}
		float rs = rstd[r], c = rms_c(dot, rs, d);
		for (int j = 0; j < d; j++) {
			dx[r * d + j] = rms_dx(dx[r * d + j], rs, gr[j], w[j], xr[j], c);
			dw[j] = ADD(dw[j], MUL(MUL(gr[j], xr[j]), rs));
		}
	}
}

void host_rope(float *y, const float *x, const int *pos, const float *cosT, const float *sinT, long rows, int heads,
               int hd, float sign, int acc) {
	int h2 = hd / 2;
	for (long r = 0; r < rows; r++) {
		for (int h = 0; h < heads; h++) {
			long o = (r * heads + h) * hd;
			for (int j = 0; j < h2; j++) {
				rope_pair(y, x, o, j, h2, (long)pos[r] * h2 + j, cosT, sinT, sign, acc);
			}
		}
	}
}

void host_swiglu_fwd(float *y, const float *g, const float *u, long n) {
	for (long i = 0; i < n; i++) {
		y[i] = swiglu_out(g[i], u[i]);
	}
}

void host_swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, long n) {
	for (long i = 0; i < n; i++) {
		swiglu_grads(&dg[i], &du[i], dy[i], g[i], u[i]);
	}
}

void host_cross_entropy(const float *x, const int *t, float *dx, float *loss, long rows, int n, float gscale) {
	for (long r = 0; r < rows; r++) {
		const float *xr = x + r * n;
		float *g = dx + r * n;
		if (t[r] < 0) {
			for (int j = 0; j < n; j++) {
				g[j] = 0;
			}
			loss[r] = 0;
			continue;
		}
		float mx = xr[0], sum = 0;
		for (int j = 0; j < n; j++) {
			mx = gmax(mx, xr[j]);
		}
		for (int j = 0; j < n; j++) {
			g[j] = exp32(SUB(xr[j], mx));
			sum = ADD(sum, g[j]);
		}
		float c = DIV(gscale, sum);
		for (int j = 0; j < n; j++) {
			g[j] = MUL(g[j], c);
		}
		g[t[r]] = SUB(g[t[r]], gscale);
		loss[r] = SUB(ADD(mx, log32(sum)), xr[t[r]]);
	}
}

void host_adamw(float *p, const float *g, float *m, float *v, long n, float step, float decay, float b1, float b2,
                float eps, float isb2) {
	for (long i = 0; i < n; i++) {
		p[i] = adamw32(p[i], g[i], &m[i], &v[i], step, decay, b1, b2, eps, isb2);
	}
}

void host_dyn_scales(float *scale, float *zero, const float *lo, const float *hi, long ngroups, int kind, float qmin,
                     float qmax, float fmax) {
	for (long k = 0; k < ngroups; k++) {
		float s, z;
		dyn_scale(kind, kind == 1 ? lo[k] : 0, hi[k], qmin, qmax, fmax, &s, &z);
		scale[k] = s;
		zero[k] = z;
	}
}

uint16_t host_f16_bits(float f) { return f16_bits(f); }
float host_f16_float(uint16_t h) { return f16_float(h); }
