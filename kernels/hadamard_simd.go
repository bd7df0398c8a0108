//go:build cgo && !purego

package kernels

// void hadamard_avx512(float *x, long rows, long m, long p, const float *coef, float s, float *col);
import "C"

import "golang.org/x/sys/cpu"

// hadamardAVX512: the CPU runs hadamard.c's kernel.
var hadamardAVX512 = cpu.X86.HasAVX512F

// hadamardSIMD runs the AVX-512 kernel on the rows of x with the mixing
// coefficients coef (row a: output block a's; nil: none); false where it
// does not apply (no AVX-512, useSIMD off, blocks shorter than 16), for
// the Go loop.
func hadamardSIMD(h *Hadamard, x []float32, coef []float32) bool {
	if !useSIMD || !hadamardAVX512 || h.p < 16 {
		return false
	}
	rows, m := len(x)/h.N, h.m
	if rows == 0 {
		return true
	}
	if coef == nil {
		// no mixing: every block is a row of its own
		C.hadamard_avx512(fp(x), C.long(rows*m), 1, C.long(h.p), nil, C.float(h.scale), nil)
		return true
	}
	c := h.scratch(32 * m)
	defer h.pool.Put(c)
	C.hadamard_avx512(fp(x), C.long(rows), C.long(m), C.long(h.p), fp(coef), C.float(h.scale), fp(*c))
	return true
}

// hadamardKernel names the Hadamard kernel in use.
func hadamardKernel() string {
	if useSIMD && hadamardAVX512 {
		return "avx512"
	}
	return "go"
}
