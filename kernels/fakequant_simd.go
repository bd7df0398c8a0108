//go:build cgo && !purego

package kernels

// #include "simd.h"
import "C"

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// fqTable is the C table the fake-quant kernels use on this CPU, nil when
// the CPU has neither AVX-512 nor AVX2.
var fqTable = func() *C.kern_table {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ:
		return &C.kern_avx512
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return &C.kern_avx2
	}
	return nil
}()

func bp(x []uint8) *C.uint8_t { return (*C.uint8_t)(unsafe.Pointer(&x[0])) }

func u32p(x []uint32) *C.uint32_t { return (*C.uint32_t)(unsafe.Pointer(&x[0])) }

func absMaxGroupsSIMD(out, x []float32, group int) bool {
	if fqTable == nil || len(x) == 0 || !useSIMD {
		return false
	}
	C.k_absmax_groups(fqTable, fp(out), fp(x), C.long(len(x)), C.long(group))
	return true
}

func minMaxGroupsSIMD(lo, hi, x []float32, group int) bool {
	if fqTable == nil || len(x) == 0 || !useSIMD {
		return false
	}
	C.k_minmax_groups(fqTable, fp(lo), fp(hi), fp(x), C.long(len(x)), C.long(group))
	return true
}

func fakeQuantAffineSIMD(y []float32, mask []uint8, x, scale, zero []float32, group int, qmin, qmax float32) bool {
	if fqTable == nil || len(x) == 0 || !useSIMD {
		return false
	}
	C.k_fq_affine(fqTable, fp(y), bp(mask), fp(x), fp(scale), fp(zero), C.long(len(x)), C.long(group), C.float(qmin), C.float(qmax))
	return true
}

func maskGradSIMD(dx, dy []float32, mask []uint8) bool {
	if fqTable == nil || len(dx) == 0 || !useSIMD {
		return false
	}
	C.k_mask_grad(fqTable, fp(dx), fp(dy), bp(mask), C.long(len(dx)))
	return true
}

func fakeQuantLSQSIMD(y []float32, mask []uint8, x, scale []float32, group int, qn, qp float32) bool {
	if fqTable == nil || len(x) == 0 || !useSIMD {
		return false
	}
	C.k_fq_lsq(fqTable, fp(y), bp(mask), fp(x), fp(scale), C.long(len(x)), C.long(group), C.float(qn), C.float(qp))
	return true
}

func lsqGradSIMD(dx, ds, dy, x, scale []float32, group int, qn, qp, gscale float32) bool {
	if fqTable == nil || len(x) == 0 || !useSIMD {
		return false
	}
	tmp := make([]float32, group)
	var pdx *C.float
	if dx != nil {
		pdx = fp(dx)
	}
	C.k_lsq_grad(fqTable, pdx, fp(ds), fp(dy), fp(x), fp(scale), fp(tmp), C.long(len(x)), C.long(group), C.float(qn), C.float(qp), C.float(gscale))
	return true
}

func adamW8SIMD(p, g []float32, m, v []uint8, mAbs, vAbs []float32, a *Adam8, lr, b1, b2, eps, wd, bc1, bc2 float32) bool {
	if fqTable == nil || len(p) == 0 || !useSIMD || a.M.fine == nil || a.V.fine == nil {
		return false
	}
	C.k_adamw8(fqTable, fp(p), fp(g), bp(m), bp(v), fp(mAbs), fp(vAbs), C.long(len(p)), C.long(a.Block),
		fp(a.M.Values[:]), u32p(a.M.fine), C.long(a.M.Zero), fp(a.V.Values[:]), u32p(a.V.fine), C.long(a.V.Zero),
		C.float(lr), C.float(b1), C.float(b2), C.float(eps), C.float(wd), C.float(bc1), C.float(bc2))
	return true
}

func adamWFP8SIMD(p, g []float32, m, v []uint8, mr, vr []uint16, group int, lr, b1, b2, eps, wd, bc1, bc2 float32) bool {
	if fqTable == nil || len(p) == 0 || !useSIMD {
		return false
	}
	C.k_adamwfp8(fqTable, fp(p), fp(g), bp(m), bp(v), (*C.uint16_t)(unsafe.Pointer(&mr[0])), (*C.uint16_t)(unsafe.Pointer(&vr[0])),
		C.long(len(p)), C.long(group), fp(log2E4M3Exp[:]), fp(log2E4M3Man[:]), (*C.double)(unsafe.Pointer(&log2Man[0])),
		C.float(lr), C.float(b1), C.float(b2), C.float(eps), C.float(wd), C.float(bc1), C.float(bc2))
	return true
}

func fakeQuantQ4_0SIMD(y []float32, mask []uint8, x []float32) bool {
	if fqTable == nil || len(x) == 0 || !useSIMD {
		return false
	}
	C.k_fq_q4_0(fqTable, fp(y), bp(mask), fp(x), C.long(len(x)))
	return true
}

// fqTableNames lists the C tables this CPU can run, fastest first, for
// the tests to compare each with the Go loops; useFQTable selects one
// and returns what restores the previous choice.
func fqTableNames() []string {
	var names []string
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ {
		names = append(names, "avx512")
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		names = append(names, "avx2")
	}
	return names
}

func useFQTable(name string) func() {
	old := fqTable
	fqTable = map[string]*C.kern_table{"avx512": &C.kern_avx512, "avx2": &C.kern_avx2}[name]
	return func() { fqTable = old }
}
