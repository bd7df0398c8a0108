// The arithmetic of the training kernels (the fp32 Llama step: RMSNorm,
// RoPE, SwiGLU, cross-entropy, AdamW, embedding), one function per value
// or row step, compiled for the device (kernels.cu) and the host (host.c)
// like quant.h, whose macros it uses. Their CPU twins are kernels.Generic's
// loops. Exact where the CPU loop's operations can be repeated in its
// order (RoPE, AdamW, residual adds, RMSNorm's weight gradient, the
// embedding); where a row is reduced by a warp (sums of squares, softmax
// sums) only the summation order differs; exp and log are taken in double
// and rounded to float, as Go's math.Exp(float64(x)) is.
#ifndef QAT_TRAIN_H
#define QAT_TRAIN_H

#include "quant.h"

// exp32 is kernels' exp32: float32(math.Exp(float64(x))).
QD float exp32(float x) { return (float)exp((double)x); }

// log32 is float32(math.Log(float64(x))).
QD float log32(float x) { return (float)log((double)x); }

// rms_rstd is RMSNorm's 1/sqrt(ss/d + eps), the square root and division
// in double as the CPU loop takes them.
QD float rms_rstd(float ss, int d, float eps) { return (float)(1.0 / sqrt((double)ADD(DIV(ss, (float)d), eps))); }

// rms_out is one output of RMSNorm: x * rstd * w.
QD float rms_out(float x, float rs, float w) { return MUL(MUL(x, rs), w); }

// rms_dx is one input gradient of RMSNorm added to dx: rs*(dy*w - x*c),
// c = dot(dy*w, x) * rs^2 / d.
QD float rms_dx(float dx, float rs, float dy, float w, float x, float c) {
	return ADD(dx, MUL(rs, SUB(MUL(dy, w), MUL(x, c))));
}

// rms_c is the row constant of RMSNorm's backward.
QD float rms_c(float dot, float rs, int d) { return DIV(MUL(MUL(dot, rs), rs), (float)d); }

// rope_pair rotates pair j of the head at x + o (half width h2), writing
// y + o, by table entry t: a*c - sign*b*s and b*c + sign*a*s for (a, b) =
// (x[o+j], x[o+j+h2]), sign -1 for the inverse rotation (RoPE's backward);
// acc adds into y.
QD void rope_pair(float *y, const float *x, long o, int j, int h2, long t, const float *cosT, const float *sinT,
                  float sign, int acc) {
	float a = x[o + j], b = x[o + j + h2], c = cosT[t], s = sinT[t];
	float v0 = SUB(MUL(a, c), MUL(MUL(sign, b), s));
	float v1 = ADD(MUL(b, c), MUL(MUL(sign, a), s));
	if (acc) {
		v0 = ADD(y[o + j], v0);
		v1 = ADD(y[o + j + h2], v1);
	}
	y[o + j] = v0;
	y[o + j + h2] = v1;
}

// sigmoid32 is 1/(1 + exp32(-g)).
QD float sigmoid32(float g) { return DIV(1.0f, ADD(1.0f, exp32(-g))); }

// swiglu_out is silu(g)*u: g*s*u.
QD float swiglu_out(float g, float u) { return MUL(MUL(g, sigmoid32(g)), u); }

// swiglu_grads adds SwiGLU's gradients: dg += dy*u*s*(1 + g*(1-s)), du +=
// dy*g*s.
QD void swiglu_grads(float *dg, float *du, float dy, float g, float u) {
	float s = sigmoid32(g);
	*dg = ADD(*dg, MUL(MUL(MUL(dy, u), s), ADD(1.0f, MUL(g, SUB(1.0f, s)))));
	*du = ADD(*du, MUL(MUL(dy, g), s));
}

// adamw32 is one value of kernels' fp32 AdamW (PyTorch's formulation):
// the moments m and v move in place, and the new parameter is returned.
QD float adamw32(float p, float g, float *m, float *v, float step, float decay, float b1, float b2, float eps,
                 float isb2) {
	float mi = ADD(MUL(b1, *m), MUL(SUB(1.0f, b1), g));
	float vi = ADD(MUL(b2, *v), MUL(MUL(SUB(1.0f, b2), g), g));
	*m = mi;
	*v = vi;
	return SUB(MUL(p, decay), DIV(MUL(step, mi), ADD(MUL(SQRT(vi), isb2), eps)));
}

#endif
