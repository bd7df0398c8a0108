package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i]))/(1+math.Abs(float64(b[i]))))
	}
	return d
}

func clone(x []float32) []float32 { return append([]float32(nil), x...) }

// TestVariantsMatchGeneric runs every kernel of every SIMD set on odd sizes
// (tails of the vector loops) and compares with the portable Go set.
func TestVariantsMatchGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	g := Generic
	for _, s := range Variants()[1:] {
		for _, n := range []int{1, 15, 17, 33, 257} {
			x, y, z := randSlice(rng, n), randSlice(rng, n), randSlice(rng, n)
			for i := range x {
				x[i] *= 4
			}
			check := func(name string, got, want []float32, tol float64) {
				if d := maxDiff(got, want); d > tol {
					t.Errorf("%s %s n=%d: max rel diff %.3g", s.Name, name, n, d)
				}
			}
			a, b := clone(x), clone(x)
			g.Exp(a)
			s.Exp(b)
			check("Exp", b, a, 3e-7)
			a, b = make([]float32, n), make([]float32, n)
			g.SwiGLUFwd(a, x, y)
			s.SwiGLUFwd(b, x, y)
			check("SwiGLUFwd", b, a, 1e-6)
			for _, acc := range []bool{true, false} {
				a1, a2, b1, b2 := clone(y), clone(z), clone(y), clone(z)
				g.SwiGLUBwd(a1, a2, z, x, y, acc)
				s.SwiGLUBwd(b1, b2, z, x, y, acc)
				check("SwiGLUBwd dg", b1, a1, 1e-6)
				check("SwiGLUBwd du", b2, a2, 1e-6)
			}
			a, b = make([]float32, n), make([]float32, n)
			g.SiLUFwd(a, x)
			s.SiLUFwd(b, x)
			check("SiLUFwd", b, a, 1e-6)
			a, b = clone(y), clone(y)
			g.SiLUBwd(a, z, x)
			s.SiLUBwd(b, z, x)
			check("SiLUBwd", b, a, 1e-6)
			a, b = clone(y), clone(y)
			g.Axpy(a, x, 0.3)
			s.Axpy(b, x, 0.3)
			check("Axpy", b, a, 1e-7)
			g.Add(a, x, y)
			s.Add(b, x, y)
			check("Add", b, a, 1e-7)
			g.Scale(a, x, -2)
			s.Scale(b, x, -2)
			check("Scale", b, a, 1e-7)
			if d := math.Abs(g.SumSq(x)-s.SumSq(x)) / g.SumSq(x); d > 1e-12 {
				t.Errorf("%s SumSq n=%d: rel diff %g", s.Name, n, d)
			}
			pa, ma, va := clone(x), clone(y), make([]float32, n)
			for i := range va {
				va[i] = z[i] * z[i]
			}
			pb, mb, vb := clone(pa), clone(ma), clone(va)
			g.AdamW(pa, z, ma, va, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
			s.AdamW(pb, z, mb, vb, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
			check("AdamW p", pb, pa, 1e-6)
			check("AdamW v", vb, va, 1e-6)
		}
		for _, sh := range [][2]int{{1, 1}, {3, 17}, {5, 256}, {7, 4097}} {
			rows, d := sh[0], sh[1]
			x, w, dy := randSlice(rng, rows*d), randSlice(rng, d), randSlice(rng, rows*d)
			ya, yb, ra, rb := make([]float32, rows*d), make([]float32, rows*d), make([]float32, rows), make([]float32, rows)
			g.RMSNormFwd(ya, ra, x, w, rows, d, 1e-5)
			s.RMSNormFwd(yb, rb, x, w, rows, d, 1e-5)
			if e := maxDiff(yb, ya); e > 1e-5 {
				t.Errorf("%s RMSNormFwd %dx%d: %g", s.Name, rows, d, e)
			}
			dxa, dxb, dwa, dwb := make([]float32, rows*d), make([]float32, rows*d), make([]float32, d), make([]float32, d)
			g.RMSNormBwd(dxa, dwa, dy, x, w, ra, rows, d)
			s.RMSNormBwd(dxb, dwb, dy, x, w, ra, rows, d)
			if e := math.Max(maxDiff(dxb, dxa), maxDiff(dwb, dwa)); e > 1e-4 {
				t.Errorf("%s RMSNormBwd %dx%d: %g", s.Name, rows, d, e)
			}
			tg := make([]int32, rows)
			for i := range tg {
				tg[i] = int32(rng.IntN(d))
			}
			tg[0] = -1
			la, lb := make([]float32, rows), make([]float32, rows)
			g.CrossEntropy(x, tg, dxa, la, rows, d, 0.5)
			s.CrossEntropy(x, tg, dxb, lb, rows, d, 0.5)
			if e := math.Max(maxDiff(dxb, dxa), maxDiff(lb, la)); e > 1e-5 {
				t.Errorf("%s CrossEntropy %dx%d: %g", s.Name, rows, d, e)
			}
			if rows <= d {
				for _, i0 := range []int{0, 2} {
					sa, sb := clone(x), clone(x)
					g.CausalSoftmax(sa, rows, i0, d, d, 0.7, la)
					s.CausalSoftmax(sb, rows, i0, d, d, 0.7, lb)
					if e := math.Max(maxDiff(sb, sa), maxDiff(lb, la)); e > 1e-5 {
						t.Errorf("%s CausalSoftmax %dx%d i0=%d: %g", s.Name, rows, d, i0, e)
					}
					pa, pb := clone(dy), clone(dy)
					g.SoftmaxBwd(sa, pa, rows, d, d, 0.7)
					s.SoftmaxBwd(sa, pb, rows, d, d, 0.7)
					if e := maxDiff(pb, pa); e > 1e-5 {
						t.Errorf("%s SoftmaxBwd %dx%d: %g", s.Name, rows, d, e)
					}
				}
			}
		}
		tab := []float32{1, 1, 0.5, 0.8, -0.3, 0.2}
		sn := []float32{0, 0, 0.8, 0.6, 0.95, -0.98}
		x := randSlice(rng, 3*2*4)
		for _, acc := range []bool{false, true} {
			a, b := clone(x), clone(x)
			g.RoPE(a, x, []int32{0, 2, 1}, tab, sn, 3, 2, 4, 8, 8, -1, acc)
			s.RoPE(b, x, []int32{0, 2, 1}, tab, sn, 3, 2, 4, 8, 8, -1, acc)
			if e := maxDiff(b, a); e > 1e-6 {
				t.Errorf("%s RoPE acc=%v: %g", s.Name, acc, e)
			}
			// Rows with strides (x 11, y 13: columns of wider matrices)
			// give the contiguous rows' results and leave the gaps alone.
			xs, ys := randSlice(rng, 2*11+8), randSlice(rng, 2*13+8)
			ys0 := clone(ys)
			s.RoPE(ys, xs, []int32{0, 2, 1}, tab, sn, 3, 2, 4, 13, 11, 1, acc)
			for r := 0; r < 3; r++ {
				want := clone(ys0[r*13 : r*13+8])
				g.RoPE(want, xs[r*11:r*11+8], []int32{int32([]int{0, 2, 1}[r])}, tab, sn, 1, 2, 4, 8, 8, 1, acc)
				if e := maxDiff(ys[r*13:r*13+8], want); e > 1e-6 {
					t.Errorf("%s strided RoPE acc=%v row %d: %g", s.Name, acc, r, e)
				}
				if r < 2 && maxDiff(ys[r*13+8:r*13+13], ys0[r*13+8:r*13+13]) != 0 {
					t.Errorf("%s strided RoPE wrote between rows", s.Name)
				}
			}
		}
	}
}

// TestExpAccuracy: the polynomial exp of the SIMD sets stays within 2e-7
// relative of float64 exp over the range softmax uses.
func TestExpAccuracy(t *testing.T) {
	for _, s := range Variants() {
		x := make([]float32, 0, 4000)
		for v := -87.0; v < 88; v += 0.0437 {
			x = append(x, float32(v))
		}
		y := clone(x)
		s.Exp(y)
		var worst float64
		for i, v := range x {
			want := math.Exp(float64(v))
			worst = math.Max(worst, math.Abs(float64(y[i])-want)/want)
		}
		if worst > 4e-7 {
			t.Errorf("%s: exp max relative error %.3g", s.Name, worst)
		}
		t.Logf("%s: exp max relative error %.3g", s.Name, worst)
	}
}

// BenchmarkKernels reports GB/s for the elementwise kernels of each set,
// counting 4 bytes per float read or written (the bytes field is per element).
func BenchmarkKernels(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const n = 1 << 20
	x, y, z, w := randSlice(rng, n), randSlice(rng, n), randSlice(rng, n), randSlice(rng, n)
	for _, s := range Variants() {
		for _, k := range []struct {
			name  string
			bytes int
			f     func()
		}{
			{"SwiGLUFwd", 12, func() { s.SwiGLUFwd(z, x, y) }},
			{"SwiGLUBwd", 28, func() { s.SwiGLUBwd(z, w, y, x, y, true) }},
			{"RMSNormFwd", 8, func() { s.RMSNormFwd(z, w[:1024], x, y[:1024], 1024, 1024, 1e-5) }},
			{"RMSNormBwd", 16, func() { s.RMSNormBwd(z, w[:1024], y, x, y[:1024], w[:1024], 1024, 1024) }},
			{"CrossEntropy", 12, func() {
				s.CrossEntropy(x, make([]int32, 256), z, w[:256], 256, 4096, 1)
			}},
			{"Axpy", 12, func() { s.Axpy(z, x, 0.5) }},
			{"AdamW", 28, func() { s.AdamW(z, x, y, w, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.5) }},
		} {
			b.Run(fmt.Sprintf("%s/%s", k.name, s.Name), func(b *testing.B) {
				b.SetBytes(int64(k.bytes * n))
				for i := 0; i < b.N; i++ {
					k.f()
				}
			})
		}
	}
}

// TestLengthChecks: every set rejects a too-short slice with a panic naming
// the kernel, before any pointer reaches C.
func TestLengthChecks(t *testing.T) {
	for _, s := range Variants() {
		for name, f := range map[string]func(){
			"RMSNormFwd": func() {
				s.RMSNormFwd(make([]float32, 3), make([]float32, 2), make([]float32, 4), make([]float32, 2), 2, 2, 1e-5)
			},
			"SwiGLUBwd": func() {
				s.SwiGLUBwd(make([]float32, 4), make([]float32, 3), make([]float32, 4), make([]float32, 4), make([]float32, 4), true)
			},
			"AdamW": func() {
				s.AdamW(make([]float32, 4), make([]float32, 4), make([]float32, 3), make([]float32, 4), 1, 0.9, 0.9, 1e-8, 0, 1, 1)
			},
		} {
			func() {
				defer func() {
					if r, _ := recover().(string); !strings.HasPrefix(r, "kernels: "+name) {
						t.Errorf("%s %s: panic %q, want one naming the kernel", s.Name, name, r)
					}
				}()
				f()
			}()
		}
	}
}
