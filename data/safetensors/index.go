package safetensors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IndexName is the index of a sharded Hugging Face checkpoint.
const IndexName = "model.safetensors.index.json"

// Bounds on an index file, checked before it is read or its shards opened:
// Llama 3.1 405B's index is 100 KB over 191 shards.
const (
	maxIndex  = 64 << 20
	maxShards = 1 << 14
)

// Index is a sharded checkpoint's model.safetensors.index.json: which
// shard file holds each tensor.
type Index struct {
	// TotalSize is metadata.total_size (the tensors' bytes, as
	// transformers counts them), -1 when absent; informational only,
	// since writers count shared tensors differently.
	TotalSize int64
	WeightMap map[string]string // tensor name -> shard file name
}

// Shards lists the distinct shard files, sorted.
func (x *Index) Shards() []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range x.WeightMap {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// ParseIndex decodes an index file. weight_map must be an object of
// non-empty tensor names, each given once, to shard file names that are
// plain *.safetensors names in the index's directory (no path: an index
// cannot send the loader elsewhere); metadata.total_size, when present, a
// non-negative integer. At most maxShards distinct shards. Errors name the
// key.
func ParseIndex(b []byte) (*Index, error) {
	if len(b) > maxIndex {
		return nil, fmt.Errorf("%d bytes, over the limit of %d for an index", len(b), maxIndex)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	x := &Index{TotalSize: -1, WeightMap: map[string]string{}}
	if raw, ok := top["metadata"]; ok && string(raw) != "null" {
		var meta map[string]json.RawMessage
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
		if ts, ok := meta["total_size"]; ok {
			var n json.Number
			if err := json.Unmarshal(ts, &n); err != nil {
				return nil, fmt.Errorf("metadata.total_size %s: not a number", ts)
			}
			v, err := n.Int64()
			if err != nil || v < 0 {
				return nil, fmt.Errorf("metadata.total_size %s: want a non-negative integer", n)
			}
			x.TotalSize = v
		}
	}
	raw, ok := top["weight_map"]
	if !ok {
		return nil, fmt.Errorf("weight_map missing")
	}
	// decoded token by token: a tensor given twice is an error, where
	// Unmarshal would keep the last silently
	d := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("weight_map: want an object of tensor name -> shard file")
	}
	shards := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("weight_map: %w", err)
		}
		name := tok.(string) // object keys are strings
		tok, err = d.Token()
		if err != nil {
			return nil, fmt.Errorf("weight_map[%q]: %w", name, err)
		}
		file, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("weight_map[%q]: %v, want a shard file name", name, tok)
		}
		switch {
		case name == "":
			return nil, fmt.Errorf("weight_map: an empty tensor name")
		case x.WeightMap[name] != "":
			return nil, fmt.Errorf("weight_map[%q]: given twice (%s and %s)", name, x.WeightMap[name], file)
		case !validShard(file):
			return nil, fmt.Errorf("weight_map[%q]: shard %q: want a file name ending .safetensors in the index's directory", name, file)
		}
		x.WeightMap[name] = file
		if !shards[file] {
			if len(shards) == maxShards {
				return nil, fmt.Errorf("weight_map: more than %d shard files", maxShards)
			}
			shards[file] = true
		}
	}
	if _, err := d.Token(); err != nil {
		return nil, fmt.Errorf("weight_map: %w", err)
	}
	if len(x.WeightMap) == 0 {
		return nil, fmt.Errorf("weight_map: no tensors")
	}
	return x, nil
}

func validShard(f string) bool {
	return strings.HasSuffix(f, ".safetensors") && len(f) > len(".safetensors") &&
		!strings.ContainsAny(f, `/\`+"\x00") && f != IndexName
}

// ReadIndex reads and parses the index file at path; errors name it.
func ReadIndex(path string) (*Index, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	b, err := io.ReadAll(io.LimitReader(fd, maxIndex+1)) // bounded before read
	if err != nil {
		return nil, err
	}
	x, err := ParseIndex(b)
	if err != nil {
		return nil, &InputError{fmt.Errorf("%s: %w", path, err)}
	}
	return x, nil
}

// OpenSharded opens a sharded checkpoint from its index file: every shard
// it names is mapped (Open) and checked against it before any tensor byte
// is read. A shard that is missing or not valid safetensors, a tensor the
// index places in a shard that does not hold it, and a tensor held by two
// shards are errors naming the files and the tensor. Tensors a shard holds
// that the index does not name are left out. The result holds the
// tensors the index names, each aliasing its shard's mapping
// (File.Source names the shard), until Close.
func OpenSharded(indexPath string) (*File, error) {
	x, err := ReadIndex(indexPath)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(indexPath)
	out := &File{src: map[string]string{}}
	held := map[string]string{} // every tensor any shard holds -> its shard
	for _, name := range x.Shards() {
		p := filepath.Join(dir, name)
		f, err := Open(p)
		if err != nil {
			out.Close()
			if os.IsNotExist(err) {
				return nil, inputErr("%s names shard %s (tensor %s), which is missing", indexPath, name, firstTensor(x, name))
			}
			return nil, err
		}
		out.maps = append(out.maps, f.maps...)
		for _, t := range f.Tensors {
			if prev, dup := held[t.Name]; dup {
				out.Close()
				return nil, inputErr("%s: tensor %s is in two shards, %s and %s", indexPath, t.Name, prev, p)
			}
			held[t.Name] = p
			if x.WeightMap[t.Name] == name {
				out.Tensors = append(out.Tensors, t)
				out.src[t.Name] = p
			}
		}
	}
	names := make([]string, 0, len(x.WeightMap))
	for n := range x.WeightMap {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, ok := out.src[n]; !ok {
			p := filepath.Join(dir, x.WeightMap[n])
			out.Close()
			if other, ok := held[n]; ok {
				return nil, inputErr("%s places tensor %s in %s, but %s holds it", indexPath, n, p, other)
			}
			return nil, inputErr("%s places tensor %s in %s, which does not hold it", indexPath, n, p)
		}
	}
	return out, nil
}

// firstTensor is the first tensor (by name) the index places in shard.
func firstTensor(x *Index, shard string) string {
	first := ""
	for n, f := range x.WeightMap {
		if f == shard && (first == "" || n < first) {
			first = n
		}
	}
	return first
}
