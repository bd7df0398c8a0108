//go:build !cgo || purego

package kernels

// PackedKernel names the packed-product kernel in use.
func PackedKernel() string { return "go" }

func q8QuantSIMD(a *PackedQ8, c int, x []float32) bool { return false }

func gemmPackedSIMD(f *Format, w []byte, r0, r1 int, a *PackedQ8, y []float32, ldy int) bool {
	return false
}
