//go:build cgo && !purego

package kernels

// #include <stdint.h>
// void q8_quant(const float *x, long nb, float *dx, float *corr4, float *corr8, int8_t *qx);
// void q8_quant_512(const float *x, long nb, float *dx, float *corr4, float *corr8, int8_t *qx);
// void gemm_vnni(const uint8_t *w, long r0, long r1, long nb, const uint8_t *act, long n, long cstride, float *y, long ldy, int fmt);
// void r4_prep(const int8_t *qx, const float *dx, long nb, uint8_t *xp);
// void gemm_r4_vnni(const uint8_t *w, const uint16_t *sc, long g0, long g1, long nb, const uint8_t *xp, long n, float *y, long ldy, int fmt);
// void r4q_prep(const uint8_t *buf, long stride, long nb, uint8_t *xq);
// void gemm_r4q_vnni(const uint8_t *w, const uint16_t *sc, long g0, long g1, long nb, const uint8_t *xq, long nq, float *y, long ldy, int fmt);
// void gemm_avx2(const uint8_t *w, long r0, long r1, long nb, const uint8_t *act, long n, long cstride, float *y, long ldy, int fmt);
// void gemm_chi_vnni(const uint8_t *w, const float *sw, const int32_t *sumw, long g0, long g1, long nb, const uint8_t *u, long us, const float *sx, const float *zx, const int32_t *su, long n, float *y, long ldy, int bits);
import "C"

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// packedISA is the packed-product kernel this CPU runs: 2 for AVX-512
// VNNI, 1 for AVX2, 0 for the Go loops.
var packedISA = func() int {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VNNI:
		return 2
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return 1
	}
	return 0
}()

// PackedKernel names the packed-product kernel in use.
func PackedKernel() string {
	if !useSIMD {
		return "go"
	}
	return [...]string{"go", "avx2", "avx512-vnni"}[packedISA]
}

func q8QuantSIMD(a *PackedQ8, c int, x []float32) bool {
	if packedISA == 0 || !useSIMD {
		return false
	}
	dx, c4, c8, qx := a.col(c)
	if packedISA == 2 {
		C.q8_quant_512(fp(x), C.long(a.NB), fp(dx), fp(c4), fp(c8), (*C.int8_t)(unsafe.Pointer(&qx[0])))
	} else {
		C.q8_quant(fp(x), C.long(a.NB), fp(dx), fp(c4), fp(c8), (*C.int8_t)(unsafe.Pointer(&qx[0])))
	}
	return true
}

func gemmPackedSIMD(f FormatID, w []byte, r0, r1 int, a *PackedQ8, y []float32, ldy int) bool {
	if packedISA == 0 || !useSIMD || r0 >= r1 {
		return packedISA != 0 && useSIMD
	}
	fmt := C.int(4)
	if f == Q8_0 {
		fmt = 8
	}
	wp := (*C.uint8_t)(unsafe.Pointer(&w[0]))
	ap := (*C.uint8_t)(unsafe.Pointer(&a.buf[0]))
	if packedISA == 2 {
		C.gemm_vnni(wp, C.long(r0), C.long(r1), C.long(a.NB), ap, C.long(a.N), C.long(a.stride()), fp(y), C.long(ldy), fmt)
	} else {
		C.gemm_avx2(wp, C.long(r0), C.long(r1), C.long(a.NB), ap, C.long(a.N), C.long(a.stride()), fp(y), C.long(ldy), fmt)
	}
	return true
}

// r4X and r4Q are the bytes of one prepared activation block of a column
// and of a quad of columns (R4X and R4Q in packed.c).
const (
	r4X = 80
	r4Q = 176
)

func r4Prep(a *PackedQ8, c int, xp []byte) {
	dx, _, _, qx := a.col(c)
	C.r4_prep((*C.int8_t)(unsafe.Pointer(&qx[0])), fp(dx), C.long(a.NB), (*C.uint8_t)(unsafe.Pointer(&xp[0])))
}

// r4qPrep prepares columns c..c+3.
func r4qPrep(a *PackedQ8, c int, xq []byte) {
	C.r4q_prep((*C.uint8_t)(unsafe.Pointer(&a.buf[c*a.stride()])), C.long(a.stride()), C.long(a.NB), (*C.uint8_t)(unsafe.Pointer(&xq[0])))
}

func gemmR4SIMD(w *R4, g0, g1 int, a *PackedQ8, y []float32) {
	fmt := C.int(4)
	if w.Format == Q8_0 {
		fmt = 8
	}
	nb, nq := w.K/32, a.N/4
	wp, sp := (*C.uint8_t)(unsafe.Pointer(&w.W[0])), (*C.uint16_t)(unsafe.Pointer(&w.Scales[0]))
	if nq > 0 {
		C.gemm_r4q_vnni(wp, sp, C.long(g0), C.long(g1), C.long(nb), (*C.uint8_t)(unsafe.Pointer(&a.prep[0])), C.long(nq), fp(y), C.long(w.Rows), fmt)
	}
	if rest := a.N - 4*nq; rest > 0 {
		C.gemm_r4_vnni(wp, sp, C.long(g0), C.long(g1), C.long(nb), (*C.uint8_t)(unsafe.Pointer(&a.prep[r4Q*nb*nq])), C.long(rest),
			fp(y[4*nq*w.Rows:]), C.long(w.Rows), fmt)
	}
}

func gemmChannelSIMD(w *ChannelInt, g0, g1 int, a *TokenU8, y []float32) bool {
	if packedISA != 2 || !useSIMD {
		return false
	}
	if g0 < g1 {
		C.gemm_chi_vnni((*C.uint8_t)(unsafe.Pointer(&w.W[0])), fp(w.Scale), (*C.int32_t)(unsafe.Pointer(&w.Sum[0])), C.long(g0), C.long(g1), C.long(w.nb),
			(*C.uint8_t)(unsafe.Pointer(&a.U[0])), C.long(a.KP), fp(a.Scale), fp(a.Zero), (*C.int32_t)(unsafe.Pointer(&a.Sum[0])), C.long(a.N), fp(y), C.long(w.Rows), C.int(w.Bits))
	}
	return true
}
