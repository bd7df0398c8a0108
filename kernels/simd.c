//go:build cgo && !purego

#include <stdint.h>
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
