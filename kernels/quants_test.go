package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/x448/float16"
)

// TestPackMatchesFakeQuant: unpacking what Q4_0/Q8_0 pack gives, bit for
// bit, what the fake quantizers compute (so QAT on these grids exports
// without loss), on random rows with ties, zeros and an all-zero block.
func TestPackMatchesFakeQuant(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 9))
	const n = 32 * 64
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
		if i%7 == 0 {
			x[i] = float32(rng.IntN(9)-4) / 4 // exact multiples: ties
		}
	}
	for i := 64; i < 96; i++ {
		x[i] = 0
	}
	for _, c := range []struct {
		f    FormatID
		fake func(y []float32, mask []uint8, x []float32)
	}{{Q4_0, FakeQuantQ4_0}, {Q8_0, FakeQuantQ8_0}} {
		packed := make([]byte, c.f.RowBytes(n))
		c.f.Pack(packed, x)
		got, want, mask := make([]float32, n), make([]float32, n), make([]uint8, n)
		c.f.Unpack(got, packed)
		c.fake(want, mask, x)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] == 0 && want[i] == 0) {
				t.Fatalf("%s: value %d unpacks to %g, fake quant %g", c.f, i, got[i], want[i])
			}
		}
	}
}

// TestQ4_0HandPacked: one block packed by hand from the rule in
// docs/algorithms.md section 12.
func TestQ4_0HandPacked(t *testing.T) {
	x := make([]float32, 32)
	for j := range x {
		x[j] = float32(j - 16) // max magnitude -16 at j=0: d = -16/-8 = 2
	}
	b := make([]byte, 18)
	Q4_0.Pack(b, x)
	if d := float16.Frombits(binary.LittleEndian.Uint16(b)).Float32(); d != 2 {
		t.Fatalf("d = %g, want 2", d)
	}
	// q_j = min(15, int8((j-16)/2 + 8.5)) = min(15, int8(j/2 + 0.5))
	for j := 0; j < 16; j++ {
		lo, hi := min(15, int8(float32(j)/2+0.5)), min(15, int8(float32(j+16)/2+0.5))
		if want := uint8(lo) | uint8(hi)<<4; b[2+j] != want {
			t.Fatalf("byte %d = %#x, want %#x", j, b[2+j], want)
		}
	}
	q8 := make([]byte, 34)
	Q8_0.Pack(q8, x)
	// d = 16/127; q = round-half-away(x*127/16): -16 -> -127, 15 -> 119 (119.06)
	if int8(q8[2]) != -127 || int8(q8[2+31]) != 119 {
		t.Fatalf("Q8_0 codes %d, %d", int8(q8[2]), int8(q8[33]))
	}
}

// TestFakeQuantQ4_0Kernel: the C kernel and the Go loop agree bit for bit,
// ties (x/d + 8.5 exactly at an integer) and all-zero blocks included.
func TestFakeQuantQ4_0Kernel(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 9))
	const n = 32 * 300
	x := make([]float32, n)
	for i := range x {
		switch i % 5 {
		case 0:
			x[i] = float32(rng.IntN(33)-16) / 4 // ties
		default:
			x[i] = float32(rng.NormFloat64())
		}
	}
	for i := 0; i < 32; i++ {
		x[64+i] = 0
	}
	y1, y2, m1, m2 := make([]float32, n), make([]float32, n), make([]uint8, n), make([]uint8, n)
	FakeQuantQ4_0(y1, m1, x)
	useSIMD = false
	FakeQuantQ4_0(y2, m2, x)
	useSIMD = true
	for i := range y1 {
		if math.Float32bits(y1[i]) != math.Float32bits(y2[i]) || m1[i] != m2[i] {
			t.Fatalf("value %d (%g): kernel %g/%d, Go %g/%d", i, x[i], y1[i], m1[i], y2[i], m2[i])
		}
	}
}

// TestFormats ranges over the table: names parse back to their ids, ggml
// ids map back, block sizes are what Pack writes, packing is idempotent
// (unpacked values are on the grid), and Dot with the partner format
// matches the float64 dot product of the unpacked rows.
func TestFormats(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for id := F32; int(id) < len(Formats); id++ {
		f := Formats[id]
		if got, err := ParseFormat(f.Name); err != nil || got != id {
			t.Errorf("%s: ParseFormat gives %v, %v", f.Name, got, err)
		}
		var back FormatID
		if b, _ := id.MarshalText(); back.UnmarshalText(b) != nil || back != id {
			t.Errorf("%s: text round trip gives %v", f.Name, back)
		}
		if f.GGML >= 0 {
			if got, ok := FormatOfGGML(uint32(f.GGML)); !ok || got != id {
				t.Errorf("%s: FormatOfGGML(%d) = %v, %v", f.Name, f.GGML, got, ok)
			}
		}
		if f.FP.Exp > 0 && (f.FP.RoundFP(f.FP.Max) != f.FP.Max || f.FP.RoundFP(2*f.FP.Max) != f.FP.Max) {
			t.Errorf("%s: RoundFP does not saturate at Max %g", f.Name, f.FP.Max)
		}
		if f.Pack == nil {
			if f.BlockElems != 0 || f.Unpack != nil || f.Dot != nil {
				t.Errorf("%s: a block size or codec without Pack", f.Name)
			}
			continue
		}
		const n = 32 * 12
		if n%f.BlockElems != 0 || id.RowBytes(f.BlockElems) != f.BlockBytes {
			t.Fatalf("%s: block of %d values in %d bytes", f.Name, f.BlockElems, f.BlockBytes)
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		p := make([]byte, id.RowBytes(n)+8) // room past the row stays untouched
		id.Pack(p, x)
		for _, b := range p[id.RowBytes(n):] {
			if b != 0 {
				t.Fatalf("%s: Pack wrote past %d bytes", f.Name, id.RowBytes(n))
			}
		}
		u := make([]float32, n)
		id.Unpack(u, p)
		p2 := make([]byte, id.RowBytes(n))
		id.Pack(p2, u)
		if string(p2) != string(p[:len(p2)]) {
			t.Errorf("%s: packing unpacked values changes them", f.Name)
		}
		// Dot against a row of the partner format
		y := make([]float32, n)
		for i := range y {
			y[i] = float32(rng.NormFloat64())
		}
		py := make([]byte, f.Partner.RowBytes(n))
		f.Partner.Pack(py, y)
		uy := make([]float32, n)
		f.Partner.Unpack(uy, py)
		var want, mag float64
		for i := range u {
			want += float64(u[i]) * float64(uy[i])
			mag += math.Abs(float64(u[i]) * float64(uy[i]))
		}
		if got := f.Dot(p[:id.RowBytes(n)], py); math.Abs(float64(got)-want) > 1e-6*mag {
			t.Errorf("%s . %s: Dot %g, float64 %g (sum |terms| %g)", f.Name, f.Partner, got, want, mag)
		}
	}
	if _, err := ParseFormat("q5_k"); err == nil || !strings.Contains(err.Error(), `"q5_k"`) {
		t.Errorf("ParseFormat(q5_k): %v, want an error naming it", err)
	}
}
