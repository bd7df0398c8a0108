package safetensors

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := []Tensor{
		FromF32("a.weight", []int{2, 3}, []float32{1, -2, 3.5, 0, 1e-30, -7}),
		FromI32("ids", []int{4}, []int32{0, -1, 7, 1 << 30}),
		{Name: "scalar", DType: "F32", Shape: []int{}, Data: []byte{0, 0, 128, 63}},
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := Write(path, in, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	f, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["format"] != "pt" || len(f.Tensors) != 3 {
		t.Fatalf("got metadata %v and %d tensors", f.Metadata, len(f.Tensors))
	}
	for i, want := range in {
		got := f.Tensors[i]
		if got.Name != want.Name || got.DType != want.DType || !bytes.Equal(got.Data, want.Data) || len(got.Shape) != len(want.Shape) {
			t.Errorf("tensor %d: got %+v want %+v", i, got, want)
		}
	}
	v, _ := f.Tensors[0].F32()
	if v[2] != 3.5 || v[4] != 1e-30 {
		t.Errorf("F32 values %v", v)
	}
	// The header is padded to 8 bytes, as the format asks.
	if hl := binary.LittleEndian.Uint64(mustEncode(t, in)); hl%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", hl)
	}
}

func mustEncode(t *testing.T, in []Tensor) []byte {
	b, err := Encode(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hostile(hdr string, data int) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(len(hdr)))
	return append(append(b, hdr...), make([]byte, data)...)
}

func TestHostileFiles(t *testing.T) {
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, 1<<62)
	for i, b := range [][]byte{
		nil,
		{1, 2, 3},
		huge,
		hostile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4),                                                      // truncated data
		hostile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8),                                                      // shape vs bytes
		hostile(`{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}`, 8),                                                       // dtype
		hostile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8),                                                     // negative dim
		hostile(`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`, 8),                                  // overflow
		hostile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, 8),                                                      // reversed
		hostile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), // overlap
		hostile(`{"a":`, 8),
	} {
		if _, err := Parse(b); err == nil {
			t.Errorf("case %d: parsed a malformed file", i)
		}
	}
}

func FuzzParse(f *testing.F) {
	ok, _ := Encode([]Tensor{FromF32("x", []int{2}, []float32{1, 2}), FromI32("y", []int{1}, []int32{3})}, map[string]string{"k": "v"})
	f.Add(ok)
	f.Add(hostile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	for _, c := range hostileSafetensors(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse(b)
		if err != nil {
			return
		}
		for _, tn := range file.Tensors {
			if n, ok := numel(tn.Shape); !ok || n*int64(DTypeSize[tn.DType]) != int64(len(tn.Data)) {
				t.Fatalf("tensor %q: %d bytes for shape %v of %s", tn.Name, len(tn.Data), tn.Shape, tn.DType)
			}
		}
		// Whatever parses re-encodes and parses to the same tensors.
		again, err := Encode(file.Tensors, file.Metadata)
		if err != nil {
			return // names such as "__metadata__" collide on re-encode
		}
		f2, err := Parse(again)
		if err != nil || len(f2.Tensors) != len(file.Tensors) {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		for i := range file.Tensors {
			if !bytes.Equal(file.Tensors[i].Data, f2.Tensors[i].Data) {
				t.Fatalf("tensor %s changed on re-encode", file.Tensors[i].Name)
			}
		}
	})
}
