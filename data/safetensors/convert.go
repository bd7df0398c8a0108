package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// IsFloat reports whether dtype is one Float32Into converts: the float
// formats checkpoints ship weights in (F32, and F16 / BF16 as Hugging Face
// models are published).
func IsFloat(dtype string) bool { return dtype == "F32" || dtype == "F16" || dtype == "BF16" }

// Float32Into writes t's values into dst as float32, converting F16 and
// BF16 exactly (every half and bfloat16 value is a float32: BF16 is the
// top 16 bits of a float32, F16 widens through float16.Float32). dst must
// hold exactly t's elements; other dtypes are refused naming the tensor.
// It reads t.Data once, in order, so a memory-mapped tensor's pages are
// touched sequentially.
func (t Tensor) Float32Into(dst []float32) error {
	sz, ok := DTypeSize[t.DType]
	if !ok || !IsFloat(t.DType) {
		return fmt.Errorf("tensor %s: dtype %s, want F32, F16 or BF16", t.Name, t.DType)
	}
	if len(t.Data) != sz*len(dst) {
		return fmt.Errorf("tensor %s: %d bytes of %s for %d values", t.Name, len(t.Data), t.DType, len(dst))
	}
	b := t.Data
	switch t.DType {
	case "F32":
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case "BF16":
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case "F16":
		for i := range dst {
			dst[i] = f16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
	return nil
}

// f16ToF32 is float16.Float32 of the bits; a function so the loop above
// stays one line per format.
func f16ToF32(h uint16) float32 { return float16.Frombits(h).Float32() }

// Float32 returns t's values as float32 (Float32Into into a new slice).
func (t Tensor) Float32() ([]float32, error) {
	sz, ok := DTypeSize[t.DType]
	if !ok || !IsFloat(t.DType) {
		return nil, fmt.Errorf("tensor %s: dtype %s, want F32, F16 or BF16", t.Name, t.DType)
	}
	out := make([]float32, len(t.Data)/sz)
	return out, t.Float32Into(out)
}

// FromBF16 makes a BF16 tensor, each value rounded to nearest even (NaN
// kept a quiet NaN): what torch's .to(torch.bfloat16) does.
func FromBF16(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], BF16Bits(x))
	}
	return Tensor{Name: name, DType: "BF16", Shape: shape, Data: b}
}

// BF16Bits rounds x to bfloat16 (nearest, ties to even) and returns its
// bits.
func BF16Bits(x float32) uint16 {
	u := math.Float32bits(x)
	if x != x {
		return uint16(u>>16) | 0x40 // quiet NaN, sign kept
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}
