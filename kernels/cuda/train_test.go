//go:build cgo

package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/kernels"
)

// The training kernels' host build against kernels.Generic, the CPU loops
// they repeat: bit for bit, except that exp and log come from the C
// library here and from Go's math there (both within an ulp of double, so
// their float32 roundings can differ in rare values by one ulp).

// nearBits fails if a value differs by more than one float32 ulp, or if
// more than one value in 10,000 differs at all.
func nearBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	diff := 0
	for i := range want {
		a, b := math.Float32bits(got[i]), math.Float32bits(want[i])
		if a == b {
			continue
		}
		diff++
		if d := int64(a) - int64(b); d > 1 || d < -1 {
			t.Fatalf("%s[%d]: host build %g, Generic %g", what, i, got[i], want[i])
		}
	}
	if diff > 1+len(want)/10000 {
		t.Errorf("%s: %d of %d values differ by an ulp", what, diff, len(want))
	}
}

func randn(rng *rand.Rand, n int, sd float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * sd)
	}
	return x
}

func TestHostRMSNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	g := kernels.Generic
	for _, sh := range [][2]int{{1, 1}, {3, 7}, {17, 256}, {5, 1376}} {
		rows, d := sh[0], sh[1]
		x, w, dy := randn(rng, rows*d, 1), randn(rng, d, 1), randn(rng, rows*d, 1)
		y1, y2 := make([]float32, rows*d), make([]float32, rows*d)
		r1, r2 := make([]float32, rows), make([]float32, rows)
		hostRMSNormFwd(y1, r1, x, w, rows, d, 1e-5)
		g.RMSNormFwd(y2, r2, x, w, rows, d, 1e-5)
		sameBits(t, "rstd", r1, r2)
		sameBits(t, "y", y1, y2)
		dx1, dw1 := randn(rng, rows*d, 1), randn(rng, d, 1)
		dx2, dw2 := append([]float32(nil), dx1...), append([]float32(nil), dw1...)
		hostRMSNormBwd(dx1, dw1, dy, x, w, r1, rows, d)
		g.RMSNormBwd(dx2, dw2, dy, x, w, r2, rows, d)
		sameBits(t, "dx", dx1, dx2)
		sameBits(t, "dw", dw1, dw2)
	}
}

// ropeInputs is a random RoPE table of maxpos positions (cos, sin), a
// position per row and x (rows, heads, hd).
func ropeInputs(rng *rand.Rand, rows, heads, hd, maxpos int) (cos, sin []float32, pos []int32, x []float32) {
	cos, sin = randn(rng, maxpos*hd/2, 1), randn(rng, maxpos*hd/2, 1)
	pos = make([]int32, rows)
	for i := range pos {
		pos[i] = int32(rng.IntN(maxpos))
	}
	return cos, sin, pos, randn(rng, rows*heads*hd, 1)
}

func TestHostRoPE(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	for _, sh := range [][3]int{{1, 1, 2}, {5, 3, 6}, {64, 4, 64}} {
		rows, heads, hd := sh[0], sh[1], sh[2]
		cos, sin, pos, x := ropeInputs(rng, rows, heads, hd, 100)
		for _, sign := range []float32{1, -1} {
			for _, acc := range []bool{false, true} {
				y1 := randn(rng, len(x), 1)
				y2 := append([]float32(nil), y1...)
				hostRoPE(y1, x, pos, cos, sin, rows, heads, hd, sign, acc)
				kernels.Generic.RoPE(y2, x, pos, cos, sin, rows, heads, hd, heads*hd, heads*hd, sign, acc)
				sameBits(t, "rope", y1, y2)
			}
		}
	}
}

func TestHostSwiGLU(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	n := 100003
	gg, u, dy := randn(rng, n, 3), randn(rng, n, 1), randn(rng, n, 1)
	y1, y2 := make([]float32, n), make([]float32, n)
	hostSwiGLUFwd(y1, gg, u)
	kernels.Generic.SwiGLUFwd(y2, gg, u)
	nearBits(t, "y", y1, y2)
	dg1, du1 := randn(rng, n, 1), randn(rng, n, 1)
	dg2, du2 := append([]float32(nil), dg1...), append([]float32(nil), du1...)
	hostSwiGLUBwd(dg1, du1, dy, gg, u)
	kernels.Generic.SwiGLUBwd(dg2, du2, dy, gg, u, true)
	nearBits(t, "dg", dg1, dg2)
	nearBits(t, "du", du1, du2)
}

func TestHostCrossEntropy(t *testing.T) {
	rng := rand.New(rand.NewPCG(47, 48))
	for _, sh := range [][2]int{{1, 1}, {7, 33}, {64, 4096}} {
		rows, n := sh[0], sh[1]
		x := randn(rng, rows*n, 3)
		tg := make([]int32, rows)
		for i := range tg {
			tg[i] = int32(rng.IntN(n))
		}
		tg[rows-1] = -1 // ignored
		dx1, dx2 := make([]float32, rows*n), make([]float32, rows*n)
		l1, l2 := make([]float32, rows), make([]float32, rows)
		hostCrossEntropy(x, tg, dx1, l1, rows, n, 0.25)
		kernels.Generic.CrossEntropy(x, tg, dx2, l2, rows, n, 0.25)
		nearBits(t, "dx", dx1, dx2)
		nearBits(t, "loss", l1, l2)
	}
}

func TestHostAdamW(t *testing.T) {
	rng := rand.New(rand.NewPCG(49, 50))
	n := 10007
	p1, gr := randn(rng, n, 1), randn(rng, n, 0.1)
	m1, v1 := randn(rng, n, 0.01), randn(rng, n, 0.01)
	for i := range v1 {
		v1[i] *= v1[i]
	}
	p2, m2, v2 := append([]float32(nil), p1...), append([]float32(nil), m1...), append([]float32(nil), v1...)
	for s := 0; s < 3; s++ {
		hostAdamW(p1, gr, m1, v1, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
		kernels.Generic.AdamW(p2, gr, m2, v2, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
	}
	sameBits(t, "p", p1, p2)
	sameBits(t, "m", m1, m2)
	sameBits(t, "v", v1, v2)
}
