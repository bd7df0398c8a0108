package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func sample(rng *rand.Rand) *File {
	q4 := make([]byte, 18*4)
	q8 := make([]byte, 34*2)
	f32 := make([]byte, 4*3*5)
	for _, b := range [][]byte{q4, q8, f32} {
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
	}
	return &File{KVs: []KV{
		{"general.architecture", TypeString, "llama"},
		{"a.u8", TypeU8, uint8(7)}, {"a.i8", TypeI8, int8(-7)}, {"a.u16", TypeU16, uint16(65000)}, {"a.i16", TypeI16, int16(-3)},
		{"a.u32", TypeU32, uint32(4000000000)}, {"a.i32", TypeI32, int32(-5)}, {"a.f32", TypeF32, float32(1e-5)},
		{"a.bool", TypeBool, true}, {"a.u64", TypeU64, uint64(1 << 40)}, {"a.i64", TypeI64, int64(-1 << 40)}, {"a.f64", TypeF64, math.Pi},
		{"tokenizer.ggml.tokens", TypeArray, Array{TypeString, []string{"a", "Ġb", "", "ü"}}},
		{"tokenizer.ggml.token_type", TypeArray, Array{TypeI32, []int32{1, 1, 3, 6}}},
		{"tokenizer.ggml.scores", TypeArray, Array{TypeF32, []float32{0, -1, 2.5, 3}}},
	}, Tensors: []Tensor{
		{Name: "blk.0.attn_q.weight", Dims: []uint64{64, 2}, Type: GGMLQ4_0, Data: q4},
		{Name: "output_norm.weight", Dims: []uint64{3, 5}, Type: GGMLF32, Data: f32},
		{Name: "token_embd.weight", Dims: []uint64{32, 2}, Type: GGMLQ8_0, Data: q8},
	}}
}

// TestRoundTrip: every value type, arrays and three tensor types survive
// Encode and Parse; the data section and every tensor are aligned.
func TestRoundTrip(t *testing.T) {
	f := sample(rand.New(rand.NewPCG(1, 1)))
	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if g.Version != 3 || len(g.KVs) != len(f.KVs) || len(g.Tensors) != len(f.Tensors) {
		t.Fatalf("version %d, %d kvs, %d tensors", g.Version, len(g.KVs), len(g.Tensors))
	}
	for i, kv := range f.KVs {
		if g.KVs[i].Key != kv.Key || g.KVs[i].Type != kv.Type || !reflect.DeepEqual(g.KVs[i].Value, kv.Value) {
			t.Errorf("kv %d: %+v, wrote %+v", i, g.KVs[i], kv)
		}
	}
	if g.DataOffset%Alignment != 0 {
		t.Errorf("data section at %d", g.DataOffset)
	}
	for i, tn := range f.Tensors {
		h := g.Tensors[i]
		if h.Name != tn.Name || !reflect.DeepEqual(h.Dims, tn.Dims) || h.Type != tn.Type || !bytes.Equal(h.Data, tn.Data) || h.Offset%Alignment != 0 {
			t.Errorf("tensor %d: %s %v type %d offset %d", i, h.Name, h.Dims, h.Type, h.Offset)
		}
	}
	if v, err := g.U32("a.u32"); err != nil || v != 4000000000 {
		t.Errorf("U32: %v %v", v, err)
	}
	if _, err := g.U32("a.i32"); err == nil {
		t.Error("an i32 key read as u32")
	}
}

func TestEncodeErrors(t *testing.T) {
	for name, edit := range map[string]func(f *File){
		"duplicate key":    func(f *File) { f.KVs = append(f.KVs, f.KVs[0]) },
		"duplicate tensor": func(f *File) { f.Tensors = append(f.Tensors, f.Tensors[0]) },
		"partial block":    func(f *File) { f.Tensors[0].Dims = []uint64{48, 3} },
		"wrong data size":  func(f *File) { f.Tensors[1].Data = f.Tensors[1].Data[1:] },
		"value type":       func(f *File) { f.KVs[1].Value = int32(3) },
		"array type":       func(f *File) { f.KVs[13].Value = Array{TypeU32, []int32{1}} },
		"long name":        func(f *File) { f.Tensors[0].Name = strings.Repeat("x", 64) },
	} {
		f := sample(rand.New(rand.NewPCG(2, 2)))
		edit(f)
		if _, err := Encode(f); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

// TestHostileFiles: crafted headers (huge counts and lengths, offsets past
// the end, overlapping or misaligned tensors, bad types) are errors, not
// panics or huge allocations.
func TestHostileFiles(t *testing.T) {
	good, err := Encode(sample(rand.New(rand.NewPCG(3, 3))))
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	header := func(nt, nkv uint64) []byte {
		b := []byte("GGUF")
		b = le.AppendUint32(b, 3)
		b = le.AppendUint64(b, nt)
		return le.AppendUint64(b, nkv)
	}
	str := func(b []byte, s string) []byte { return append(le.AppendUint64(b, uint64(len(s))), s...) }
	tensor := func(name string, dims []uint64, typ uint32, off uint64) []byte {
		b := str(nil, name)
		b = le.AppendUint32(b, uint32(len(dims)))
		for _, d := range dims {
			b = le.AppendUint64(b, d)
		}
		b = le.AppendUint32(b, typ)
		return le.AppendUint64(b, off)
	}
	pad := func(b []byte, data int) []byte {
		for len(b)%32 != 0 {
			b = append(b, 0)
		}
		return append(b, make([]byte, data)...)
	}
	cases := map[string][]byte{
		"empty":             nil,
		"bad magic":         append([]byte("GGUX"), good[4:]...),
		"version 1":         append(append([]byte("GGUF"), 1, 0, 0, 0), good[8:]...),
		"truncated":         good[:len(good)/2],
		"huge tensor count": header(1<<62, 0),
		"huge kv count":     header(0, 1<<40),
		"huge string":       le.AppendUint64(str(header(0, 1), "k")[:len(header(0, 1))+9], 1<<62),
		"huge array": func() []byte {
			b := le.AppendUint32(str(header(0, 1), "k"), TypeArray)
			b = le.AppendUint32(b, TypeF32)
			return le.AppendUint64(b, 1<<50)
		}(),
		"nested array": func() []byte {
			b := le.AppendUint32(str(header(0, 1), "k"), TypeArray)
			b = le.AppendUint32(b, TypeArray)
			return le.AppendUint64(b, 1)
		}(),
		"bad value type":  le.AppendUint32(str(header(0, 1), "k"), 99),
		"offset past end": pad(append(header(1, 0), tensor("t", []uint64{4}, GGMLF32, 1<<40)...), 16),
		"overlap": pad(append(append(header(2, 0), tensor("a", []uint64{16}, GGMLF32, 0)...),
			tensor("b", []uint64{8}, GGMLF32, 32)...), 64),
		"misaligned":     pad(append(header(1, 0), tensor("t", []uint64{4}, GGMLF32, 4)...), 64),
		"unknown type":   pad(append(header(1, 0), tensor("t", []uint64{4}, 77, 0)...), 64),
		"five dims":      pad(append(header(1, 0), tensor("t", []uint64{1, 1, 1, 1, 1}, GGMLF32, 0)...), 64),
		"dims overflow":  pad(append(header(1, 0), tensor("t", []uint64{1 << 40, 1 << 40}, GGMLF32, 0)...), 64),
		"partial blocks": pad(append(header(1, 0), tensor("t", []uint64{16}, GGMLQ4_0, 0)...), 64),
		"bad bool":       append(le.AppendUint32(str(header(0, 1), "k"), TypeBool), 7),
		"duplicate key": func() []byte {
			b := le.AppendUint32(str(header(0, 2), "k"), TypeU8)
			b = append(b, 1)
			b = le.AppendUint32(str(b, "k"), TypeU8)
			return append(b, 2)
		}(),
		"duplicate tensor": pad(append(append(header(2, 0), tensor("a", []uint64{8}, GGMLF32, 0)...),
			tensor("a", []uint64{8}, GGMLF32, 32)...), 64),
	}
	for name, b := range cases {
		if _, err := Parse(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, _ := Encode(sample(rand.New(rand.NewPCG(4, 4))))
	f.Add(good)
	f.Add(good[:100])
	for _, c := range hostileGGUF(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Parse(b)
		if err != nil {
			return
		}
		for _, tn := range g.Tensors {
			if uint64(len(tn.Data)) > uint64(len(b)) || len(tn.Dims) == 0 || len(tn.Dims) > MaxDims || len(tn.Name) >= MaxName {
				t.Fatalf("tensor %q: dims %v, %d bytes from a %d-byte file", tn.Name, tn.Dims, len(tn.Data), len(b))
			}
		}
		// what parses re-encodes, and the re-encoding is stable (Encode
		// lays data out at our alignment only)
		if _, ok := g.Get("general.alignment"); ok {
			return
		}
		enc, err := Encode(g)
		if err != nil {
			return // e.g. a general.alignment other than ours
		}
		g2, err := Parse(enc)
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		if enc2, err := Encode(g2); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable: %v", err)
		}
	})
}
