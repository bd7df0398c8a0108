//go:build cgo && !purego

#include <stdint.h>
#include <immintrin.h>
#include "simd.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,avx2")
#define K(name) name##_avx512
#include "simd_body.h"
#undef K
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define K(name) name##_avx2
#include "simd_body.h"
#undef K
#pragma GCC pop_options

// tables (generated)
const kern_table kern_avx512 = {exp_inplace_avx512, causal_softmax_avx512, softmax_bwd_avx512, cross_entropy_avx512, rmsnorm_fwd_avx512, rmsnorm_bwd_avx512, swiglu_fwd_avx512, swiglu_bwd_avx512, silu_fwd_avx512, silu_bwd_avx512, rope_avx512, axpy_avx512, add_avx512, scale_avx512, adamw_avx512, sumsq_avx512, absmax_groups_avx512, minmax_groups_avx512, fq_affine_avx512, mask_grad_avx512, fq_lsq_avx512, lsq_grad_avx512, adamw8_avx512, adamwfp8_avx512, fq_q4_0_avx512};
const kern_table kern_avx2 = {exp_inplace_avx2, causal_softmax_avx2, softmax_bwd_avx2, cross_entropy_avx2, rmsnorm_fwd_avx2, rmsnorm_bwd_avx2, swiglu_fwd_avx2, swiglu_bwd_avx2, silu_fwd_avx2, silu_bwd_avx2, rope_avx2, axpy_avx2, add_avx2, scale_avx2, adamw_avx2, sumsq_avx2, absmax_groups_avx2, minmax_groups_avx2, fq_affine_avx2, mask_grad_avx2, fq_lsq_avx2, lsq_grad_avx2, adamw8_avx2, adamwfp8_avx2, fq_q4_0_avx2};
