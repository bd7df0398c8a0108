// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header mapping tensor names to dtype,
// shape and byte offsets (plus an optional "__metadata__" string map), then
// the raw little-endian tensor data.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"

	"github.com/x448/float16"

	"qat/data/atomic"
)

// Tensor is one named tensor with its raw little-endian bytes.
type Tensor struct {
	Name  string
	DType string // F32, F16, BF16, I32, I64, U8, I8, F64, F8_E4M3, ...
	Shape []int
	Data  []byte
}

// File is a parsed safetensors file.
type File struct {
	Tensors  []Tensor // in data order
	Metadata map[string]string
	maps     [][]byte          // Open's and OpenSharded's mappings (Close)
	src      map[string]string // tensor -> shard path (OpenSharded)
}

// DTypeSize is the byte size of each supported dtype.
var DTypeSize = map[string]int{"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
	"F8_E4M3": 1, "F8_E5M2": 1}

// maxHeader bounds the JSON header (the reference implementation uses 100 MB).
const maxHeader = 100 << 20

type entry struct {
	DType   string   `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// Get returns the tensor called name.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// F32 returns t's values as float32; it fails for other dtypes.
func (t Tensor) F32() ([]float32, error) {
	if t.DType != "F32" {
		return nil, fmt.Errorf("tensor %s: dtype %s, want F32", t.Name, t.DType)
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// I32 returns t's values as int32; it fails for other dtypes.
func (t Tensor) I32() ([]int32, error) {
	if t.DType != "I32" {
		return nil, fmt.Errorf("tensor %s: dtype %s, want I32", t.Name, t.DType)
	}
	out := make([]int32, len(t.Data)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// FromF32 makes an F32 tensor.
func FromF32(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, DType: "F32", Shape: shape, Data: b}
}

// F16 returns t's values as float32; it fails for other dtypes.
func (t Tensor) F16() ([]float32, error) {
	if t.DType != "F16" {
		return nil, fmt.Errorf("tensor %s: dtype %s, want F16", t.Name, t.DType)
	}
	out := make([]float32, len(t.Data)/2)
	for i := range out {
		out[i] = float16.Frombits(binary.LittleEndian.Uint16(t.Data[2*i:])).Float32()
	}
	return out, nil
}

// FromF16 makes an F16 tensor (values rounded to nearest).
func FromF16(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(float16.Fromfloat32(x)))
	}
	return Tensor{Name: name, DType: "F16", Shape: shape, Data: b}
}

// FromI32 makes an I32 tensor.
func FromI32(name string, shape []int, v []int32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return Tensor{Name: name, DType: "I32", Shape: shape, Data: b}
}

func numel(shape []int) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt64/int64(d)) {
			return 0, false
		}
		n *= int64(d)
	}
	return n, true
}

type rawEntry struct {
	DType   *string  `json:"dtype"`
	Shape   *[]int   `json:"shape"`
	Offsets *[]int64 `json:"data_offsets"`
}

// Parse decodes a whole file held in b; the returned tensors alias b.
// The header length, every shape (dims non-negative, their product
// overflow-checked) and every data_offsets pair (inside the data, exactly
// dtype size * elements long, no two tensors overlapping) are checked;
// errors name the tensor and the field.
func Parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("safetensors: %d bytes, too short for the header length", len(b))
	}
	hl := binary.LittleEndian.Uint64(b)
	if hl > maxHeader || hl > uint64(len(b)-8) {
		return nil, fmt.Errorf("safetensors: header length %d: the file has %d bytes after it (limit %d)", hl, len(b)-8, maxHeader)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hl], &raw); err != nil {
		return nil, fmt.Errorf("safetensors: header: %w", err)
	}
	data := b[8+hl:]
	f := &File{}
	var los []int64
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__: %w", err)
			}
			continue
		}
		t, lo, err := entryOf(name, msg, data)
		if err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		f.Tensors = append(f.Tensors, t)
		los = append(los, lo)
	}
	idx := make([]int, len(los))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(i, j int) bool {
		a, b := idx[i], idx[j]
		return los[a] < los[b] || (los[a] == los[b] && f.Tensors[a].Name < f.Tensors[b].Name)
	})
	sorted := make([]Tensor, len(idx))
	for i, k := range idx {
		sorted[i] = f.Tensors[k]
		if i > 0 {
			p := idx[i-1]
			if end := los[p] + int64(len(f.Tensors[p].Data)); los[k] < end {
				return nil, fmt.Errorf("safetensors: tensors %q (data_offsets [%d, %d]) and %q (data_offsets [%d, %d]) overlap",
					f.Tensors[p].Name, los[p], end, f.Tensors[k].Name, los[k], los[k]+int64(len(f.Tensors[k].Data)))
			}
		}
	}
	f.Tensors = sorted
	return f, nil
}

// entryOf checks one header entry against the data section.
func entryOf(name string, msg json.RawMessage, data []byte) (Tensor, int64, error) {
	var e rawEntry
	if err := json.Unmarshal(msg, &e); err != nil {
		return Tensor{}, 0, err
	}
	if e.DType == nil || e.Shape == nil || e.Offsets == nil {
		return Tensor{}, 0, fmt.Errorf("dtype, shape and data_offsets required")
	}
	sz, ok := DTypeSize[*e.DType]
	if !ok {
		return Tensor{}, 0, fmt.Errorf("dtype %q unknown", *e.DType)
	}
	shape := *e.Shape
	n := int64(1)
	for j, d := range shape {
		if d < 0 {
			return Tensor{}, 0, fmt.Errorf("shape %v: dim %d = %d", shape, j, d)
		}
		if d > 0 && n > math.MaxInt64/int64(sz)/int64(d) {
			return Tensor{}, 0, fmt.Errorf("shape %v: dim %d = %d: the %s bytes overflow", shape, j, d, *e.DType)
		}
		n *= int64(d)
	}
	if len(*e.Offsets) != 2 {
		return Tensor{}, 0, fmt.Errorf("data_offsets %v: want [begin, end]", *e.Offsets)
	}
	lo, hi := (*e.Offsets)[0], (*e.Offsets)[1]
	if lo < 0 || hi < lo || hi > int64(len(data)) {
		return Tensor{}, 0, fmt.Errorf("data_offsets [%d, %d] outside the %d data bytes", lo, hi, len(data))
	}
	if hi-lo != n*int64(sz) {
		return Tensor{}, 0, fmt.Errorf("data_offsets [%d, %d]: %d bytes, shape %v of %s needs %d", lo, hi, hi-lo, shape, *e.DType, n*int64(sz))
	}
	if shape == nil {
		shape = []int{}
	}
	return Tensor{Name: name, DType: *e.DType, Shape: shape, Data: data[lo:hi:hi]}, lo, nil
}

// Read parses the file at path.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(b)
	if err != nil {
		return nil, &InputError{fmt.Errorf("%s: %w", path, err)}
	}
	return f, nil
}

// Encode serialises tensors (in the given order) and metadata.
func Encode(tensors []Tensor, meta map[string]string) ([]byte, error) {
	hdr := map[string]any{}
	if len(meta) > 0 {
		hdr["__metadata__"] = meta
	}
	var off int64
	for _, t := range tensors {
		sz, ok := DTypeSize[t.DType]
		if !ok {
			return nil, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", t.Name, t.DType)
		}
		if n, ok := numel(t.Shape); !ok || n*int64(sz) != int64(len(t.Data)) {
			return nil, fmt.Errorf("safetensors: tensor %q: %d bytes for shape %v of %s", t.Name, len(t.Data), t.Shape, t.DType)
		}
		if _, dup := hdr[t.Name]; dup || t.Name == "" {
			return nil, fmt.Errorf("safetensors: duplicate or empty tensor name %q", t.Name)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		hdr[t.Name] = entry{DType: t.DType, Shape: shape, Offsets: [2]int64{off, off + int64(len(t.Data))}}
		off += int64(len(t.Data))
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	for len(h)%8 != 0 { // the format pads the header with spaces to 8 bytes
		h = append(h, ' ')
	}
	out := make([]byte, 8, 8+len(h)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(h)))
	out = append(out, h...)
	for _, t := range tensors {
		out = append(out, t.Data...)
	}
	return out, nil
}

// Write encodes tensors to path through a temporary file in the same
// directory, synced and renamed, so a reader never sees a partial file.
func Write(path string, tensors []Tensor, meta map[string]string) error {
	b, err := Encode(tensors, meta)
	if err != nil {
		return err
	}
	return atomic.WriteFile(path, b)
}
