package gguf

import (
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"
)

// TestCrossCheckParser: an independent reader (gpustack's gguf-parser-go,
// used by ollama-adjacent tools) reads our file the same way: header,
// key/values, tensor infos and where the data starts.
func TestCrossCheckParser(t *testing.T) {
	f := sample(rand.New(rand.NewPCG(5, 5)))
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := Write(path, f); err != nil {
		t.Fatal(err)
	}
	ours, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := parser.ParseGGUFFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if g.Header.Version != 3 || g.Header.TensorCount != uint64(len(f.Tensors)) || g.Header.MetadataKVCount != uint64(len(f.KVs)) {
		t.Fatalf("header %+v", g.Header)
	}
	if g.TensorDataStartOffset != int64(ours.DataOffset) {
		t.Errorf("data starts at %d for the parser, %d for us", g.TensorDataStartOffset, ours.DataOffset)
	}
	kv := g.Header.MetadataKV
	if v, ok := kv.Get("a.u32"); !ok || v.ValueUint32() != 4000000000 {
		t.Errorf("a.u32: %+v", v)
	}
	if v, ok := kv.Get("a.f32"); !ok || v.ValueFloat32() != 1e-5 {
		t.Errorf("a.f32: %+v", v)
	}
	if v, ok := kv.Get("general.architecture"); !ok || v.ValueString() != "llama" {
		t.Errorf("general.architecture: %+v", v)
	}
	if v, ok := kv.Get("tokenizer.ggml.tokens"); !ok || !reflect.DeepEqual(v.ValueArray().ValuesString(), []string{"a", "Ġb", "", "ü"}) {
		t.Errorf("tokens: %+v", v)
	}
	for i, ti := range g.TensorInfos {
		tn := ours.Tensors[i]
		if ti.Name != tn.Name || !reflect.DeepEqual(ti.Dimensions, tn.Dims) || uint32(ti.Type) != tn.Type || ti.Offset != tn.Offset {
			t.Errorf("tensor %d: parser %s %v %d @%d, ours %s %v %d @%d", i, ti.Name, ti.Dimensions, ti.Type, ti.Offset, tn.Name, tn.Dims, tn.Type, tn.Offset)
		}
	}
}
