//go:build cgo && !purego

package kernels

// void hadamard_avx512(float *x, long rows, long m, long p, const float *coef, float s, float *col);
// void hadamard_avx2(float *x, long rows, long m, long p, const float *coef, float s, float *col);
// void hadamard_short_avx512(float *x, long rows, long m, long p, const float *coefT, float s, float *z);
// void hadamard_short_avx2(float *x, long rows, long m, long p, const float *coefT, float s, float *z);
import "C"

import "golang.org/x/sys/cpu"

// hadamardISA is the best Hadamard kernel of hadamard.c this CPU runs: 2
// AVX-512, 1 AVX2, 0 none.
var hadamardISA = func() int {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasFMA:
		return 2
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return 1
	}
	return 0
}()

// hadamardSIMD runs the best kernel on the rows of x with the mixing
// coefficients coef (row a: output block a's; nil: none); false where
// none applies (useSIMD off, no kernel, short blocks without mixing), for
// the Go loop.
func hadamardSIMD(h *Hadamard, x []float32, coef []float32) bool {
	return useSIMD && hadamardISASIMD(hadamardISA, h, x, coef)
}

// hadamardISASIMD runs the kernel of instruction set isa (2 AVX-512, 1
// AVX2): blocks of a vector or more (16 floats, 8), or shorter blocks with
// mixing (1376 = 344 x 4); false for shorter blocks without mixing (the
// block-diagonal transform of a size with a small power of two: a few
// scalar butterflies, left to the Go loop).
func hadamardISASIMD(isa int, h *Hadamard, x []float32, coef []float32) bool {
	if isa <= 0 || isa > hadamardISA {
		return false
	}
	vec := [...]int{0, 8, 16}[isa]
	if h.p < vec && coef == nil {
		return false
	}
	rows, m := len(x)/h.N, h.m
	if rows == 0 {
		return true
	}
	p, sc := C.long(h.p), C.float(h.scale)
	if coef == nil {
		// no mixing: every block is a row of its own
		if isa == 2 {
			C.hadamard_avx512(fp(x), C.long(rows*m), 1, p, nil, sc, nil)
		} else {
			C.hadamard_avx2(fp(x), C.long(rows*m), 1, p, nil, sc, nil)
		}
		return true
	}
	if h.p < vec {
		// the short-block kernels read coef's transpose, the other of
		// the pair
		coefT := h.hmT
		if &coef[0] == &h.hmT[0] {
			coefT = h.hm
		}
		c := h.scratch(h.N)
		defer h.pool.Put(c)
		if isa == 2 {
			C.hadamard_short_avx512(fp(x), C.long(rows), C.long(m), p, fp(coefT), sc, fp(*c))
		} else {
			C.hadamard_short_avx2(fp(x), C.long(rows), C.long(m), p, fp(coefT), sc, fp(*c))
		}
		return true
	}
	c := h.scratch(32 * m)
	defer h.pool.Put(c)
	if isa == 2 {
		C.hadamard_avx512(fp(x), C.long(rows), C.long(m), p, fp(coef), sc, fp(*c))
	} else {
		C.hadamard_avx2(fp(x), C.long(rows), C.long(m), p, fp(coef), sc, fp(*c))
	}
	return true
}

// hadamardKernel names the Hadamard kernel in use.
func hadamardKernel() string {
	if !useSIMD {
		return "go"
	}
	return [...]string{"go", "avx2", "avx512"}[hadamardISA]
}
