package kernels

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// TestEncodeE4M3: the byte encoder agrees with RoundFP (checked against
// the table of all E4M3 values in package qat's tests) on every value,
// every midpoint and its neighbours, random values, saturation and
// subnormals.
func TestEncodeE4M3(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 3))
	var vs []float32
	for c := 0; c < 256; c++ {
		v := E4M3Values[c]
		if v != v {
			continue
		}
		vs = append(vs, v, math.Nextafter32(v, 1000), math.Nextafter32(v, -1000))
		if c&0x7F < 0x7E {
			mid := (v + E4M3Values[c+1]) / 2
			vs = append(vs, mid, math.Nextafter32(mid, 1000), math.Nextafter32(mid, -1000))
		}
	}
	for i := 0; i < 100000; i++ {
		vs = append(vs, float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(30)-20)))
	}
	vs = append(vs, 448, 460, 464, 1e6, -1e6, 0, 1.0/1024, 1.0/512, 3.0/1024)
	for _, v := range vs {
		got, want := E4M3Values[EncodeE4M3(v)], FP8E4M3.FP().RoundFP(v)
		if got != want && !(got == 0 && want == 0) {
			t.Fatalf("EncodeE4M3(%g) decodes to %g, RoundFP gives %g", v, got, want)
		}
	}
}

// TestLog2Exp2: the polynomial log2 and exp2 of the FP8 kernels against
// the math package: log2p within 1.5e-6 of |log2 x| (plus one float32
// ulp of the exponent it adds), exp2p within 3e-7 relative, near 1 and
// across the exponent range.
func TestLog2Exp2(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	for i := 0; i < 200000; i++ {
		x := float32(math.Ldexp(1+rng.Float64(), rng.IntN(250)-125))
		if i%4 == 0 {
			x = float32(1 + (rng.Float64()-0.5)*1e-3)
		}
		w := math.Log2(float64(x))
		if d := math.Abs(float64(log2p(x)) - w); d > 1.5e-6*math.Abs(w)+6e-8*math.Exp2(math.Floor(math.Log2(max(math.Abs(w), 1)))) {
			t.Fatalf("log2p(%g) = %g, want %g", x, log2p(x), w)
		}
		y := float32(rng.Float64()*250 - 125)
		if e := math.Exp2(float64(y)); math.Abs(float64(exp2p(y))-e) > 3e-7*e {
			t.Fatalf("exp2p(%g) = %g, want %g", y, exp2p(y), e)
		}
	}
}

// TestFMA32: the emulated single-rounding FMA against big.Float's exact
// product and sum, rounded once to float32, on random operands whose sum
// cancels or lands near float32 midpoints.
func TestFMA32(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for i := 0; i < 200000; i++ {
		a := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(40)-20))
		b := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(40)-20))
		c := -a * b // cancellation: the rounding error of the product is all that is left
		switch i % 3 {
		case 1:
			c = float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(60)-30))
		case 2:
			c = math.Nextafter32(c, float32(rng.NormFloat64()))
		}
		exact := new(big.Float).SetPrec(200).Mul(big.NewFloat(float64(a)).SetPrec(200), big.NewFloat(float64(b)).SetPrec(200))
		exact.Add(exact, big.NewFloat(float64(c)).SetPrec(200))
		want, _ := exact.Float32()
		if got := fma32(a, b, c); math.Float32bits(got) != math.Float32bits(want) && !(got == 0 && want == 0) {
			t.Fatalf("fma32(%g, %g, %g) = %g, want %g", a, b, c, got, want)
		}
	}
}

// TestDynamicRangeExpansion: k from the formula in float64; the group's
// maximum expands to 448 and its minimum stays inside E4M3's range; codes
// are E4M3 of the float64 power function (near-ties excepted); expanding
// and shrinking returns each value within its E4M3 half-step divided by k.
func TestDynamicRangeExpansion(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	for trial := 0; trial < 200; trial++ {
		n := 128
		decades := rng.Float64() * 12 // up to 12 decades of range
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(math.Pow(10, -decades*rng.Float64()) * float64(1-2*rng.IntN(2)))
		}
		if trial%10 == 0 {
			x[3] = 0
		}
		hi, lo := RangeDRE(x)
		d := DREParams(hi, lo)
		mx, mn := float64(fromBF16(hi)), float64(fromBF16(lo))
		if wk := math.Floor(math.Log2(448*448/2)/math.Log2(mx/mn)*16) / 16; mx/mn > 1 && float64(d.K) != min(max(wk, 1.0/16), 256) {
			t.Fatalf("k = %g, formula %g (range %g)", d.K, wk, mx/mn)
		}
		c := math.Sqrt(mx * mn) // COAT's centre and scale, which the kernels' form cancels
		s := math.Pow(mx/c, float64(d.K)) / 448
		if float64(d.Hi) != mx || math.Abs(float64(d.Log2Hi)-math.Log2(mx)) > 1e-7*math.Abs(math.Log2(mx)) {
			t.Fatalf("hi %g log2 %g, want %g %g", d.Hi, d.Log2Hi, mx, math.Log2(mx))
		}
		for i, v := range x {
			q := d.Expand(v)
			if v == 0 {
				if q != 0 {
					t.Fatalf("0 expands to %d", q)
				}
				continue
			}
			u := math.Pow(math.Abs(float64(v))/c, float64(d.K)) / s
			if u > 448*(1+1e-5) || u < 1.0/512 {
				t.Fatalf("value %g expands to %g, outside E4M3", v, u)
			}
			want := FP8E4M3.FP().RoundFP(float32(math.Copysign(u, float64(v))))
			if got := E4M3Values[q]; got != want {
				// allowed only next to a tie of the float64 value
				r := float64(FP8E4M3.FP().RoundFP(float32(u * (1 + 1e-5))))
				l := float64(FP8E4M3.FP().RoundFP(float32(u * (1 - 1e-5))))
				if r == l {
					t.Fatalf("x[%d] = %g: code %g, E4M3 of %g is %g", i, v, got, u, want)
				}
			}
			back := float64(d.Shrink(q))
			step := 1.0 / 16 // E4M3's half step, relative, for normals
			if u < 1.0/64 {
				step = (1.0 / 1024) / u // subnormals: half of 2^-9, relative
			}
			// u within (1±step) gives x within (1±step)^(1/k)
			ik := 1 / float64(d.K)
			bound := max(math.Pow(1+step, ik)-1, 1-math.Pow(max(1-step, 0), ik))
			if rel := math.Abs(back-float64(v)) / math.Abs(float64(v)); rel > bound*1.01+1e-5 {
				t.Fatalf("x[%d] = %g came back as %g (relative error %g, bound %g, k %g, u %g)", i, v, back, rel, bound, d.K, u)
			}
		}
	}
}

// TestAdamWFP8 compares the fused kernel with the Go loop on one step and
// runs 100 steps beside fp32 AdamW on the same gradients, reporting the
// drift.
func TestAdamWFP8(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 7))
	const n, group = 128*40 + 50, 128
	nb := Blocks(n, group)
	p0, g := randSlice(rng, n), randSlice(rng, n)
	p1, m1, v1, mr1, vr1 := append([]float32(nil), p0...), make([]uint8, n), make([]uint8, n), make([]uint16, 2*nb), make([]uint16, 2*nb)
	// warm states: a step from zero, then compare the next step
	AdamWFP8(p1, g, m1, v1, mr1, vr1, group, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.1, 0.05)
	for i := range g {
		g[i] = float32(rng.NormFloat64())
	}
	p2, m2, v2 := append([]float32(nil), p1...), append([]uint8(nil), m1...), append([]uint8(nil), v1...)
	mr2, vr2 := append([]uint16(nil), mr1...), append([]uint16(nil), vr1...)
	AdamWFP8(p1, g, m1, v1, mr1, vr1, group, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975)
	adamWFP8Go(p2, g, m2, v2, mr2, vr2, group, 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975)
	diff := 0
	for i := range p1 {
		if math.Abs(float64(p1[i]-p2[i])) > 1e-5*(1+math.Abs(float64(p2[i]))) {
			t.Fatalf("p[%d]: %g (kernel) vs %g (Go)", i, p1[i], p2[i])
		}
		if m1[i] != m2[i] || v1[i] != v2[i] {
			diff++
			if int(m1[i])-int(m2[i]) > 1 || int(m2[i])-int(m1[i]) > 1 || int(v1[i])-int(v2[i]) > 1 || int(v2[i])-int(v1[i]) > 1 {
				t.Fatalf("codes of %d differ by more than one step: m %d/%d v %d/%d", i, m1[i], m2[i], v1[i], v2[i])
			}
		}
	}
	for k := range mr1 {
		if mr1[k] != mr2[k] || vr1[k] != vr2[k] {
			t.Fatalf("range %d: %x/%x vs %x/%x", k, mr1[k], vr1[k], mr2[k], vr2[k])
		}
	}
	if diff > 0 {
		t.Errorf("%d of %d codes differ between the kernel and Go", diff, n)
	}
	p8, m8, v8, mr, vr := append([]float32(nil), p0...), make([]uint8, n), make([]uint8, n), make([]uint16, 2*nb), make([]uint16, 2*nb)
	driftVsFP32(t, "FP8", rng, p0, p8, func(g []float32, bc1, bc2 float32) {
		AdamWFP8(p8, g, m8, v8, mr, vr, group, 1e-3, 0.9, 0.95, 1e-8, 0.1, bc1, bc2)
	})
}

// BenchmarkAdamWFP8 is BenchmarkAdamW's figure for FP8 states with range
// expansion (14 bytes per parameter, +8 per group of 128).
func BenchmarkAdamWFP8(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const n, group = 1 << 22, 128
	p, g := randSlice(rng, n), randSlice(rng, n)
	for _, simd := range []bool{false, true} {
		name := "fp8-go"
		if simd {
			name = "fp8"
		}
		b.Run(name, func(b *testing.B) {
			useSIMD = simd
			defer func() { useSIMD = true }()
			m, v := make([]uint8, n), make([]uint8, n)
			mr, vr := make([]uint16, 2*n/group), make([]uint16, 2*n/group)
			b.SetBytes(14*n + 16*n/group)
			for i := 0; i < b.N; i++ {
				AdamWFP8(p, g, m, v, mr, vr, group, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.5)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mparams/s")
		})
	}
}
