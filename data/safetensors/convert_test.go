package safetensors

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// torchPython is Debian's interpreter, where apt's python3-torch lives.
const torchPython = "/usr/bin/python3"

// needTorch skips without torch, unless QAT_REQUIRE_TORCH=1 (make test
// sets it), where its absence fails the test.
func needTorch(t *testing.T) {
	t.Helper()
	if err := exec.Command(torchPython, "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("QAT_REQUIRE_TORCH") == "1" {
			t.Fatalf("QAT_REQUIRE_TORCH=1 but %s cannot import torch: %v", torchPython, err)
		}
		t.Skip("python3-torch not installed")
	}
}

// allHalves writes, with PyTorch and its own byte layout (the header
// built by hand, not by this package), a safetensors file holding every
// 16-bit pattern as BF16 ("bf16") and as F16 ("f16"), and torch's float32
// of each (.to(torch.float32)) as F32 ("bf16_f32", "f16_f32").
const allHalves = `
import json, struct, sys, torch
bits = torch.arange(65536, dtype=torch.int32).to(torch.int16)
ts = {}
for name, dt in (("bf16", torch.bfloat16), ("f16", torch.float16)):
    h = bits.view(dt)
    ts[name] = ("BF16" if dt == torch.bfloat16 else "F16", bits.numpy().tobytes())
    ts[name + "_f32"] = ("F32", h.to(torch.float32).numpy().tobytes())
hdr, off, data = {}, 0, b""
for name, (dt, b) in ts.items():
    hdr[name] = {"dtype": dt, "shape": [65536], "data_offsets": [off, off + len(b)]}
    off += len(b); data += b
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + data)
`

// TestHalvesAgainstTorch: BF16 and F16 convert to the float32 PyTorch
// gives, for every one of the 65536 bit patterns of each (zeros,
// subnormals, infinities, NaNs included), bit for bit (a NaN's payload
// too); and FromBF16 rounds every such float32 back to its pattern.
func TestHalvesAgainstTorch(t *testing.T) {
	needTorch(t)
	path := filepath.Join(t.TempDir(), "halves.safetensors")
	if out, err := exec.Command(torchPython, "-c", allHalves, path).CombinedOutput(); err != nil {
		t.Fatalf("torch: %v\n%s", err, out)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{"bf16", "f16"} {
		h, _ := f.Get(name)
		ref, _ := f.Get(name + "_f32")
		want, err := ref.F32()
		if err != nil {
			t.Fatal(err)
		}
		got, err := h.Float32()
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s bits %#04x: %g (%#08x), torch %g (%#08x)", name, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
		}
		if name == "bf16" {
			for i, x := range want {
				if b := BF16Bits(x); b != uint16(i) && !(x != x && b|0x40 == uint16(i)|0x40) {
					t.Fatalf("BF16Bits(%g) = %#04x, want %#04x", x, b, i)
				}
			}
		}
	}
}

// roundBF16 is float32 -> bfloat16 rounding computed in float64: the
// nearest of the two bfloat16 neighbours of x (the top 16 bits, and the
// next pattern up), ties to the even pattern.
func roundBF16(x float32) uint16 {
	lo := uint16(math.Float32bits(x) >> 16)
	hi := lo + 1
	dl := math.Abs(float64(x) - float64(math.Float32frombits(uint32(lo)<<16)))
	dh := math.Abs(float64(math.Float32frombits(uint32(hi)<<16)) - float64(x))
	if dl < dh || (dl == dh && lo%2 == 0) {
		return lo
	}
	return hi
}

// TestBF16Rounding: BF16Bits rounds to nearest, ties to even, as the
// float64 computation does, on finite float32 values of every exponent,
// the halfway cases among them.
func TestBF16Rounding(t *testing.T) {
	for e := uint32(0); e < 255; e++ {
		for _, m := range []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0x18000, 0x17fff, 0x7fffff, 0x7f8000, 0x7fc000, 0x123456} {
			for _, s := range []uint32{0, 1 << 31} {
				x := math.Float32frombits(s | e<<23 | m)
				if math.IsInf(float64(x), 0) || math.Abs(float64(x)) >= float64(math.Float32frombits(0x7f7f8000)) {
					continue // rounds to infinity: outside the neighbours' comparison
				}
				if got, want := BF16Bits(x), roundBF16(x); got != want {
					t.Fatalf("BF16Bits(%g = %#08x) = %#04x, want %#04x", x, math.Float32bits(x), got, want)
				}
			}
		}
	}
}

// TestFloat32IntoRefuses: a non-float dtype or a length mismatch is an
// error naming the tensor.
func TestFloat32IntoRefuses(t *testing.T) {
	i := FromI32("ids", []int{2}, []int32{1, 2})
	if err := i.Float32Into(make([]float32, 2)); err == nil || !contains(err.Error(), "ids", "I32") {
		t.Errorf("I32: %v", err)
	}
	b := FromBF16("w", []int{3}, []float32{1, 2, 3})
	if err := b.Float32Into(make([]float32, 2)); err == nil || !contains(err.Error(), "w") {
		t.Errorf("short dst: %v", err)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
