package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeShards writes tensors split over shard files named by shardOf
// (tensor -> file) into dir, and an index naming them; extra tensors
// (name -> file) go into the shards without an index entry.
func writeShards(t *testing.T, dir string, ts []Tensor, shardOf map[string]string, extra []Tensor, extraOf map[string]string) string {
	t.Helper()
	byFile := map[string][]Tensor{}
	for _, x := range ts {
		byFile[shardOf[x.Name]] = append(byFile[shardOf[x.Name]], x)
	}
	for _, x := range extra {
		byFile[extraOf[x.Name]] = append(byFile[extraOf[x.Name]], x)
	}
	for f, xs := range byFile {
		if err := Write(filepath.Join(dir, f), xs, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for _, x := range ts {
		total += len(x.Data)
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": shardOf})
	p := filepath.Join(dir, IndexName)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sample() []Tensor {
	v := []float32{1, -2.5, 3.25, 0, 1e-3, 7}
	return []Tensor{FromBF16("a.weight", []int{2, 3}, v), FromF32("b.weight", []int{3, 2}, v),
		FromF16("c.weight", []int{6}, v), FromBF16("d.weight", []int{1, 6}, v)}
}

var sampleShards = map[string]string{"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00001-of-00002.safetensors",
	"c.weight": "model-00002-of-00002.safetensors", "d.weight": "model-00002-of-00002.safetensors"}

// TestShardedEqualsSingle: a checkpoint split into shards under an index
// opens to the same tensors (dtype, shape, bytes) as the one file, each
// named with its shard; a tensor a shard holds that the index does not
// name (rotary_emb.inv_freq) is left out.
func TestShardedEqualsSingle(t *testing.T) {
	dir := t.TempDir()
	ts := sample()
	single := filepath.Join(dir, "model.safetensors")
	if err := Write(single, ts, nil); err != nil {
		t.Fatal(err)
	}
	inv := FromF32("model.layers.0.self_attn.rotary_emb.inv_freq", []int{2}, []float32{1, 0.5})
	idx := writeShards(t, dir, ts, sampleShards, []Tensor{inv}, map[string]string{inv.Name: "model-00002-of-00002.safetensors"})
	one, err := Open(single)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	sh, err := OpenSharded(idx)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	if len(sh.Tensors) != len(ts) {
		t.Fatalf("%d tensors, want %d", len(sh.Tensors), len(ts))
	}
	for _, want := range ts {
		a, ok1 := one.Get(want.Name)
		b, ok2 := sh.Get(want.Name)
		if !ok1 || !ok2 || a.DType != b.DType || a.DType != want.DType || !equalInts(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) || !bytes.Equal(a.Data, want.Data) {
			t.Errorf("%s: single %v %v, sharded %v %v", want.Name, a.DType, a.Shape, b.DType, b.Shape)
		}
		if got := sh.Source(want.Name); got != filepath.Join(dir, sampleShards[want.Name]) {
			t.Errorf("%s: source %s", want.Name, got)
		}
		va, _ := a.Float32()
		vb, _ := b.Float32()
		for i := range va {
			if va[i] != vb[i] {
				t.Fatalf("%s[%d]: %g vs %g", want.Name, i, va[i], vb[i])
			}
		}
		sh.Release(b) // advice only: the bytes read the same after
		if !bytes.Equal(b.Data, want.Data) {
			t.Errorf("%s changed after Release", want.Name)
		}
	}
	if _, ok := sh.Get(inv.Name); ok {
		t.Errorf("%s: not in the index, yet opened", inv.Name)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestShardedRefusals: every inconsistency between an index and its shards
// is refused before a tensor is read, with an error that is BadInput and
// names the file and the tensor or key.
func TestShardedRefusals(t *testing.T) {
	s1, s2 := "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	for _, c := range []struct {
		name string
		edit func(t *testing.T, dir string, shardOf map[string]string) // after writing
		want []string
	}{
		{"missing shard", func(t *testing.T, dir string, _ map[string]string) { os.Remove(filepath.Join(dir, s2)) },
			[]string{IndexName, s2, "c.weight", "missing"}},
		{"tensor absent from its shard", func(t *testing.T, dir string, m map[string]string) {
			m["e.weight"] = s1
			writeIndex(t, dir, m)
		}, []string{IndexName, s1, "e.weight", "does not hold"}},
		{"tensor in another shard than the index says", func(t *testing.T, dir string, m map[string]string) {
			m["a.weight"] = s2
			writeIndex(t, dir, m)
		}, []string{IndexName, s1, s2, "a.weight"}},
		{"duplicate across shards", func(t *testing.T, dir string, m map[string]string) {
			ts := sample()
			if err := Write(filepath.Join(dir, s2), []Tensor{ts[2], ts[3], ts[0]}, nil); err != nil {
				t.Fatal(err)
			}
		}, []string{"a.weight", "two shards", s1, s2}},
		{"offsets beyond the shard", func(t *testing.T, dir string, _ map[string]string) {
			p := filepath.Join(dir, s2)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-4], 0o644)
		}, []string{s2, "data_offsets", "outside"}},
		{"shard outside the directory", func(t *testing.T, dir string, m map[string]string) {
			m["a.weight"] = "../" + s1
			writeIndex(t, dir, m)
		}, []string{IndexName, "a.weight", "../" + s1}},
		{"shard that is not safetensors", func(t *testing.T, dir string, m map[string]string) {
			m["a.weight"] = "config.json"
			writeIndex(t, dir, m)
		}, []string{IndexName, "a.weight", "config.json"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			m := map[string]string{}
			for k, v := range sampleShards {
				m[k] = v
			}
			idx := writeShards(t, dir, sample(), m, nil, nil)
			c.edit(t, dir, m)
			f, err := OpenSharded(idx)
			if err == nil {
				f.Close()
				t.Fatal("opened")
			}
			var bad interface{ BadInput() }
			if !errors.As(err, &bad) {
				t.Errorf("%v: not BadInput", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func writeIndex(t *testing.T, dir string, m map[string]string) {
	b, _ := json.Marshal(map[string]any{"weight_map": m})
	if err := os.WriteFile(filepath.Join(dir, IndexName), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

var hostileIndexes = []struct{ json, want string }{
	{``, "unexpected end"},
	{`[]`, "cannot unmarshal"},
	{`{}`, "weight_map missing"},
	{`{"weight_map": {}}`, "weight_map: no tensors"},
	{`{"weight_map": []}`, "weight_map: want an object"},
	{`{"weight_map": {"a": 3}}`, `weight_map["a"]`},
	{`{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}`, `weight_map["a"]: given twice`},
	{`{"weight_map": {"": "x.safetensors"}}`, "empty tensor name"},
	{`{"weight_map": {"a": "/etc/passwd.safetensors"}}`, `weight_map["a"]: shard "/etc/passwd.safetensors"`},
	{`{"weight_map": {"a": "..\\x.safetensors"}}`, `weight_map["a"]`},
	{`{"weight_map": {"a": ".safetensors"}}`, `weight_map["a"]`},
	{`{"weight_map": {"a": "model.safetensors.index.json"}}`, `weight_map["a"]`},
	{`{"metadata": {"total_size": -1}, "weight_map": {"a": "x.safetensors"}}`, "metadata.total_size -1"},
	{`{"metadata": {"total_size": 1.5}, "weight_map": {"a": "x.safetensors"}}`, "metadata.total_size 1.5"},
	{`{"metadata": {"total_size": "big"}, "weight_map": {"a": "x.safetensors"}}`, "metadata.total_size"},
	{`{"metadata": 3, "weight_map": {"a": "x.safetensors"}}`, "metadata"},
}

// TestParseIndexRefuses: malformed indexes are refused naming the key.
func TestParseIndexRefuses(t *testing.T) {
	for _, c := range hostileIndexes {
		if _, err := ParseIndex([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.json, err, c.want)
		}
	}
	x, err := ParseIndex([]byte(`{"metadata": {"total_size": 24}, "weight_map": {"b": "y.safetensors", "a": "x.safetensors", "c": "x.safetensors"}}`))
	if err != nil || x.TotalSize != 24 || len(x.WeightMap) != 3 || strings.Join(x.Shards(), ",") != "x.safetensors,y.safetensors" {
		t.Errorf("a valid index: %+v, %v", x, err)
	}
	many := map[string]string{}
	for i := 0; i <= maxShards; i++ {
		many[fmt.Sprint("t", i)] = fmt.Sprint("s", i, ".safetensors")
	}
	b, _ := json.Marshal(map[string]any{"weight_map": many})
	if _, err := ParseIndex(b); err == nil || !strings.Contains(err.Error(), "shard files") {
		t.Errorf("%d shards: %v", len(many), err)
	}
}

// FuzzParseIndex: any index is refused or gives a non-empty weight map of
// plain shard names in the index's directory, at most maxShards of them.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"metadata": {"total_size": 24}, "weight_map": {"a": "x.safetensors", "b": "y.safetensors"}}`))
	for _, c := range hostileIndexes {
		f.Add([]byte(c.json))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := ParseIndex(b)
		if err != nil {
			return
		}
		if len(x.WeightMap) == 0 || len(x.Shards()) > maxShards || x.TotalSize < -1 {
			t.Fatalf("accepted %+v", x)
		}
		for n, s := range x.WeightMap {
			if n == "" || filepath.Base(s) != s || filepath.Clean(s) != s || !strings.HasSuffix(s, ".safetensors") || s == IndexName {
				t.Fatalf("accepted %q -> %q", n, s)
			}
		}
	})
}
