package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
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
		f    *Format
		fake func(y []float32, mask []uint8, x []float32)
	}{{Q4_0, FakeQuantQ4_0}, {Q8_0, FakeQuantQ8_0}} {
		packed := make([]byte, c.f.RowBytes(n))
		c.f.Pack(packed, x)
		got, want, mask := make([]float32, n), make([]float32, n), make([]uint8, n)
		c.f.Unpack(got, packed)
		c.fake(want, mask, x)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] == 0 && want[i] == 0) {
				t.Fatalf("%s: value %d unpacks to %g, fake quant %g", c.f.Name, i, got[i], want[i])
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
