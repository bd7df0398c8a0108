// Declarations of host.c, the host build of the device arithmetic.
#include <stdint.h>

void host_fq_affine(float *y, uint8_t *mask, const float *x, const float *scale, const float *zero, long n, int group,
                    float qmin, float qmax);
void host_fq_lsq(float *y, uint8_t *mask, const float *x, const float *scale, long n, int group, float qn, float qp);
void host_lsq_grad(float *dx, float *ds, const float *dy, const float *x, const float *scale, long n, int group,
                   float qn, float qp, float gscale);
void host_fq_q4_0(float *y, uint8_t *mask, const float *x, long nblocks);
void host_fq_q8_0(float *y, uint8_t *mask, const float *x, long nblocks);
void host_quantize_q8(float *dx, float *c4, float *c8, int8_t *qx, const float *x, long nblocks);
void host_gemm_packed(float *y, const uint8_t *w, const float *dx, const float *c4, const int8_t *qx, int rows, int nb,
                      int ncols, int q4);
void host_adamw8(float *p, const float *g, uint8_t *m, uint8_t *v, float *mAbs, float *vAbs, const float *mVals,
                 const int *mBucket, const float *mBound, int mZero, const float *vVals, const int *vBucket,
                 const float *vBound, int vZero, long n, int block, float step, float decay, float b1, float b2,
                 float eps, float isb2, float *scratch);
void host_fq_fp(float *y, uint8_t *mask, const float *x, const float *scale, long n, int group, int man, int bias,
                float fmax);
void host_quantize_tokens(uint8_t *u, float *scale, float *zero, int32_t *sum, const float *x, long n, int k, int kp,
                          int sym, float qmin);
void host_gemm_channel(float *y, const uint8_t *w, const float *wscale, const int32_t *wsum, const uint8_t *u,
                       const float *xscale, const float *xzero, int rows, int kp, int ncols, int bits);
void host_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, long rows, int d, float eps);
void host_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                      long rows, int d);
void host_rope(float *y, const float *x, const int *pos, const float *cosT, const float *sinT, long rows, int heads,
               int hd, float sign, int acc);
void host_swiglu_fwd(float *y, const float *g, const float *u, long n);
void host_swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, long n);
void host_cross_entropy(const float *x, const int *t, float *dx, float *loss, long rows, int n, float gscale);
void host_adamw(float *p, const float *g, float *m, float *v, long n, float step, float decay, float b1, float b2,
                float eps, float isb2);
void host_dyn_scales(float *scale, float *zero, const float *lo, const float *hi, long ngroups, int kind, float qmin,
                     float qmax, float fmax);
uint16_t host_f16_bits(float f);
float host_f16_float(uint16_t h);
