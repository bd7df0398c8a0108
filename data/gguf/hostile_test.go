package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"qat/data/internal/hostile"
)

type hostileCase struct {
	name string
	b    []byte
	want string // in the error
}

func (c hostileCase) Case() hostile.Case { return hostile.Case{Name: c.name, B: c.b, Want: c.want} }

// builder writes GGUF pieces by hand.
type builder struct{ b []byte }

var le = binary.LittleEndian

func newFile(nt, nkv uint64) *builder {
	b := le.AppendUint32([]byte("GGUF"), 3)
	b = le.AppendUint64(b, nt)
	return &builder{le.AppendUint64(b, nkv)}
}

func (w *builder) u32(v uint32) *builder { w.b = le.AppendUint32(w.b, v); return w }
func (w *builder) u64(v uint64) *builder { w.b = le.AppendUint64(w.b, v); return w }
func (w *builder) str(s string) *builder { w.u64(uint64(len(s))); w.b = append(w.b, s...); return w }
func (w *builder) tensor(name string, dims []uint64, typ uint32, off uint64) *builder {
	w.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		w.u64(d)
	}
	return w.u32(typ).u64(off)
}

// data pads to the alignment and appends n data bytes.
func (w *builder) data(n int) []byte {
	for len(w.b)%Alignment != 0 {
		w.b = append(w.b, 0)
	}
	return append(w.b, make([]byte, n)...)
}

func hostileGGUF(t testing.TB) []hostileCase {
	good, err := Encode(sample(rand.New(rand.NewPCG(3, 3))))
	if err != nil {
		t.Fatal(err)
	}
	var cs []hostileCase
	add := func(name string, b []byte, want string) { cs = append(cs, hostileCase{name, b, want}) }
	// cut at 30 places: every cut is an error saying what it was reading
	for i := 0; i < 30; i++ {
		n := len(good) * i / 30
		add(fmt.Sprintf("truncated to %d", n), good[:n], "gguf: ")
	}
	f := func(nt, nkv uint64) *builder { return newFile(nt, nkv) }
	add("bad magic", append([]byte("GGUX"), good[4:]...), "magic")
	add("version 1", append(append([]byte("GGUF"), 1, 0, 0, 0), good[8:]...), "version 1")
	add("tensor_count 2^62", f(1<<62, 0).b, "tensor_count 4611686018427387904")
	add("tensor_count 2^64-1", f(1<<64-1, 0).b, "tensor_count 18446744073709551615")
	add("metadata_kv_count 2^40", f(0, 1<<40).b, "metadata_kv_count 1099511627776")
	add("tensor_count just over the file", f(2, 0).tensor("a", []uint64{8}, GGMLF32, 0).data(0), "tensor_count 2")
	add("key length 2^62", f(0, 1).u64(1<<62).u64(0).u64(0).b, "key/value 0: key length 4611686018427387904")
	add("key length past the end", f(0, 1).u64(100).u64(0).u64(0).b, "key/value 0: key length 100")
	add("string value 2^62", f(0, 1).str("general.name").u32(TypeString).u64(1<<62).b, `key "general.name": string length 4611686018427387904`)
	add("array of 2^50 f32", f(0, 1).str("k").u32(TypeArray).u32(TypeF32).u64(1<<50).b, `key "k": array length (type 6) 1125899906842624`)
	add("array of 2^61 u64 (bytes overflow)", f(0, 1).str("k").u32(TypeArray).u32(TypeU64).u64(1<<61).b, `key "k": array length (type 10) 2305843009213693952`)
	add("array of 2^40 strings", f(0, 1).str("tokenizer.ggml.tokens").u32(TypeArray).u32(TypeString).u64(1<<40).b,
		`key "tokenizer.ggml.tokens": array length (strings) 1099511627776`)
	add("array string element 2^62", f(0, 1).str("t").u32(TypeArray).u32(TypeString).u64(2).str("a").u64(1<<62).u64(0).b,
		`key "t": element 1 length 4611686018427387904`)
	add("array of u8 past the end", f(0, 1).str("k").u32(TypeArray).u32(TypeU8).u64(64).b, `key "k": array length (type 0) 64`)
	add("nested array", f(0, 1).str("k").u32(TypeArray).u32(TypeArray).u64(1).b, `key "k": nested arrays`)
	add("array element type 99", f(0, 1).str("k").u32(TypeArray).u32(99).u64(1).b, `key "k": array element type 99`)
	add("value type 99", f(0, 1).str("k").u32(99).u64(0).b, `key "k": value type 99`)
	add("bad bool", append(f(0, 1).str("k").u32(TypeBool).b, 7), `key "k": bool byte 7`)
	add("bad bool in array", append(f(0, 1).str("k").u32(TypeArray).u32(TypeBool).u64(2).b, 1, 9), `key "k": element 1: bool byte 9`)
	dup := f(0, 2).str("k").u32(TypeU8)
	dup.b = append(dup.b, 1)
	add("duplicate key", append(dup.str("k").u32(TypeU8).b, 2), `key "k": duplicate key`)
	add("alignment 3", append(f(0, 1).str("general.alignment").u32(TypeU32).b, 3, 0, 0, 0), `general.alignment`)
	add("alignment as string", f(0, 1).str("general.alignment").u32(TypeString).str("32").b, `general.alignment`)
	one := func(name string, dims []uint64, typ uint32, off uint64, data int) []byte {
		return f(1, 0).tensor(name, dims, typ, off).data(data)
	}
	add("dim of 2^40", one("blk.0.attn_q.weight", []uint64{32, 1 << 40}, GGMLF32, 0, 64), `tensor "blk.0.attn_q.weight": dim 1 = 1099511627776`)
	add("dim of 2^64-1", one("t", []uint64{1<<64 - 1}, GGMLF32, 0, 64), `tensor "t": dim 0 = 18446744073709551615`)
	add("dims multiplying past the data", one("t", []uint64{1 << 9, 1 << 9, 1 << 9, 1 << 9}, GGMLF32, 0, 1<<10), `tensor "t": 274877906944 bytes`)
	add("dims of 2^32 each", one("t", []uint64{1 << 32, 1 << 32}, GGMLF32, 0, 64), `tensor "t": dim 0 = 4294967296`)
	add("five dims", one("t", []uint64{1, 1, 1, 1, 1}, GGMLF32, 0, 64), `tensor "t": n_dims 5`)
	add("zero dims", one("t", nil, GGMLF32, 0, 64), `tensor "t": n_dims 0`)
	add("n_dims 2^31", f(1, 0).str("t").u32(1<<31).data(64), `tensor "t": n_dims 2147483648`)
	add("name of 64 bytes", one(strings.Repeat("x", 64), []uint64{4}, GGMLF32, 0, 64), "tensor 0: name length 64")
	add("name length 2^62", f(1, 0).u64(1<<62).data(64), "tensor 0: name length 4611686018427387904")
	add("unknown type", one("t", []uint64{4}, 77, 0, 64), `tensor "t": ggml type 77`)
	add("partial Q4_0 block", one("t", []uint64{16}, GGMLQ4_0, 0, 64), `tensor "t": dim 0 = 16 is not whole Q4_0 blocks`)
	add("offset 2^40", one("t", []uint64{4}, GGMLF32, 1<<40, 16), `tensor "t": 16 bytes (dims [4], F32) at offset 1099511627776`)
	add("offset 2^64-32", one("t", []uint64{4}, GGMLF32, 1<<64-32, 16), `tensor "t": 16 bytes (dims [4], F32) at offset 18446744073709551584`)
	add("extent past the end", one("t", []uint64{8}, GGMLF32, 0, 16), `tensor "t": 32 bytes (dims [8], F32) at offset 0 do not fit the 16-byte data section`)
	add("misaligned offset", one("t", []uint64{4}, GGMLF32, 4, 64), `tensor "t": offset 4 is not a multiple of the alignment 32`)
	add("data section past the end", f(1, 0).tensor("t", []uint64{4}, GGMLF32, 0).b, "data section at 64 (tensor infos end at 57, alignment 32) is past the end")
	add("overlap", f(2, 0).tensor("a", []uint64{16}, GGMLF32, 0).tensor("b", []uint64{8}, GGMLF32, 32).data(64),
		`tensors "a" and "b" overlap at data offset 32`)
	add("duplicate tensor", f(2, 0).tensor("a", []uint64{8}, GGMLF32, 0).tensor("a", []uint64{8}, GGMLF32, 32).data(64),
		`tensor "a": duplicate tensor name`)
	// the sample with its tensor dims or counts patched in place
	patch := func(name string, at int, v uint64, want string) {
		b := append([]byte(nil), good...)
		le.PutUint64(b[at:], v)
		add(name, b, want)
	}
	patch("sample: tensor_count 2^40", 8, 1<<40, "tensor_count 1099511627776")
	patch("sample: metadata_kv_count 2^33", 16, 1<<33, "metadata_kv_count 8589934592")
	if i := bytes.Index(good, []byte("blk.0.attn_q.weight")); i > 0 {
		patch("sample: blk.0.attn_q.weight dim 1 = 2^40", i+19+4+8, 1<<40, `tensor "blk.0.attn_q.weight": dim 1 = 1099511627776`)
	}
	if i := bytes.Index(good, []byte("tokenizer.ggml.tokens")); i > 0 {
		patch("sample: tokens array length 2^40", i+21+4+4, 1<<40, `key "tokenizer.ggml.tokens": array length (strings) 1099511627776`)
	}
	return cs
}

// TestHostileGGUF: every hostile file is an error naming the field at
// fault and its value, never a panic, and costs under 200 MB.
func TestHostileGGUF(t *testing.T) {
	hostile.Check(t, hostile.Cases(hostileGGUF(t)), 50, func(b []byte) error { _, err := Parse(b); return err })
}

// TestArraysRoundTrip: arrays of every scalar type parse as typed slices
// and re-encode.
func TestArraysRoundTrip(t *testing.T) {
	kvs := []KV{
		{"u8", TypeArray, Array{TypeU8, []uint8{1, 2}}}, {"i8", TypeArray, Array{TypeI8, []int8{-1}}},
		{"u16", TypeArray, Array{TypeU16, []uint16{65535}}}, {"i16", TypeArray, Array{TypeI16, []int16{-2, 3}}},
		{"b", TypeArray, Array{TypeBool, []bool{true, false}}}, {"u64", TypeArray, Array{TypeU64, []uint64{1 << 40}}},
		{"i64", TypeArray, Array{TypeI64, []int64{-1 << 40}}}, {"f64", TypeArray, Array{TypeF64, []float64{0.5}}},
		{"u32", TypeArray, Array{TypeU32, []uint32{7}}}, {"i32", TypeArray, Array{TypeI32, []int32{-7}}},
		{"f32", TypeArray, Array{TypeF32, []float32{1.5}}}, {"s", TypeArray, Array{TypeString, []string{"", "x"}}},
	}
	b, err := Encode(&File{KVs: kvs})
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, kv := range kvs {
		if got := fmt.Sprintf("%T %v", g.KVs[i].Value.(Array).Values, g.KVs[i].Value); got != fmt.Sprintf("%T %v", kv.Value.(Array).Values, kv.Value) {
			t.Errorf("%s: got %s", kv.Key, got)
		}
	}
}
