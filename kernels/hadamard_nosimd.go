//go:build !cgo || purego

package kernels

// hadamardISA: without cgo only the Go loop exists.
const hadamardISA = 0

func hadamardSIMD(h *Hadamard, x []float32, coef []float32) bool { return false }

func hadamardISASIMD(isa int, h *Hadamard, x []float32, coef []float32) bool { return false }

// hadamardKernel names the Hadamard kernel in use.
func hadamardKernel() string { return "go" }
