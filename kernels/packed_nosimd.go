//go:build !cgo || purego

package kernels

// PackedKernel names the packed-product kernel in use.
func PackedKernel() string { return "go" }

func q8QuantSIMD(a *PackedQ8, c int, x []float32) bool { return false }

func gemmPackedSIMD(f FormatID, w []byte, r0, r1 int, a *PackedQ8, y []float32, ldy int) bool {
	return false
}

// packedISA is 0 without cgo: no repacked kernels.
const packedISA = 0

const (
	r4X = 80
	r4Q = 176
)

func r4Prep(a *PackedQ8, c int, xp []byte) { panic("kernels: R4 without its kernel") }

func r4qPrep(a *PackedQ8, c int, xq []byte) { panic("kernels: R4 without its kernel") }

func gemmR4SIMD(w *R4, g0, g1 int, a *PackedQ8, y []float32) {
	panic("kernels: R4 without its kernel")
}

func gemmChannelSIMD(w *ChannelInt, g0, g1 int, a *TokenU8, y []float32) bool { return false }
