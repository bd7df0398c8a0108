package safetensors

import (
	"encoding/binary"
	"fmt"
	"testing"

	hostilecheck "qat/data/internal/hostile"
)

type hostileCase struct {
	name string
	b    []byte
	want string
}

func (c hostileCase) Case() hostilecheck.Case {
	return hostilecheck.Case{Name: c.name, B: c.b, Want: c.want}
}

func hostileSafetensors(t testing.TB) []hostileCase {
	good, err := Encode([]Tensor{FromF32("model.embed.weight", []int{4, 3}, make([]float32, 12)),
		FromI32("ids", []int{5}, []int32{1, 2, 3, 4, 5})}, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	var cs []hostileCase
	add := func(name string, b []byte, want string) { cs = append(cs, hostileCase{name, b, want}) }
	for i := 0; i < 25; i++ {
		n := len(good) * i / 25
		add(fmt.Sprintf("truncated to %d", n), good[:n], "safetensors: ")
	}
	hl := func(n uint64, rest string) []byte { return append(binary.LittleEndian.AppendUint64(nil, n), rest...) }
	add("header length 2^62", hl(1<<62, "{}"), "header length 4611686018427387904")
	add("header length 2^64-1", hl(1<<64-1, "{}"), "header length 18446744073709551615")
	add("header length over the limit", hl(maxHeader+1, "{}"), "header length 104857601")
	add("header length one past", hl(3, "{}"), "header length 3: the file has 2 bytes")
	add("header not JSON", hostile(`{"a":`, 8), "header")
	add("header a list", hostile(`[1,2]`, 8), "header")
	e := func(name, entry string, data int) []byte { return hostile(`{"`+name+`":`+entry+`}`, data) }
	add("entry not an object", e("w", `[1]`, 8), `tensor "w"`)
	add("dtype missing", e("w", `{"shape":[2],"data_offsets":[0,8]}`, 8), `tensor "w": dtype, shape and data_offsets required`)
	add("shape missing", e("w", `{"dtype":"F32","data_offsets":[0,8]}`, 8), `tensor "w": dtype, shape and data_offsets required`)
	add("data_offsets missing", e("w", `{"dtype":"F32","shape":[2]}`, 8), `tensor "w": dtype, shape and data_offsets required`)
	add("dtype unknown", e("w", `{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}`, 8), `tensor "w": dtype "Q9" unknown`)
	add("dtype a number", e("w", `{"dtype":4,"shape":[2],"data_offsets":[0,8]}`, 8), `tensor "w"`)
	add("negative dim", e("w", `{"dtype":"F32","shape":[2,-2],"data_offsets":[0,8]}`, 8), `tensor "w": shape [2 -2]: dim 1 = -2`)
	add("dim of 2^40", e("model.layers.0.mlp.up_proj.weight", `{"dtype":"F32","shape":[1099511627776,4],"data_offsets":[0,8]}`, 8),
		`tensor "model.layers.0.mlp.up_proj.weight": data_offsets [0, 8]: 8 bytes, shape [1099511627776 4] of F32 needs 17592186044416`)
	add("dims overflowing", e("w", `{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}`, 8),
		`tensor "w": shape [4294967296 4294967296]: dim 1 = 4294967296: the F32 bytes overflow`)
	add("bytes overflowing", e("w", `{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}`, 8),
		`tensor "w": shape [2305843009213693952]: dim 0 = 2305843009213693952: the F64 bytes overflow`)
	add("dim past int64", e("w", `{"dtype":"F32","shape":[1e30],"data_offsets":[0,8]}`, 8), `tensor "w"`)
	add("dim a fraction", e("w", `{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}`, 8), `tensor "w"`)
	add("data_offsets reversed", e("w", `{"dtype":"F32","shape":[2],"data_offsets":[8,0]}`, 8), `tensor "w": data_offsets [8, 0] outside`)
	add("data_offsets negative", e("w", `{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}`, 8), `tensor "w": data_offsets [-8, 0] outside`)
	add("data_offsets past the data", e("w", `{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`, 4), `tensor "w": data_offsets [0, 8] outside the 4 data bytes`)
	add("data_offsets 2^62", e("w", `{"dtype":"F32","shape":[2],"data_offsets":[4611686018427387904,4611686018427387912]}`, 8),
		`tensor "w": data_offsets [4611686018427387904, 4611686018427387912] outside`)
	add("data_offsets of three", e("w", `{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}`, 16), `tensor "w": data_offsets [0 8 16]`)
	add("data_offsets of one", e("w", `{"dtype":"F32","shape":[2],"data_offsets":[8]}`, 16), `tensor "w": data_offsets [8]`)
	add("size disagrees with the shape", e("w", `{"dtype":"F32","shape":[3],"data_offsets":[0,8]}`, 8), `tensor "w": data_offsets [0, 8]: 8 bytes, shape [3] of F32 needs 12`)
	add("overlap", hostile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		`tensors "a" (data_offsets [0, 8]) and "b" (data_offsets [4, 8]) overlap`)
	add("metadata not strings", hostile(`{"__metadata__":{"a":1}}`, 0), "__metadata__")
	// the valid file with its header length patched
	patch := func(name string, v uint64, want string) {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint64(b, v)
		add(name, b, want)
	}
	patch("header length 2^40", 1<<40, "header length 1099511627776")
	patch("header length halved", binary.LittleEndian.Uint64(good)/2, "header")
	return cs
}

// TestHostileSafetensors: every hostile file is an error naming the tensor
// and field at fault, never a panic, and costs under 200 MB.
func TestHostileSafetensors(t *testing.T) {
	hostilecheck.Check(t, hostilecheck.Cases(hostileSafetensors(t)), 50, func(b []byte) error { _, err := Parse(b); return err })
}
