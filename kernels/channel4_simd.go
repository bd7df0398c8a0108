//go:build cgo && !purego

package kernels

// #include <stdint.h>
// void gemm_ch4_vnni(const uint8_t *w, const float *sw, const int32_t *sumw, long g0, long g1, long nb, const uint8_t *u, long us, const float *sx, const float *zx, const int32_t *su, long n, float *y, long ldy);
// void gemm_ch4_avx2(const uint8_t *w, const float *sw, const int32_t *sumw, long g0, long g1, long nb, const uint8_t *u, long us, const float *sx, const float *zx, const int32_t *su, long n, float *y, long ldy);
import "C"

import "unsafe"

// gemmChannel4SIMD runs the W4A4 kernel of instruction set isa (2:
// AVX-512 VNNI, 1: AVX2); false for 0.
func gemmChannel4SIMD(isa int, w *ChannelInt, g0, g1 int, a *TokenU4, y []float32) bool {
	if isa == 0 || w.nb == 0 {
		return false // K = 0: nothing to point at; the Go loop writes the zeros
	}
	if g0 >= g1 || a.N == 0 {
		return true
	}
	wp := (*C.uint8_t)(unsafe.Pointer(&w.W[0]))
	up := (*C.uint8_t)(unsafe.Pointer(&a.U[0]))
	sumw, su := (*C.int32_t)(unsafe.Pointer(&w.Sum[0])), (*C.int32_t)(unsafe.Pointer(&a.Sum[0]))
	if isa == 2 {
		C.gemm_ch4_vnni(wp, fp(w.Scale), sumw, C.long(g0), C.long(g1), C.long(w.nb), up, C.long(a.KP), fp(a.Scale), fp(a.Zero), su, C.long(a.N), fp(y), C.long(w.Rows))
	} else {
		C.gemm_ch4_avx2(wp, fp(w.Scale), sumw, C.long(g0), C.long(g1), C.long(w.nb), up, C.long(a.KP), fp(a.Scale), fp(a.Zero), su, C.long(a.N), fp(y), C.long(w.Rows))
	}
	return true
}
