package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDynamicMap: the 256 values of both maps against the construction of
// docs/algorithms.md section 6 in float64, and its hand-derived facts.
func TestDynamicMap(t *testing.T) {
	for _, signed := range []bool{true, false} {
		m := DynamicMap(signed)
		var want []float64
		for i := 0; i < 7; i++ {
			k := 1 << i
			if !signed {
				k *= 2
			}
			for j := 0; j < k; j++ {
				v := math.Pow(10, float64(i-6)) * (0.1 + 0.9*(2*float64(j)+1)/(2*float64(k)))
				want = append(want, v)
				if signed {
					want = append(want, -v)
				}
			}
		}
		want = append(want, 0, 1)
		if len(want) != 256 {
			t.Fatalf("signed=%v: %d values", signed, len(want))
		}
		// sort want (insertion: 256 values)
		for i := 1; i < len(want); i++ {
			for j := i; j > 0 && want[j] < want[j-1]; j-- {
				want[j], want[j-1] = want[j-1], want[j]
			}
		}
		for i, v := range m.Values {
			if float32(want[i]) != v {
				t.Fatalf("signed=%v: value %d = %g, want %g", signed, i, v, want[i])
			}
		}
		neg := 0
		for _, v := range m.Values {
			if v < 0 {
				neg++
			}
		}
		if signed {
			if neg != 127 || m.Values[127] != 0 || m.Values[255] != 1 || math.Abs(float64(m.Values[0])+0.99296875) > 1e-7 ||
				math.Abs(float64(m.Values[128])-5.5e-7) > 1e-12 {
				t.Errorf("signed map: %d negatives, [0] %g, [127] %g, [128] %g, [255] %g", neg, m.Values[0], m.Values[127], m.Values[128], m.Values[255])
			}
		} else if neg != 0 || m.Values[0] != 0 || m.Values[255] != 1 || math.Abs(float64(m.Values[1])-3.25e-7) > 1e-12 {
			t.Errorf("unsigned map: %d negatives, [0] %g, [1] %g, [255] %g", neg, m.Values[0], m.Values[1], m.Values[255])
		}
	}
}

// nearest is the brute-force search: the map value closest to y (ties to
// the smaller magnitude; unsigned maps take negatives to 0).
func nearest(m *Map8, y float32) uint8 {
	best, bd := 0, math.Inf(1)
	for k, v := range m.Values {
		d := math.Abs(float64(y) - float64(v))
		if d < bd || (d == bd && math.Abs(float64(v)) < math.Abs(float64(m.Values[best]))) {
			best, bd = k, d
		}
	}
	return uint8(best)
}

// TestMap8Code: the bucket lookup equals the brute-force search on
// log-uniform magnitudes from 1e-9 to 1, on every midpoint and the floats
// next to it, and at the ends.
func TestMap8Code(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, signed := range []bool{true, false} {
		m := DynamicMap(signed)
		var ys []float32
		for i := 0; i < 200000; i++ {
			y := float32(math.Pow(10, -9*rng.Float64()))
			if rng.IntN(2) == 0 {
				y = -y
			}
			ys = append(ys, y)
		}
		for k := 0; k+1 < 256; k++ {
			mid := (m.Values[k] + m.Values[k+1]) / 2
			ys = append(ys, mid, math.Nextafter32(mid, 2), math.Nextafter32(mid, -2))
		}
		ys = append(ys, 0, 1, -1, 1e-30, -1e-30, 0.999, -0.999)
		for _, y := range ys {
			// a y on a float32 midpoint may go either way
			got, want := m.Code(y), nearest(m, y)
			dg, dw := math.Abs(float64(m.Values[got])-float64(y)), math.Abs(float64(m.Values[want])-float64(y))
			if got != want && dg-dw > 2.4e-7*math.Abs(float64(y)) { // two float32 ulps
				t.Fatalf("signed=%v: Code(%g) = %d (%g), nearest %d (%g)", signed, y, got, m.Values[got], want, m.Values[want])
			}
		}
	}
}

// TestQuantize8RoundTrip: per block, every value comes back within half
// the gap between the two map values around x/absmax, times absmax
// (float64 reference), with blocks of 256 and a short last block.
func TestQuantize8RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m := DynamicMap(true)
	const n, block = 256*7 + 100, 256
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Pow(10, -3*rng.Float64()))
	}
	copy(x[256:512], make([]float32, 256)) // an all-zero block
	codes, absmax, back := make([]uint8, n), make([]float32, Blocks(n, block)), make([]float32, n)
	Quantize8(codes, absmax, x, block, m)
	Dequantize8(back, codes, absmax, block, m)
	if absmax[1] != 1 {
		t.Errorf("all-zero block: absmax %g, want 1", absmax[1])
	}
	var worst float64
	for i, v := range x {
		a := float64(absmax[i/block])
		y := float64(v) / a
		gap := 2 * (float64(m.Values[0]) - y) // below the most negative value: it clamps
		for k := 0; k+1 < 256; k++ {
			if float64(m.Values[k]) <= y && y <= float64(m.Values[k+1]) {
				gap = float64(m.Values[k+1] - m.Values[k])
			}
		}
		e := math.Abs(float64(back[i]) - float64(v))
		if e > (gap/2)*a*(1+1e-5)+1e-12 {
			t.Fatalf("x[%d] = %g came back as %g: error %g, half gap %g", i, v, back[i], e, gap/2*a)
		}
		worst = max(worst, e/a)
	}
	t.Logf("worst round-trip error %.3g of absmax", worst)
}

// TestAdamW8 compares the fused kernel (C where the CPU has it) with the
// Go loop on one step, then runs 100 steps of 8-bit AdamW beside fp32
// AdamW on the same random gradients and reports the drift.
func TestAdamW8(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	a := &Adam8{M: DynamicMap(true), V: DynamicMap(false), Block: 256}
	const n = 256*40 + 77
	nb := Blocks(n, a.Block)
	p0, g := randSlice(rng, n), randSlice(rng, n)
	mk := func() ([]float32, []uint8, []uint8, []float32, []float32) {
		p, m, v := append([]float32(nil), p0...), make([]uint8, n), make([]uint8, n)
		ma, va := make([]float32, nb), make([]float32, nb)
		for i := range m {
			m[i], v[i] = uint8(a.M.Zero), uint8(a.V.Zero)
		}
		for k := range ma {
			ma[k], va[k] = 1, 1
		}
		return p, m, v, ma, va
	}
	// one step from warm moments, C against Go
	p1, m1, v1, ma1, va1 := mk()
	for i := range m1 {
		m1[i], v1[i] = uint8(rng.IntN(256)), uint8(rng.IntN(256))
	}
	for k := range ma1 {
		ma1[k], va1[k] = float32(rng.Float64()), float32(rng.Float64())
	}
	p2, m2, v2, ma2, va2 := append([]float32(nil), p1...), append([]uint8(nil), m1...), append([]uint8(nil), v1...),
		append([]float32(nil), ma1...), append([]float32(nil), va1...)
	AdamW8(p1, g, m1, v1, ma1, va1, a, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
	adamW8Go(p2, g, m2, v2, ma2, va2, a, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
	diff := 0
	for i := range p1 {
		if math.Abs(float64(p1[i]-p2[i])) > 1e-6*(1+math.Abs(float64(p2[i]))) {
			t.Fatalf("p[%d]: %g (kernel) vs %g (Go)", i, p1[i], p2[i])
		}
		if m1[i] != m2[i] || v1[i] != v2[i] {
			diff++
			if d := math.Abs(float64(a.M.Values[m1[i]]-a.M.Values[m2[i]])) + math.Abs(float64(a.V.Values[v1[i]]-a.V.Values[v2[i]])); d > 0.02 {
				t.Fatalf("codes of %d differ by more than one step: m %d/%d v %d/%d", i, m1[i], m2[i], v1[i], v2[i])
			}
		}
	}
	for k := range ma1 {
		if math.Abs(float64(ma1[k]-ma2[k])) > 1e-6*float64(ma2[k]) || math.Abs(float64(va1[k]-va2[k])) > 1e-6*float64(va2[k]) {
			t.Fatalf("absmax of block %d: %g/%g vs %g/%g", k, ma1[k], va1[k], ma2[k], va2[k])
		}
	}
	if diff > 0 {
		t.Errorf("%d of %d codes differ between the kernel and Go (they are meant to agree bit for bit: TestAdamW8Exact)", diff, n)
	}
	// 100 steps against fp32 AdamW
	p8, m8, v8, ma, va := mk()
	driftVsFP32(t, "8-bit", rng, p0, p8, func(g []float32, bc1, bc2 float32) {
		AdamW8(p8, g, m8, v8, ma, va, a, 1e-3, 0.9, 0.95, 1e-8, 0.1, bc1, bc2)
	})
}

// driftVsFP32 runs 100 AdamW steps (lr 1e-3, betas 0.9/0.95, decay 0.1)
// with update, which moves p (starting at p0) with compressed moments,
// beside fp32 AdamW on the same gradients (per-coordinate scales), logs
// how far apart they end, and fails above 5% of the distance fp32 moved.
func driftVsFP32(t *testing.T, kind string, rng *rand.Rand, p0, p []float32, update func(g []float32, bc1, bc2 float32)) {
	n := len(p0)
	g := make([]float32, n)
	p32, m32, v32 := append([]float32(nil), p0...), make([]float32, n), make([]float32, n)
	for s := 1; s <= 100; s++ {
		for i := range g {
			g[i] = float32(rng.NormFloat64()) * (1 + float32(i%7))
		}
		bc1, bc2 := float32(1-math.Pow(0.9, float64(s))), float32(1-math.Pow(0.95, float64(s)))
		update(g, bc1, bc2)
		Generic.AdamW(p32, g, m32, v32, 1e-3, 0.9, 0.95, 1e-8, 0.1, bc1, bc2)
	}
	var drift, moved float64
	for i := range p {
		drift += math.Abs(float64(p[i] - p32[i]))
		moved += math.Abs(float64(p32[i] - p0[i]))
	}
	t.Logf("after 100 steps: mean |p8 - p32| = %.3g, mean |p32 - p0| = %.3g (%.2f%%)", drift/float64(n), moved/float64(n), 100*drift/moved)
	if drift > 0.05*moved {
		t.Errorf("%s states drift %.1f%% of the distance fp32 AdamW moved", kind, 100*drift/moved)
	}
}

// BenchmarkAdamW reports the update rate of fp32 AdamW and of the 8-bit
// kernel on 4M parameters (past the caches), with SetBytes counting the
// bytes each moves: fp32 28 per parameter (p, m, v read and written, g
// read), 8-bit 14 (+8 per block).
func BenchmarkAdamW(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const n = 1 << 22
	p, g := randSlice(rng, n), randSlice(rng, n)
	b.Run("fp32", func(b *testing.B) {
		m, v := make([]float32, n), make([]float32, n)
		b.SetBytes(28 * n)
		for i := 0; i < b.N; i++ {
			Active.AdamW(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.5)
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mparams/s")
	})
	for _, simd := range []bool{false, true} {
		name := "int8-go"
		if simd {
			name = "int8"
		}
		b.Run(name, func(b *testing.B) {
			useSIMD = simd
			defer func() { useSIMD = true }()
			a := &Adam8{M: DynamicMap(true), V: DynamicMap(false), Block: 256}
			m, v := make([]uint8, n), make([]uint8, n)
			ma, va := make([]float32, Blocks(n, 256)), make([]float32, Blocks(n, 256))
			for i := range ma {
				ma[i], va[i] = 1, 1
			}
			b.SetBytes(14*n + 16*int64(len(ma)))
			for i := 0; i < b.N; i++ {
				AdamW8(p, g, m, v, ma, va, a, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.5)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mparams/s")
		})
	}
}

// TestFineTable: the SIMD kernels' lookup (code8_1's arithmetic, here in
// Go) equals Map8.Code on every bucket's ends, every bound and the floats
// next to it, and log-uniform magnitudes down to denormals, both signs.
func TestFineTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, signed := range []bool{true, false} {
		m := DynamicMap(signed)
		if m.fine == nil {
			t.Fatalf("signed=%v: no fine table", signed)
		}
		fine := func(y float32) uint8 {
			a := min(float32(math.Abs(float64(y))), 1)
			b := math.Float32bits(a)
			e := m.fine[b>>fineShift]
			j := int(e & 0xFF)
			if b&0xFFFF > e>>8 {
				j++
			}
			if y < 0 {
				return uint8(max(m.Zero-j, 0))
			}
			return uint8(m.Zero + j)
		}
		var ys []float32
		for b := uint32(0); b <= math.Float32bits(1)>>fineShift; b++ {
			ys = append(ys, math.Float32frombits(b<<fineShift), math.Float32frombits(b<<fineShift|0xFFFF))
		}
		for _, bd := range m.Bound {
			ys = append(ys, bd, math.Nextafter32(bd, 0), math.Nextafter32(bd, 3))
		}
		for range 100000 {
			ys = append(ys, float32(math.Pow(10, -44*rng.Float64())))
		}
		ys = append(ys, 1.5, 1e30, 1e-45)
		for _, y := range ys {
			for _, s := range []float32{1, -1} {
				if got, want := fine(s*y), m.Code(s*y); got != want {
					t.Fatalf("signed=%v: y %g (bits %#x): fine table %d, Code %d", signed, s*y, math.Float32bits(s*y), got, want)
				}
			}
		}
	}
}
