// Package gguf reads and writes GGUF v3 files, llama.cpp's model format:
// the magic "GGUF", a u32 version, i64 tensor and key/value counts, the
// key/values (a string key, a u32 value type, the value), the tensor infos
// (name, u32 dims, u64 ne[] with ne[0] the contiguous dimension, u32 ggml
// type, u64 offset into the data section), padding to the alignment
// (general.alignment, default 32), and the tensor data, each tensor
// starting at an aligned offset. All values are little-endian.
//
// The reader checks every count, length and offset against the file's
// size before it allocates or slices, so that hostile files give errors.
package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sort"

	"qat/data/atomic"
)

// Value types of key/values.
const (
	TypeU8 uint32 = iota
	TypeI8
	TypeU16
	TypeI16
	TypeU32
	TypeI32
	TypeF32
	TypeBool
	TypeString
	TypeArray
	TypeU64
	TypeI64
	TypeF64
)

// ggml tensor types this package knows the sizes of.
const (
	GGMLF32  uint32 = 0
	GGMLF16  uint32 = 1
	GGMLQ4_0 uint32 = 2
	GGMLQ8_0 uint32 = 8
	GGMLBF16 uint32 = 30
)

// typeInfo gives a ggml type's block size (values) and bytes per block:
// what the parser needs to size tensors. The formats the rest of qat packs
// and unpacks are package kernels' table (kernels.Formats).
var typeInfo = map[uint32]struct {
	Name         string
	Block, Bytes int
}{
	GGMLF32: {"F32", 1, 4}, GGMLF16: {"F16", 1, 2}, GGMLQ4_0: {"Q4_0", 32, 18}, GGMLQ8_0: {"Q8_0", 32, 34}, GGMLBF16: {"BF16", 1, 2},
}

// Alignment is GGUF's default data alignment.
const Alignment = 32

// KV is one key/value. Value holds uint8 ... float64, bool, string, or
// an Array.
type KV struct {
	Key   string
	Type  uint32
	Value any
}

// Array is an array value: its element type and elements, a typed slice
// ([]string, []int32, []float32, []uint32, []uint8, []bool ...).
type Array struct {
	Type   uint32
	Values any
}

// Tensor is a tensor info and its data.
type Tensor struct {
	Name string
	// Dims are ggml's ne: Dims[0] is the contiguous dimension (a PyTorch
	// weight [out, in] has Dims [in, out]).
	Dims   []uint64
	Type   uint32
	Offset uint64
	Data   []byte
}

// Elements is the product of the dims.
func (t *Tensor) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a GGUF file in memory.
type File struct {
	Version uint32
	KVs     []KV
	Tensors []Tensor
	// DataOffset is where the data section starts (reading).
	DataOffset uint64
}

// Get returns the value of key.
func (f *File) Get(key string) (KV, bool) {
	for _, kv := range f.KVs {
		if kv.Key == key {
			return kv, true
		}
	}
	return KV{}, false
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (*Tensor, bool) {
	for i := range f.Tensors {
		if f.Tensors[i].Name == name {
			return &f.Tensors[i], true
		}
	}
	return nil, false
}

// U32 returns a u32 key's value; other types are an error (llama.cpp
// rejects an i32 where it reads a u32).
func (f *File) U32(key string) (uint32, error) {
	kv, ok := f.Get(key)
	if !ok {
		return 0, fmt.Errorf("gguf: key %s missing", key)
	}
	v, ok := kv.Value.(uint32)
	if !ok || kv.Type != TypeU32 {
		return 0, fmt.Errorf("gguf: key %s has type %d, want u32", key, kv.Type)
	}
	return v, nil
}

// F32 returns an f32 key's value.
func (f *File) F32(key string) (float32, error) {
	kv, ok := f.Get(key)
	if !ok {
		return 0, fmt.Errorf("gguf: key %s missing", key)
	}
	v, ok := kv.Value.(float32)
	if !ok {
		return 0, fmt.Errorf("gguf: key %s has type %d, want f32", key, kv.Type)
	}
	return v, nil
}

// String returns a string key's value.
func (f *File) String(key string) (string, error) {
	kv, ok := f.Get(key)
	if !ok {
		return "", fmt.Errorf("gguf: key %s missing", key)
	}
	v, ok := kv.Value.(string)
	if !ok {
		return "", fmt.Errorf("gguf: key %s has type %d, want string", key, kv.Type)
	}
	return v, nil
}

// DataSize is the byte size of n values of ggml type typ, or an error for
// unknown types and counts that are not whole blocks.
func DataSize(typ uint32, n uint64) (uint64, error) {
	ti, ok := typeInfo[typ]
	if !ok {
		return 0, fmt.Errorf("ggml type %d not supported", typ)
	}
	if n%uint64(ti.Block) != 0 {
		return 0, fmt.Errorf("%d values are not whole %s blocks of %d", n, ti.Name, ti.Block)
	}
	if n/uint64(ti.Block) > math.MaxUint64/uint64(ti.Bytes) {
		return 0, fmt.Errorf("%d values overflow", n)
	}
	return n / uint64(ti.Block) * uint64(ti.Bytes), nil
}

func align(n, a uint64) uint64 { return (n + a - 1) / a * a }

// Encode lays out f: tensor offsets are assigned in order, aligned;
// duplicate keys or tensor names, a first dimension that is not whole
// blocks, or data of the wrong size are errors.
func Encode(f *File) ([]byte, error) {
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	w(uint32(3))
	w(uint64(len(f.Tensors)))
	w(uint64(len(f.KVs)))
	seen := map[string]bool{}
	for _, kv := range f.KVs {
		if seen[kv.Key] {
			return nil, fmt.Errorf("gguf: duplicate key %s", kv.Key)
		}
		seen[kv.Key] = true
		str(kv.Key)
		w(kv.Type)
		if err := writeValue(&b, kv.Type, kv.Value); err != nil {
			return nil, fmt.Errorf("gguf: key %s: %w", kv.Key, err)
		}
	}
	off := uint64(0)
	names := map[string]bool{}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if names[t.Name] {
			return nil, fmt.Errorf("gguf: duplicate tensor %s", t.Name)
		}
		names[t.Name] = true
		if len(t.Name) >= 64 || len(t.Dims) == 0 || len(t.Dims) > 4 {
			return nil, fmt.Errorf("gguf: tensor %q: name under 64 bytes and 1 to 4 dims required", t.Name)
		}
		if ti := typeInfo[t.Type]; ti.Block > 1 && t.Dims[0]%uint64(ti.Block) != 0 {
			return nil, fmt.Errorf("gguf: tensor %s: ne[0] = %d is not whole %s blocks", t.Name, t.Dims[0], ti.Name)
		}
		size, err := DataSize(t.Type, t.Elements())
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %s: %w", t.Name, err)
		}
		if uint64(len(t.Data)) != size {
			return nil, fmt.Errorf("gguf: tensor %s: %d bytes of data, want %d", t.Name, len(t.Data), size)
		}
		t.Offset = off
		off = align(off+size, Alignment)
		str(t.Name)
		w(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			w(d)
		}
		w(t.Type)
		w(t.Offset)
	}
	b.Write(make([]byte, align(uint64(b.Len()), Alignment)-uint64(b.Len())))
	start := uint64(b.Len())
	for _, t := range f.Tensors {
		b.Write(make([]byte, start+t.Offset-uint64(b.Len())))
		b.Write(t.Data)
	}
	return b.Bytes(), nil
}

func writeValue(b *bytes.Buffer, typ uint32, v any) error {
	w := func(x any) { binary.Write(b, binary.LittleEndian, x) }
	ok := true
	switch typ {
	case TypeU8:
		x, k := v.(uint8)
		w(x)
		ok = k
	case TypeI8:
		x, k := v.(int8)
		w(x)
		ok = k
	case TypeU16:
		x, k := v.(uint16)
		w(x)
		ok = k
	case TypeI16:
		x, k := v.(int16)
		w(x)
		ok = k
	case TypeU32:
		x, k := v.(uint32)
		w(x)
		ok = k
	case TypeI32:
		x, k := v.(int32)
		w(x)
		ok = k
	case TypeF32:
		x, k := v.(float32)
		w(x)
		ok = k
	case TypeBool:
		x, k := v.(bool)
		w(x)
		ok = k
	case TypeU64:
		x, k := v.(uint64)
		w(x)
		ok = k
	case TypeI64:
		x, k := v.(int64)
		w(x)
		ok = k
	case TypeF64:
		x, k := v.(float64)
		w(x)
		ok = k
	case TypeString:
		x, k := v.(string)
		w(uint64(len(x)))
		b.WriteString(x)
		ok = k
	case TypeArray:
		a, k := v.(Array)
		if !k {
			return fmt.Errorf("value %T, want gguf.Array", v)
		}
		w(a.Type)
		switch xs := a.Values.(type) {
		case []string:
			if a.Type != TypeString {
				return fmt.Errorf("array of strings with element type %d", a.Type)
			}
			w(uint64(len(xs)))
			for _, s := range xs {
				w(uint64(len(s)))
				b.WriteString(s)
			}
		case []int32, []uint32, []float32, []uint8, []int8, []uint16, []int16, []bool, []int64, []uint64, []float64:
			n := uint64(reflectLen(xs))
			if want := map[uint32]string{TypeI32: "[]int32", TypeU32: "[]uint32", TypeF32: "[]float32", TypeU8: "[]uint8",
				TypeI8: "[]int8", TypeU16: "[]uint16", TypeI16: "[]int16", TypeBool: "[]bool", TypeI64: "[]int64", TypeU64: "[]uint64",
				TypeF64: "[]float64"}[a.Type]; want != fmt.Sprintf("%T", xs) {
				return fmt.Errorf("array %T with element type %d", xs, a.Type)
			}
			w(n)
			w(xs)
		default:
			return fmt.Errorf("array of %T not supported", a.Values)
		}
	default:
		return fmt.Errorf("value type %d not supported", typ)
	}
	if !ok {
		return fmt.Errorf("value %T does not match type %d", v, typ)
	}
	return nil
}

func reflectLen(xs any) int {
	switch x := xs.(type) {
	case []int32:
		return len(x)
	case []uint32:
		return len(x)
	case []float32:
		return len(x)
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []bool:
		return len(x)
	case []int64:
		return len(x)
	case []uint64:
		return len(x)
	case []float64:
		return len(x)
	}
	return 0
}

// Write encodes f to path through a temporary file and rename.
func Write(path string, f *File) error {
	b, err := Encode(f)
	if err != nil {
		return err
	}
	return atomic.WriteFile(path, b)
}

// Read parses the file at path.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Limits on what a file may declare; every count and length is also
// bounded by the bytes left in the file before anything is allocated.
const (
	// MaxString bounds a key or string value (1 GiB).
	MaxString = 1 << 30
	// MaxName bounds a tensor name (ggml's GGML_MAX_NAME, counting the
	// terminating NUL).
	MaxName = 64
	// MaxDims bounds a tensor's dimensions (ggml's GGML_MAX_DIMS).
	MaxDims = 4
)

// reader walks b with bounds checks; the first failure sticks. where
// names what is being read ("tensor \"x\"", "key \"general.name\"") for
// errors.
type reader struct {
	b     []byte
	off   uint64
	err   error
	where string
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("gguf: %s: "+format+" (at byte %d)", append(append([]any{r.where}, a...), r.off)...)
	}
}

func (r *reader) left() uint64 { return uint64(len(r.b)) - r.off }

func (r *reader) take(what string, n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > r.left() {
		r.fail("%s: %d bytes needed, %d left", what, n, r.left())
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *reader) u32(what string) uint32 {
	if s := r.take(what, 4); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if s := r.take(what, 8); s != nil {
		return binary.LittleEndian.Uint64(s)
	}
	return 0
}

// str reads a u64 length and the string's bytes; max bounds the length.
func (r *reader) str(what string, max uint64) string {
	n := r.u64(what + " length")
	if r.err == nil && (n > max || n > r.left()) {
		r.fail("%s length %d: limit %d, %d bytes left", what, n, max, r.left())
		return ""
	}
	return string(r.take(what, n))
}

// count reads an element count and checks that at least min bytes per
// element remain, so that no count allocates more than the file holds.
func (r *reader) count(what string, min uint64) uint64 {
	n := r.u64(what)
	if r.err == nil && n > r.left()/min {
		r.fail("%s %d: the %d bytes left hold at most %d", what, n, r.left(), r.left()/min)
		return 0
	}
	return n
}

var scalarSize = map[uint32]uint64{TypeU8: 1, TypeI8: 1, TypeU16: 2, TypeI16: 2, TypeU32: 4, TypeI32: 4, TypeF32: 4, TypeBool: 1,
	TypeU64: 8, TypeI64: 8, TypeF64: 8}

func (r *reader) scalar(typ uint32) any {
	s := r.take("value", scalarSize[typ])
	if s == nil {
		return nil
	}
	le := binary.LittleEndian
	switch typ {
	case TypeU8:
		return s[0]
	case TypeI8:
		return int8(s[0])
	case TypeU16:
		return le.Uint16(s)
	case TypeI16:
		return int16(le.Uint16(s))
	case TypeU32:
		return le.Uint32(s)
	case TypeI32:
		return int32(le.Uint32(s))
	case TypeF32:
		return math.Float32frombits(le.Uint32(s))
	case TypeBool:
		if s[0] > 1 {
			r.fail("bool byte %d", s[0])
		}
		return s[0] == 1
	case TypeU64:
		return le.Uint64(s)
	case TypeI64:
		return int64(le.Uint64(s))
	default:
		return math.Float64frombits(le.Uint64(s))
	}
}

func (r *reader) value(typ uint32) any {
	switch {
	case typ == TypeString:
		return r.str("string", MaxString)
	case typ == TypeArray:
		et := r.u32("array type")
		switch {
		case r.err != nil:
			return nil
		case et == TypeString:
			n := r.count("array length (strings)", 8)
			out := make([]string, 0, n)
			for i := uint64(0); i < n && r.err == nil; i++ {
				out = append(out, r.str(fmt.Sprintf("element %d", i), MaxString))
			}
			return Array{Type: et, Values: out}
		case scalarSize[et] > 0:
			n := r.count(fmt.Sprintf("array length (type %d)", et), scalarSize[et])
			if r.err != nil {
				return nil
			}
			return Array{Type: et, Values: r.scalars(et, n)}
		case et == TypeArray:
			r.fail("nested arrays not supported")
			return nil
		default:
			r.fail("array element type %d", et)
			return nil
		}
	case scalarSize[typ] > 0:
		return r.scalar(typ)
	}
	r.fail("value type %d", typ)
	return nil
}

// scalars reads n elements of a scalar type (n checked against the bytes
// left) into a typed slice.
func (r *reader) scalars(et uint32, n uint64) any {
	s := r.take("array", n*scalarSize[et])
	if s == nil {
		return nil
	}
	le := binary.LittleEndian
	switch et {
	case TypeU8:
		return append([]uint8(nil), s...)
	case TypeI8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(s[i])
		}
		return out
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			if s[i] > 1 {
				r.fail("element %d: bool byte %d", i, s[i])
			}
			out[i] = s[i] == 1
		}
		return out
	case TypeU16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(s[2*i:])
		}
		return out
	case TypeI16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(s[2*i:]))
		}
		return out
	case TypeU32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(s[4*i:])
		}
		return out
	case TypeI32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(s[4*i:]))
		}
		return out
	case TypeF32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(s[4*i:]))
		}
		return out
	case TypeU64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(s[8*i:])
		}
		return out
	case TypeI64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(s[8*i:]))
		}
		return out
	default:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(s[8*i:]))
		}
		return out
	}
}

// Smallest encodings, for bounding counts by the bytes left: a key/value
// is a key length (8), a type (4) and at least a byte of value; a tensor
// info a name length (8), n_dims (4), one dim (8), a type (4) and an
// offset (8).
const (
	minKV         = 13
	minTensorInfo = 32
)

// Parse decodes a GGUF v2 or v3 file held in b; tensor data alias b.
// Every count, length, dimension and offset is checked against the file
// before it is used: errors name the field and its value, as in
// `gguf: tensor "blk.0.attn_q.weight": dim 1 = 1099511627776: ...`.
func Parse(b []byte) (*File, error) {
	r := &reader{b: b, where: "header"}
	if m := r.take("magic", 4); r.err != nil || string(m) != "GGUF" {
		return nil, fmt.Errorf("gguf: not a GGUF file (magic %q)", m)
	}
	f := &File{Version: r.u32("version")}
	if r.err == nil && f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("gguf: header: version %d, want 2 or 3", f.Version)
	}
	nt := r.count("tensor_count", minTensorInfo)
	nkv := r.count("metadata_kv_count", minKV)
	keys := make(map[string]bool, nkv)
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		r.where = fmt.Sprintf("key/value %d", i)
		k := r.str("key", MaxString)
		if r.err != nil {
			break
		}
		r.where = fmt.Sprintf("key %q", k)
		if keys[k] {
			r.fail("duplicate key")
			break
		}
		keys[k] = true
		t := r.u32("value type")
		v := r.value(t)
		f.KVs = append(f.KVs, KV{Key: k, Type: t, Value: v})
	}
	if r.err != nil {
		return nil, r.err
	}
	alignment := uint64(Alignment)
	if kv, ok := f.Get("general.alignment"); ok {
		a, ok := kv.Value.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("gguf: key \"general.alignment\": %v of value type %d, want a power-of-two u32", kv.Value, kv.Type)
		}
		alignment = uint64(a)
	}
	names := make(map[string]bool, nt)
	f.Tensors = make([]Tensor, 0, nt)
	for i := uint64(0); i < nt && r.err == nil; i++ {
		r.where = fmt.Sprintf("tensor %d", i)
		t := Tensor{Name: r.str("name", MaxName-1)}
		if r.err != nil {
			break
		}
		r.where = fmt.Sprintf("tensor %q", t.Name)
		if names[t.Name] {
			r.fail("duplicate tensor name")
			break
		}
		names[t.Name] = true
		nd := r.u32("n_dims")
		if r.err == nil && (nd == 0 || nd > MaxDims) {
			r.fail("n_dims %d, want 1 to %d", nd, MaxDims)
		}
		for j := uint32(0); j < nd && r.err == nil; j++ {
			d := r.u64(fmt.Sprintf("dim %d", j))
			// No supported type packs more than 2 values a byte (Q4_0:
			// 32 in 18), so no dim can exceed twice the file.
			if r.err == nil && d > 2*uint64(len(b)) {
				r.fail("dim %d = %d: more values than the %d-byte file can hold", j, d, len(b))
			}
			t.Dims = append(t.Dims, d)
		}
		t.Type = r.u32("type")
		t.Offset = r.u64("offset")
		f.Tensors = append(f.Tensors, t)
	}
	if r.err != nil {
		return nil, r.err
	}
	f.DataOffset = align(r.off, alignment)
	if f.DataOffset > uint64(len(b)) {
		return nil, fmt.Errorf("gguf: data section at %d (tensor infos end at %d, alignment %d) is past the end of the %d-byte file",
			f.DataOffset, r.off, alignment, len(b))
	}
	data := uint64(len(b)) - f.DataOffset
	type span struct {
		lo, hi uint64
		name   string
	}
	spans := make([]span, 0, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		ti, ok := typeInfo[t.Type]
		if !ok {
			return nil, fmt.Errorf("gguf: tensor %q: ggml type %d not supported", t.Name, t.Type)
		}
		n := uint64(1)
		for j, d := range t.Dims {
			if d != 0 && n > math.MaxUint64/d {
				return nil, fmt.Errorf("gguf: tensor %q: dim %d = %d: dims %v overflow", t.Name, j, d, t.Dims)
			}
			n *= d
		}
		if t.Dims[0]%uint64(ti.Block) != 0 {
			return nil, fmt.Errorf("gguf: tensor %q: dim 0 = %d is not whole %s blocks of %d", t.Name, t.Dims[0], ti.Name, ti.Block)
		}
		size, err := DataSize(t.Type, n)
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: dims %v: %w", t.Name, t.Dims, err)
		}
		if t.Offset%alignment != 0 {
			return nil, fmt.Errorf("gguf: tensor %q: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, alignment)
		}
		if t.Offset > data || size > data-t.Offset {
			return nil, fmt.Errorf("gguf: tensor %q: %d bytes (dims %v, %s) at offset %d do not fit the %d-byte data section at byte %d",
				t.Name, size, t.Dims, ti.Name, t.Offset, data, f.DataOffset)
		}
		t.Data = b[f.DataOffset+t.Offset : f.DataOffset+t.Offset+size : f.DataOffset+t.Offset+size]
		spans = append(spans, span{t.Offset, t.Offset + size, t.Name})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	for i := 1; i < len(spans); i++ {
		if spans[i].lo < spans[i-1].hi {
			return nil, fmt.Errorf("gguf: tensors %q and %q overlap at data offset %d", spans[i-1].name, spans[i].name, spans[i].lo)
		}
	}
	return f, nil
}
