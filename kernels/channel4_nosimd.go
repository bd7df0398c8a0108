//go:build !cgo || purego

package kernels

// gemmChannel4SIMD: without cgo only the Go loop exists.
func gemmChannel4SIMD(isa int, w *ChannelInt, g0, g1 int, a *TokenU4, y []float32) bool { return false }
