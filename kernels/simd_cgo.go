//go:build cgo && !purego

package kernels

// #cgo CFLAGS: -O3 -fopenmp-simd
// #cgo LDFLAGS: -lm
// #include "simd.h"
import "C"

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

func fp(x []float32) *C.float {
	if len(x) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&x[0]))
}

func ip(x []int32) *C.int32_t {
	if len(x) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&x[0]))
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// simdVariants lists the C sets the CPU supports, slowest first.
func simdVariants() []Set {
	var v []Set
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		v = append(v, avx2Set)
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ {
		v = append(v, avx512Set)
	}
	return v
}
