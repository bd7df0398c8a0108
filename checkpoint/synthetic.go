package checkpoint

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"qat/data/atomic"
	"qat/data/safetensors"
	"qat/layers"
)

// WriteSynthetic writes a Hugging Face model directory of config c with
// random BF16 weights, as a published checkpoint is laid out: config.json,
// and the weights split by size into shards files
// (model-0000i-of-0000n.safetensors) under model.safetensors.index.json
// (shards 1: one model.safetensors). It writes no tokenizer
// (LoadHFModel reads such a directory). The values are
// SyntheticValues(seed, k, ...) for the k-th tensor of c.Shapes(); the
// writer holds one chunk of them, so a model of any size is written in
// little memory (for import benchmarks at real scale). The files are
// written in place: dir is the caller's scratch directory.
func WriteSynthetic(dir string, c layers.Config, shards int, seed uint64) error {
	if err := c.Validate(); err != nil {
		return err
	}
	shapes := c.Shapes()
	if shards < 1 || shards > len(shapes) {
		return fmt.Errorf("synthetic checkpoint: %d shards for %d tensors", shards, len(shapes))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hf, err := c.HFConfigWith(map[string]any{"torch_dtype": "bfloat16"})
	if err != nil {
		return err
	}
	if err := atomic.WriteFile(filepath.Join(dir, "config.json"), hf); err != nil {
		return err
	}
	// shard boundaries: consecutive tensors, about total/shards bytes each
	var total int64
	size := make([]int64, len(shapes))
	for k, s := range shapes {
		size[k] = 2
		for _, d := range s.Shape {
			size[k] *= int64(d)
		}
		total += size[k]
	}
	var groups [][]int
	var acc int64
	for k := range shapes {
		if len(groups) == 0 || (acc >= total*int64(len(groups))/int64(shards) && len(groups) < shards && len(shapes)-k >= shards-len(groups)) {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], k)
		acc += size[k]
	}
	wm := map[string]string{}
	for g, ks := range groups {
		name := "model.safetensors"
		if shards > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", g+1, len(groups))
		}
		for _, k := range ks {
			wm[shapes[k].Name] = name
		}
		if err := writeSyntheticShard(filepath.Join(dir, name), shapes, ks, size, seed); err != nil {
			return err
		}
	}
	if shards == 1 {
		return nil
	}
	b, err := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": wm}, "", "  ")
	if err != nil {
		return err
	}
	return atomic.WriteFile(filepath.Join(dir, safetensors.IndexName), b)
}

// writeSyntheticShard streams one shard: the header, then each tensor's
// values chunk by chunk.
func writeSyntheticShard(path string, shapes []layers.TensorShape, ks []int, size []int64, seed uint64) error {
	type entry struct {
		DType   string   `json:"dtype"`
		Shape   []int    `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, k := range ks {
		hdr[shapes[k].Name] = entry{"BF16", shapes[k].Shape, [2]int64{off, off + size[k]}}
		off += size[k]
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	binary.Write(w, binary.LittleEndian, uint64(len(h)))
	w.Write(h)
	vals := make([]float32, 1<<16)
	buf := make([]byte, 2*len(vals))
	for _, k := range ks {
		r := syntheticRand(seed, k)
		for n := size[k] / 2; n > 0; {
			chunk := vals[:min(int64(len(vals)), n)]
			fillSynthetic(r, chunk, shapes[k].Shape)
			for i, x := range chunk {
				binary.LittleEndian.PutUint16(buf[2*i:], safetensors.BF16Bits(x))
			}
			if _, err := w.Write(buf[:2*len(chunk)]); err != nil {
				f.Close()
				return err
			}
			n -= int64(len(chunk))
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syntheticRand(seed uint64, k int) *rand.Rand { return rand.New(rand.NewPCG(seed, uint64(k))) }

// fillSynthetic draws the next values of a tensor: norms (1-D) near 1,
// matrices uniform in ±0.05 (a trained model's scale).
func fillSynthetic(r *rand.Rand, v []float32, shape []int) {
	for i := range v {
		x := float32(r.Float64()*0.1 - 0.05)
		if len(shape) == 1 {
			x += 1
		}
		v[i] = x
	}
}

// SyntheticValues returns the first n values WriteSynthetic gives the
// k-th tensor of shape shape, as float32 before the BF16 rounding.
func SyntheticValues(seed uint64, k int, shape []int, n int) []float32 {
	v := make([]float32, n)
	fillSynthetic(syntheticRand(seed, k), v, shape)
	return v
}
