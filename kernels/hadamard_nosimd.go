//go:build !cgo || purego

package kernels

// hadamardSIMD: without cgo only the Go loop exists.
func hadamardSIMD(h *Hadamard, x []float32, coef []float32) bool { return false }

// hadamardKernel names the Hadamard kernel in use.
func hadamardKernel() string { return "go" }
