//go:build cgo && !purego

package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// edgeGrads fills g with the values a fused kernel gets wrong first:
// zeros (whole blocks of them), float32 denormals, values whose square
// underflows or is huge, exact powers of two and random normals.
func edgeGrads(rng *rand.Rand, n, block int) []float32 {
	g := randSlice(rng, n)
	specials := []float32{0, float32(math.Copysign(0, -1)), 1e-45, -1e-45, 1e-40, -3e-39, 1e-20, -1e-20, 1e19, -1e19, 1, -1, 0.5, 2, 3e-8}
	for i := range g {
		switch i % 11 {
		case 3:
			g[i] = specials[(i/11)%len(specials)]
		case 7:
			g[i] *= float32(math.Ldexp(1, rng.IntN(60)-40))
		}
	}
	if n >= 2*block {
		clear(g[block : 2*block]) // an all-zero block
	}
	return g
}

// TestAdamW8Exact: the C kernel (AVX-512 where the CPU has it) gives the
// Go loop's bits (p, codes, absmax) over three steps from zero states and
// one from random warm codes, on sizes that leave short last blocks and
// partial vectors, block sizes 1 to MaxBlock8, and edge gradients.
func TestAdamW8Exact(t *testing.T) {
	forEachTable(t, testAdamW8Exact)
}

// forEachTable runs test once with each C table the CPU has selected
// (AVX-512 and AVX2 on this machine), failing where there is none. (The
// portable build, CGO_ENABLED=0, has no C kernels: this file is not part
// of it.)
func forEachTable(t *testing.T, test func(t *testing.T)) {
	names := fqTableNames()
	if len(names) == 0 {
		t.Fatal("no SIMD kernel table on this CPU: nothing to compare (the portable build is the Go loop itself)")
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			defer useFQTable(name)()
			test(t)
		})
	}
}

func testAdamW8Exact(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct{ n, block int }{{1, 256}, {15, 256}, {17, 16}, {256*9 + 77, 256}, {1000, 1}, {999, 7}, {3*4096 + 5, 4096}, {2048 + 31, 2048}} {
		a := &Adam8{M: DynamicMap(true), V: DynamicMap(false), Block: c.block}
		nb := Blocks(c.n, c.block)
		type state struct {
			p      []float32
			m, v   []uint8
			ma, va []float32
		}
		mk := func(warm bool) state {
			s := state{randSlice(rng, c.n), make([]uint8, c.n), make([]uint8, c.n), make([]float32, nb), make([]float32, nb)}
			for i := range s.m {
				s.m[i], s.v[i] = uint8(a.M.Zero), uint8(a.V.Zero)
				if warm {
					s.m[i], s.v[i] = uint8(rng.IntN(256)), uint8(rng.IntN(256))
				}
			}
			for k := range s.ma {
				s.ma[k], s.va[k] = 1, 1
				if warm {
					s.ma[k], s.va[k] = float32(rng.Float64()), float32(math.Ldexp(rng.Float64(), -rng.IntN(40)))
				}
			}
			return s
		}
		clone := func(s state) state {
			return state{append([]float32(nil), s.p...), append([]uint8(nil), s.m...), append([]uint8(nil), s.v...),
				append([]float32(nil), s.ma...), append([]float32(nil), s.va...)}
		}
		for _, warm := range []bool{false, true} {
			s1 := mk(warm)
			s2 := clone(s1)
			steps := 3
			if warm {
				steps = 1
			}
			for st := 1; st <= steps; st++ {
				g := edgeGrads(rng, c.n, c.block)
				bc1, bc2 := float32(1-math.Pow(0.9, float64(st))), float32(1-math.Pow(0.95, float64(st)))
				AdamW8(s1.p, g, s1.m, s1.v, s1.ma, s1.va, a, 1e-2, 0.9, 0.95, 1e-8, 0.1, bc1, bc2)
				adamW8Go(s2.p, g, s2.m, s2.v, s2.ma, s2.va, a, 1e-2, 0.9, 0.95, 1e-8, 0.1, bc1, bc2)
				for i := range s1.p {
					if math.Float32bits(s1.p[i]) != math.Float32bits(s2.p[i]) || s1.m[i] != s2.m[i] || s1.v[i] != s2.v[i] {
						t.Fatalf("n %d block %d warm %v step %d, value %d (g %g): p %g/%g m %d/%d v %d/%d (kernel/Go)",
							c.n, c.block, warm, st, i, g[i], s1.p[i], s2.p[i], s1.m[i], s2.m[i], s1.v[i], s2.v[i])
					}
				}
				for k := range s1.ma {
					if math.Float32bits(s1.ma[k]) != math.Float32bits(s2.ma[k]) || math.Float32bits(s1.va[k]) != math.Float32bits(s2.va[k]) {
						t.Fatalf("n %d block %d step %d, absmax %d: %g/%g vs %g/%g", c.n, c.block, st, k, s1.ma[k], s1.va[k], s2.ma[k], s2.va[k])
					}
				}
			}
		}
	}
}

// TestAdamWFP8Exact: TestAdamW8Exact for FP8 states: codes, ranges and p
// bit for bit over three steps from zero states and one from random
// codes and ranges (down to the 2^-100 floor and the all-zero group),
// group sizes 1 to MaxBlock8, short last groups and edge gradients.
func TestAdamWFP8Exact(t *testing.T) {
	forEachTable(t, testAdamWFP8Exact)
}

func testAdamWFP8Exact(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 11))
	for _, c := range []struct{ n, group int }{{1, 128}, {15, 128}, {17, 16}, {128*9 + 77, 128}, {1000, 1}, {999, 7}, {2*4096 + 5, 4096}, {256 + 31, 256}} {
		nb := Blocks(c.n, c.group)
		type state struct {
			p      []float32
			m, v   []uint8
			mr, vr []uint16
		}
		clone := func(s state) state {
			return state{append([]float32(nil), s.p...), append([]uint8(nil), s.m...), append([]uint8(nil), s.v...),
				append([]uint16(nil), s.mr...), append([]uint16(nil), s.vr...)}
		}
		for _, warm := range []bool{false, true} {
			s1 := state{randSlice(rng, c.n), make([]uint8, c.n), make([]uint8, c.n), make([]uint16, 2*nb), make([]uint16, 2*nb)}
			steps := 3
			if warm {
				steps = 1
				for i := range s1.m {
					s1.m[i], s1.v[i] = uint8(rng.IntN(256)), uint8(rng.IntN(128))
					if s1.m[i]&0x7F == 0x7F { // E4M3 NaN: never written
						s1.m[i]--
					}
					if s1.v[i] == 0x7F {
						s1.v[i]--
					}
				}
				for k := 0; k < nb; k++ {
					for _, r := range [][]uint16{s1.mr, s1.vr} {
						hi := uint16(0x0D00 + rng.IntN(0x4000))
						r[2*k], r[2*k+1] = hi, uint16(rng.IntN(int(hi)+1))
						if k%5 == 4 {
							r[2*k], r[2*k+1] = 0, 0
						}
					}
				}
			}
			s2 := clone(s1)
			for st := 1; st <= steps; st++ {
				g := edgeGrads(rng, c.n, c.group)
				bc1, bc2 := float32(1-math.Pow(0.9, float64(st))), float32(1-math.Pow(0.95, float64(st)))
				AdamWFP8(s1.p, g, s1.m, s1.v, s1.mr, s1.vr, c.group, 1e-2, 0.9, 0.95, 1e-8, 0.1, bc1, bc2)
				adamWFP8Go(s2.p, g, s2.m, s2.v, s2.mr, s2.vr, c.group, 1e-2, 0.9, 0.95, 1e-8, 0.1, bc1, bc2)
				for i := range s1.p {
					if math.Float32bits(s1.p[i]) != math.Float32bits(s2.p[i]) || s1.m[i] != s2.m[i] || s1.v[i] != s2.v[i] {
						t.Fatalf("n %d group %d warm %v step %d, value %d (g %g): p %g/%g m %#x/%#x v %#x/%#x (kernel/Go)",
							c.n, c.group, warm, st, i, g[i], s1.p[i], s2.p[i], s1.m[i], s2.m[i], s1.v[i], s2.v[i])
					}
				}
				for k := range s1.mr {
					if s1.mr[k] != s2.mr[k] || s1.vr[k] != s2.vr[k] {
						t.Fatalf("n %d group %d step %d, range %d: %#x/%#x vs %#x/%#x", c.n, c.group, st, k, s1.mr[k], s1.vr[k], s2.mr[k], s2.vr[k])
					}
				}
			}
		}
	}
}

// TestFakeQuantQ4_0Exact: the C Q4_0 fake quantizer gives the Go loop's
// bits (values and masks) with every table: random blocks, blocks whose
// largest magnitude repeats with both signs (the first one sets d), all
// zeros, -0, float32 denormals (d underflows to 0, or 1/d overflows),
// scales past float16's range (fp16(d) is infinite) and below it (fp16
// subnormals), values at x/d = k + 1/2.
func TestFakeQuantQ4_0Exact(t *testing.T) {
	forEachTable(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(12, 13))
		const blocks = 64
		x := randSlice(rng, 32*blocks)
		blk := func(b int) []float32 { return x[32*b : 32*b+32] }
		clear(blk(1))
		for i := range blk(2) {
			blk(2)[i] = float32(math.Copysign(0, -1))
		}
		for i := range blk(3) {
			blk(3)[i] = float32(rng.NormFloat64()) * 1e-40 // denormals: d underflows or 1/d overflows
		}
		blk(4)[5], blk(4)[9] = 7, -7 // the first of equal magnitudes sets the sign of d
		blk(5)[9], blk(5)[5] = 7, -7
		for i := range blk(6) {
			blk(6)[i] = float32(rng.NormFloat64()) * 1e6 // d past float16's 65504
		}
		for i := range blk(7) {
			blk(7)[i] = float32(rng.NormFloat64()) * 1e-6 // fp16(d) subnormal
		}
		for i := range blk(8) {
			blk(8)[i] = float32(i-16) * 0.5 // m = -8, d = 1: x*id + 8.5 on integers and halves
		}
		blk(9)[0] = 1e-45
		blk(10)[31] = -3e38
		for i := range blk(11) {
			blk(11)[i] = float32(int(rng.IntN(17))-8) * 0.25
		}
		run := func(simd bool) ([]float32, []uint8) {
			useSIMD = simd
			defer func() { useSIMD = true }()
			y, mask := make([]float32, len(x)), make([]uint8, len(x))
			FakeQuantQ4_0(y, mask, x)
			return y, mask
		}
		y1, m1 := run(false)
		y2, m2 := run(true)
		for i := range y1 {
			if math.Float32bits(y1[i]) != math.Float32bits(y2[i]) || m1[i] != m2[i] {
				t.Fatalf("block %d, %d: x %g: Go (%g, %d), C (%g, %d)", i/32, i%32, x[i], y1[i], m1[i], y2[i], m2[i])
			}
		}
	})
}
