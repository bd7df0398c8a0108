package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/x448/float16"
)

// FormatID names a number format: an index into Formats. IDs are not
// written anywhere: configs and files spell formats by Name (ParseFormat),
// GGUF tensors by GGML type and GGUF files by FileType. The zero value is
// no format.
type FormatID uint8

// The formats. Q4_0 and Q8_0 are llama.cpp's block grids; Int is a
// uniform grid of 2 to 8 bits whose scales and packing a quantizer's spec
// says; the FP formats are small floating-point grids (fake quantization
// only).
const (
	F32 FormatID = iota + 1
	F16
	Q4_0
	Q8_0
	Int
	FP8E4M3
	FP8E5M2
	FP4E2M1
)

// Format is one format's entry in the table (ggml's type traits).
// Adding a format is adding an entry.
type Format struct {
	Name string
	// BlockElems values pack into BlockBytes bytes (rows are whole blocks
	// along the contiguous, input dimension); 0 where the format has no
	// fixed packed layout (Int codes pack as a quantizer's spec says, the
	// FP grids are fake quantization only).
	BlockElems, BlockBytes int
	// Pack writes the blocks of x (a multiple of BlockElems values) to
	// dst: the reference rule, which for Q4_0 and Q8_0 is llama.cpp's
	// (quantize_row_q4_0_ref, quantize_row_q8_0_ref). Unpack writes the
	// values of the blocks in src to dst. Unpacking what Pack wrote gives
	// bit for bit what FakeQuantQ4_0 and FakeQuantQ8_0 compute, so a model
	// trained on those grids exports without loss. Nil without a layout.
	Pack   func(dst []byte, x []float32)
	Unpack func(dst []float32, src []byte)
	// Dot returns the dot product of a row x of this format and a row y
	// (as many values) packed as Partner, the format of the other operand
	// (ggml's vec_dot and vec_dot_type: Q4_0 dots with Q8_0). The
	// reference loops; the products that run models are GemmPacked and
	// GemmR4 (activations in PackedQ8, Q8_0 blocks with corrections).
	Dot     func(x, y []byte) float32
	Partner FormatID
	// FP holds the parameters of the floating-point grids (Exp 0 for the
	// others).
	FP FPFormat
	// GGML is the ggml type id of tensors in this format and FileType
	// general.file_type (llama_ftype) of a GGUF whose matrices take it;
	// -1 where llama.cpp has none.
	GGML, FileType int
}

// Formats is the table, indexed by FormatID.
var Formats = [...]Format{
	F32: {Name: "f32", BlockElems: 1, BlockBytes: 4, Pack: packF32, Unpack: unpackF32, Dot: dotF32, Partner: F32,
		GGML: 0, FileType: 0},
	F16: {Name: "f16", BlockElems: 1, BlockBytes: 2, Pack: packF16, Unpack: unpackF16, Dot: dotF16, Partner: F16,
		GGML: 1, FileType: 1},
	Q4_0: {Name: "q4_0", BlockElems: 32, BlockBytes: 18, Pack: packQ4_0, Unpack: unpackQ4_0, Dot: dotQ4_0Q8_0, Partner: Q8_0,
		GGML: 2, FileType: 2},
	Q8_0: {Name: "q8_0", BlockElems: 32, BlockBytes: 34, Pack: packQ8_0, Unpack: unpackQ8_0, Dot: dotQ8_0Q8_0, Partner: Q8_0,
		GGML: 8, FileType: 7},
	Int:     {Name: "int", GGML: -1, FileType: -1},
	FP8E4M3: {Name: "fp8_e4m3", FP: FPFormat{Exp: 4, Man: 3, Bias: 7, Max: 448, Subnormals: true}, GGML: -1, FileType: -1},
	FP8E5M2: {Name: "fp8_e5m2", FP: FPFormat{Exp: 5, Man: 2, Bias: 15, Max: 57344, Subnormals: true}, GGML: -1, FileType: -1},
	FP4E2M1: {Name: "fp4_e2m1", FP: FPFormat{Exp: 2, Man: 1, Bias: 1, Max: 6, Subnormals: true}, GGML: -1, FileType: -1},
}

// String is the format's name ("" for no format).
func (f FormatID) String() string {
	if int(f) >= len(Formats) {
		return fmt.Sprintf("FormatID(%d)", uint8(f))
	}
	return Formats[f].Name
}

// RowBytes is the packed size of n values (a multiple of the block).
func (f FormatID) RowBytes(n int) int { return n / Formats[f].BlockElems * Formats[f].BlockBytes }

// Pack is Formats[f].Pack.
func (f FormatID) Pack(dst []byte, x []float32) { Formats[f].Pack(dst, x) }

// Unpack is Formats[f].Unpack.
func (f FormatID) Unpack(dst []float32, src []byte) { Formats[f].Unpack(dst, src) }

// FP is Formats[f].FP.
func (f FormatID) FP() FPFormat { return Formats[f].FP }

// ParseFormat returns the format called name; an error names it and the
// formats there are.
func ParseFormat(name string) (FormatID, error) {
	for id := F32; int(id) < len(Formats); id++ {
		if Formats[id].Name == name {
			return id, nil
		}
	}
	names := make([]string, 0, len(Formats))
	for id := F32; int(id) < len(Formats); id++ {
		names = append(names, Formats[id].Name)
	}
	return 0, fmt.Errorf("format %q, want one of %s", name, strings.Join(names, ", "))
}

// MarshalText spells the format by name (configs, quant.json).
func (f FormatID) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText parses a format name; "" is no format (left for the
// reader's validation to name).
func (f *FormatID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*f = 0
		return nil
	}
	id, err := ParseFormat(string(b))
	if err != nil {
		return err
	}
	*f = id
	return nil
}

// FormatOfGGML returns the format of a ggml type id.
func FormatOfGGML(ggml uint32) (FormatID, bool) {
	for id := F32; int(id) < len(Formats); id++ {
		if Formats[id].GGML >= 0 && uint32(Formats[id].GGML) == ggml {
			return id, true
		}
	}
	return 0, false
}

func checkBlocks(op string, n, nb, bytesPerBlock int) {
	if n%32 != 0 || nb < n/32*bytesPerBlock {
		panic(fmt.Sprintf("kernels: %s: %d values, %d bytes", op, n, nb))
	}
}

func packF32(dst []byte, x []float32) {
	for i, v := range x {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func unpackF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func packF16(dst []byte, x []float32) {
	for i, v := range x {
		binary.LittleEndian.PutUint16(dst[2*i:], uint16(float16.Fromfloat32(v)))
	}
}

func unpackF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = float16.Frombits(binary.LittleEndian.Uint16(src[2*i:])).Float32()
	}
}

// dotF32 accumulates in float64 (ggml_vec_dot_f32's ggml_float).
func dotF32(x, y []byte) float32 {
	var s float64
	for i := 0; i+4 <= len(x); i += 4 {
		s += float64(math.Float32frombits(binary.LittleEndian.Uint32(x[i:])) * math.Float32frombits(binary.LittleEndian.Uint32(y[i:])))
	}
	return float32(s)
}

// dotF16 multiplies in float32 and accumulates in float64 (ggml_vec_dot_f16).
func dotF16(x, y []byte) float32 {
	var s float64
	for i := 0; i+2 <= len(x); i += 2 {
		a := float16.Frombits(binary.LittleEndian.Uint16(x[i:])).Float32()
		b := float16.Frombits(binary.LittleEndian.Uint16(y[i:])).Float32()
		s += float64(a * b)
	}
	return float32(s)
}

// dotQ4_0Q8_0 is ggml_vec_dot_q4_0_q8_0's reference loop: per block the
// exact integer sum of (q-8)*y, scaled by both fp16 scales, summed in
// float32.
func dotQ4_0Q8_0(x, y []byte) float32 {
	var s float32
	for b := 0; 18*b+18 <= len(x); b++ {
		xb, yb := x[18*b:18*b+18], y[34*b:34*b+34]
		var sum int32
		for j := 0; j < 16; j++ {
			sum += (int32(xb[2+j]&15)-8)*int32(int8(yb[2+j])) + (int32(xb[2+j]>>4)-8)*int32(int8(yb[18+j]))
		}
		s += float32(sum) * f16At(xb) * f16At(yb)
	}
	return s
}

// dotQ8_0Q8_0 is ggml_vec_dot_q8_0_q8_0's reference loop.
func dotQ8_0Q8_0(x, y []byte) float32 {
	var s float32
	for b := 0; 34*b+34 <= len(x); b++ {
		xb, yb := x[34*b:34*b+34], y[34*b:34*b+34]
		var sum int32
		for j := 0; j < 32; j++ {
			sum += int32(int8(xb[2+j])) * int32(int8(yb[2+j]))
		}
		s += float32(sum) * f16At(xb) * f16At(yb)
	}
	return s
}

// f16At is the fp16 scale at the start of a block.
func f16At(b []byte) float32 { return float16.Frombits(binary.LittleEndian.Uint16(b)).Float32() }

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
