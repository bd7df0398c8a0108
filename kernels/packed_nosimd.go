//go:build !cgo || purego

package kernels

// PackedKernel names the packed-product kernel in use.
func PackedKernel() string { return "go" }

func q8QuantSIMD(a *PackedQ8, c int, x []float32) bool { return false }

func gemmPackedSIMD(f *Format, w []byte, r0, r1 int, a *PackedQ8, y []float32, ldy int) bool {
	return false
}

// packedISA is 0 without cgo: no repacked kernels.
const packedISA = 0

func q4x4Prep(a *PackedQ8, xp []byte) { panic("kernels: Q4x4 without its kernel") }

func gemvQ4x4SIMD(w *Q4x4, g0, g1 int, xp []byte, y []float32) {
	panic("kernels: Q4x4 without its kernel")
}
