//go:build !cgo || purego

package kernels

func absMaxGroupsSIMD(out, x []float32, group int) bool    { return false }
func minMaxGroupsSIMD(lo, hi, x []float32, group int) bool { return false }
func maskGradSIMD(dx, dy []float32, mask []uint8) bool     { return false }
func fakeQuantAffineSIMD(y []float32, mask []uint8, x, scale, zero []float32, group int, qmin, qmax float32) bool {
	return false
}

func fakeQuantLSQSIMD(y []float32, mask []uint8, x, scale []float32, group int, qn, qp float32) bool {
	return false
}
func lsqGradSIMD(dx, ds, dy, x, scale []float32, group int, qn, qp, gscale float32) bool {
	return false
}

func adamW8SIMD(p, g []float32, m, v []uint8, mAbs, vAbs []float32, a *Adam8, lr, b1, b2, eps, wd, bc1, bc2 float32) bool {
	return false
}

func adamWFP8SIMD(p, g []float32, m, v []uint8, mr, vr []uint16, group int, lr, b1, b2, eps, wd, bc1, bc2 float32) bool {
	return false
}

func fakeQuantQ4_0SIMD(y []float32, mask []uint8, x []float32) bool { return false }

func fqTableNames() []string        { return nil }
func useFQTable(name string) func() { return func() {} }
