package kernels

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Packed weight formats, one table entry each (ggml's type traits): the
// ggml type id, values per block, bytes per block, and the row packer and
// unpacker. Rows are whole blocks along the contiguous (input) dimension.
// Q4_0 and Q8_0 pack exactly as llama.cpp's reference quantizers
// (quantize_row_q4_0_ref, quantize_row_q8_0_ref) and unpack to exactly what
// FakeQuantQ4_0 and FakeQuantQ8_0 compute, so a model trained on those
// grids exports without loss.
type Format struct {
	Name         string
	GGML         uint32
	Block, Bytes int
	// Pack writes the blocks of x (a multiple of Block values) to dst.
	Pack func(dst []byte, x []float32)
	// Unpack writes the values of the blocks in src to dst.
	Unpack func(dst []float32, src []byte)
}

// RowBytes is the packed size of n values.
func (f *Format) RowBytes(n int) int { return n / f.Block * f.Bytes }

func checkBlocks(op string, n, nb, bytesPerBlock int) {
	if n%32 != 0 || nb < n/32*bytesPerBlock {
		panic(fmt.Sprintf("kernels: %s: %d values, %d bytes", op, n, nb))
	}
}

// The formats.
var (
	F32 = &Format{Name: "f32", GGML: 0, Block: 1, Bytes: 4,
		Pack: func(dst []byte, x []float32) {
			for i, v := range x {
				binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
			}
		},
		Unpack: func(dst []float32, src []byte) {
			for i := range dst {
				dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
			}
		}}
	F16 = &Format{Name: "f16", GGML: 1, Block: 1, Bytes: 2,
		Pack: func(dst []byte, x []float32) {
			for i, v := range x {
				binary.LittleEndian.PutUint16(dst[2*i:], uint16(float16.Fromfloat32(v)))
			}
		},
		Unpack: func(dst []float32, src []byte) {
			for i := range dst {
				dst[i] = float16.Frombits(binary.LittleEndian.Uint16(src[2*i:])).Float32()
			}
		}}
	Q4_0 = &Format{Name: "q4_0", GGML: 2, Block: 32, Bytes: 18, Pack: packQ4_0, Unpack: unpackQ4_0}
	Q8_0 = &Format{Name: "q8_0", GGML: 8, Block: 32, Bytes: 34, Pack: packQ8_0, Unpack: unpackQ8_0}
)

// Formats lists the formats by name.
var Formats = map[string]*Format{"f32": F32, "f16": F16, "q4_0": Q4_0, "q8_0": Q8_0}

// FormatOf returns the format of a ggml type id.
func FormatOf(ggml uint32) (*Format, bool) {
	for _, f := range Formats {
		if f.GGML == ggml {
			return f, true
		}
	}
	return nil, false
}

// q4_0Block is llama.cpp's Q4_0 rule for one block of 32
// (quantize_row_q4_0_ref): d = m/-8, m the first value of largest
// magnitude, and r = int8(x*(1/d) + 8.5), before the clip at 15 (the
// callers clip: packing stores min(15, r), fake quant also stops the
// gradient where r > 15).
func q4_0Block(blk []float32) (d float32, r [32]int8) {
	var amax, m float32
	for _, v := range blk {
		if a := float32(math.Abs(float64(v))); amax < a {
			amax, m = a, v
		}
	}
	d = m / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	for j, v := range blk {
		// float32(...) keeps Go from fusing the multiply-add: the
		// reference rounds x*id before adding 8.5.
		r[j] = int8(float32(v*id) + 8.5)
	}
	return d, r
}

// q8_0Block is llama.cpp's Q8_0 rule for one block of 32
// (quantize_row_q8_0_ref): d = amax/127, q = round-half-away(x*(1/d)).
func q8_0Block(blk []float32) (d float32, q [32]int8) {
	var amax float32
	for _, v := range blk {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d = amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	for j, v := range blk {
		q[j] = int8(math.Round(float64(v * id)))
	}
	return d, q
}

// packQ4_0 stores fp16 d, then byte j = q[j] | q[j+16]<<4.
func packQ4_0(dst []byte, x []float32) {
	checkBlocks("Q4_0 pack", len(x), len(dst), 18)
	for b := 0; b < len(x)/32; b++ {
		out := dst[18*b : 18*b+18]
		d, r := q4_0Block(x[32*b : 32*b+32])
		binary.LittleEndian.PutUint16(out, uint16(float16.Fromfloat32(d)))
		for j := 0; j < 16; j++ {
			out[2+j] = uint8(min(15, r[j])) | uint8(min(15, r[j+16]))<<4
		}
	}
}

func unpackQ4_0(dst []float32, src []byte) {
	checkBlocks("Q4_0 unpack", len(dst), len(src), 18)
	for b := 0; b < len(dst)/32; b++ {
		in, out := src[18*b:18*b+18], dst[32*b:32*b+32]
		d := float16.Frombits(binary.LittleEndian.Uint16(in)).Float32()
		for j := 0; j < 16; j++ {
			out[j] = float32(int(in[2+j]&15)-8) * d
			out[j+16] = float32(int(in[2+j]>>4)-8) * d
		}
	}
}

// packQ8_0 stores fp16 d, then the 32 int8 codes.
func packQ8_0(dst []byte, x []float32) {
	checkBlocks("Q8_0 pack", len(x), len(dst), 34)
	for b := 0; b < len(x)/32; b++ {
		out := dst[34*b : 34*b+34]
		d, q := q8_0Block(x[32*b : 32*b+32])
		binary.LittleEndian.PutUint16(out, uint16(float16.Fromfloat32(d)))
		for j, v := range q {
			out[2+j] = byte(v)
		}
	}
}

func unpackQ8_0(dst []float32, src []byte) {
	checkBlocks("Q8_0 unpack", len(dst), len(src), 34)
	for b := 0; b < len(dst)/32; b++ {
		in, out := src[34*b:34*b+34], dst[32*b:32*b+32]
		d := float16.Frombits(binary.LittleEndian.Uint16(in)).Float32()
		for j := range out {
			out[j] = float32(int8(in[2+j])) * d
		}
	}
}
