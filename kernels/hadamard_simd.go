//go:build cgo && !purego

package kernels

// hadamardSIMD: the AVX-512 kernel is not written yet.
func hadamardSIMD(h *Hadamard, x []float32, hm []float32) bool { return false }

// hadamardKernel names the Hadamard kernel in use.
func hadamardKernel() string { return "go" }
