package export

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/x448/float16"

	"qat/autograd"
	"qat/data/atomic"
	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
)

// HFOptions are the choices of a Hugging Face export.
type HFOptions struct {
	// DType of the floating-point tensors: "bf16" or "f16" (round to
	// nearest even from f32, as torch's .to(torch.bfloat16)) or "f32"
	// (exact).
	DType string
	// MaxShardSize in bytes: the weights are split into shards of at most
	// this size (a tensor larger than it gets a shard of its own), with
	// model.safetensors.index.json, when they exceed it. 0: one file.
	MaxShardSize int64
	// Force replaces an existing directory qat did not write.
	Force bool
}

// HFResult says what an HF export wrote.
type HFResult struct {
	Files []string // the weight files, in order
	Bytes int64    // the tensors' total size (the index's metadata.total_size)
	// ActQuant names the linears whose input quantizers, and the attention
	// modules whose KV-cache quantizers, the Hugging Face format cannot
	// describe: transformers runs them on full-precision activations
	// (--format compressed-tensors keeps the linears' for vLLM).
	ActQuant []string
}

// hfDTypes are the dtypes an HF export writes: safetensors' name and
// config.json's torch_dtype.
var hfDTypes = map[string][2]string{"bf16": {"BF16", "bfloat16"}, "f16": {"F16", "float16"}, "f32": {"F32", "float32"}}

// floatTensor is v in dtype: F32, BF16 (rounded to nearest even) or F16
// (rounded to nearest even; a finite value past f16's range is an error
// naming the tensor, not an infinity in the file).
func floatTensor(name string, shape []int, v []float32, dtype string) (safetensors.Tensor, error) {
	shape = append([]int(nil), shape...)
	switch dtype {
	case "F32":
		return safetensors.FromF32(name, shape, v), nil
	case "F16":
		t := safetensors.FromF16(name, shape, v)
		for i, x := range v {
			if h := float16.Frombits(binary.LittleEndian.Uint16(t.Data[2*i:])); h.IsInf(0) && !math.IsInf(float64(x), 0) {
				return t, fmt.Errorf("export %s: value %d, %g, is past float16's range (65504): export bf16 or f32", name, i, x)
			}
		}
		return t, nil
	case "BF16":
		bits := BF16(v)
		data := make([]byte, 2*len(bits))
		for i, b := range bits {
			binary.LittleEndian.PutUint16(data[2*i:], b)
		}
		return safetensors.Tensor{Name: name, DType: "BF16", Shape: shape, Data: data}, nil
	}
	return safetensors.Tensor{}, fmt.Errorf("export: dtype %q", dtype)
}

// ParseShardSize reads a shard size as huggingface_hub's parse_size_to_int
// does: an integer with a unit, KB/MB/GB/TB decimal (5GB = 5*10^9) and
// KiB/MiB/GiB/TiB binary, or a plain number of bytes.
func ParseShardSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	u := strings.ToUpper(strings.TrimSpace(s))
	mult := 1.0
	for _, x := range units {
		if strings.HasSuffix(u, x.suffix) {
			u, mult = strings.TrimSpace(strings.TrimSuffix(u, x.suffix)), x.mult
			break
		}
	}
	v, err := strconv.ParseFloat(u, 64)
	if err != nil || !(v > 0) || v*mult > 1<<62 {
		return 0, fmt.Errorf("%q: want a positive size such as 5GB, 500MB or 2GiB", s)
	}
	return int64(v * mult), nil
}

// BF16 rounds f32 values to bfloat16 bits, to nearest with ties to even
// (what torch's .to(torch.bfloat16) does); NaNs stay NaNs (quiet, sign
// kept), infinities and values rounding past the largest finite bf16 are
// infinities.
func BF16(v []float32) []uint16 {
	out := make([]uint16, len(v))
	for i, f := range v {
		b := math.Float32bits(f)
		if f != f {
			out[i] = uint16(b>>16) | 0x40
			continue
		}
		// adding 0x7fff plus the kept part's lowest bit carries into the
		// kept part exactly when the dropped half is above one half, or
		// exactly one half and the kept part odd
		out[i] = uint16((b + 0x7fff + (b>>16)&1) >> 16)
	}
	return out
}

// lazyTensor is a tensor of an export made when its shard is written, so
// an export holds the model and one shard, not a second copy of the model
// (an 8B model's dequantized f32 weights are 32 GB).
type lazyTensor struct {
	name  string
	bytes int64
	make  func() (safetensors.Tensor, error)
}

// eager wraps a tensor already made.
func eager(t safetensors.Tensor) lazyTensor {
	return lazyTensor{t.Name, int64(len(t.Data)), func() (safetensors.Tensor, error) { return t, nil }}
}

// floatLazy is v() in dtype, made when written.
func floatLazy(name string, shape []int, n int, dtype string, v func() []float32) lazyTensor {
	size := map[string]int64{"F32": 4, "BF16": 2, "F16": 2}[dtype]
	return lazyTensor{name, size * int64(n), func() (safetensors.Tensor, error) { return floatTensor(name, shape, v(), dtype) }}
}

// fakeQuant is l's weight through its weight quantizer: the values its
// forward computes with (GWQ's kept weights included).
func fakeQuant(l *layers.Linear) []float32 {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	return l.WeightQuant.Apply(tp, l.Weight).Data()
}

// hfTensors are m's tensors as transformers names and reads them, in
// dtype (safetensors' name): quantized linears' weights as their
// fake-quant values, quantizer state left out (the values hold what it
// did). act names the linears with input quantizers and the attention
// modules with KV-cache quantizers, which the format cannot describe. A
// linear with adapters has no single weight and is refused: merge it
// first.
func hfTensors(m *layers.Model, dtype string) ([]lazyTensor, []string, error) {
	var act []string
	for _, a := range m.Attentions() {
		if a.Attention.KQuant != nil || a.Attention.VQuant != nil {
			act = append(act, a.Name+" (KV cache)")
		}
	}
	quantized := map[*autograd.Var]*layers.Linear{}
	for _, ln := range m.Linears() {
		l := ln.Linear
		if l.Weight == nil || l.Adapter != nil {
			return nil, nil, fmt.Errorf("export %s: the layer has adapters (LoRA-QAT or LR-QAT): qat merge the checkpoint first", ln.Name)
		}
		if l.InputQuant != nil {
			act = append(act, ln.Name)
		}
		if l.WeightQuant != nil {
			quantized[l.Weight] = l
		}
	}
	// a rotated model's down_proj reads its input through the online
	// transform H, which transformers does not apply: W H^T folds it back
	// (exact in float; the format has no activation quantizer to keep it
	// for)
	online, err := m.Config.DownTransform()
	if err != nil {
		return nil, nil, err
	}
	downs := map[*autograd.Var]bool{}
	if online != nil {
		for _, l := range m.Layers {
			downs[l.MLP.Down.Weight] = true
		}
	}
	var ts []lazyTensor
	for _, p := range m.Params() {
		if p.Quant {
			continue
		}
		v := p.Var.Data
		if l, ok := quantized[p.Var]; ok {
			v = func() []float32 { return fakeQuant(l) }
		}
		if downs[p.Var] {
			w := v
			v = func() []float32 { return unrotate(w(), online) }
		}
		ts = append(ts, floatLazy(p.Name, p.Var.Shape(), p.Var.Size(), dtype, v))
	}
	return ts, act, nil
}

// unrotate returns w (out, h.N) times H^T: each row through h.ApplyT64 in
// float64, rounded once.
func unrotate(w []float32, h *kernels.Hadamard) []float32 {
	out := make([]float32, len(w))
	n := h.N
	kernels.For(len(w)/n, max(1, 1<<14/n), func(lo, hi int) {
		r := make([]float64, n)
		for i := lo; i < hi; i++ {
			for k, x := range w[i*n : (i+1)*n] {
				r[k] = float64(x)
			}
			h.ApplyT64(r)
			for k, x := range r {
				out[i*n+k] = float32(x)
			}
		}
	})
	return out
}

// shardNames is Hugging Face's naming of n shards: model.safetensors for
// one, model-00001-of-00002.safetensors and so on for more.
func shardNames(n int) []string {
	if n == 1 {
		return []string{"model.safetensors"}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
	}
	return names
}

// splitShards splits ts, in order, as huggingface_hub's
// split_state_dict_into_shards does: a tensor goes to the current shard
// unless it would take it past max, then a new shard starts; a tensor
// larger than max gets a shard of its own (ahead of the one being
// filled). max 0 is one shard.
func splitShards(ts []lazyTensor, max int64) [][]lazyTensor {
	var shards [][]lazyTensor
	var cur []lazyTensor
	var size int64
	for _, t := range ts {
		n := t.bytes
		if max > 0 && n > max {
			shards = append(shards, []lazyTensor{t})
			continue
		}
		if max > 0 && len(cur) > 0 && size+n > max {
			shards = append(shards, cur)
			cur, size = nil, 0
		}
		cur = append(cur, t)
		size += n
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
	}
	return shards
}

// hfIndex is model.safetensors.index.json.
type hfIndex struct {
	Metadata  map[string]int64  `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// specialIDs are the tokenizer's bos and eos ids (an imported tokenizer's
// tokenizer_config.json and generation_config.json say them; qat's own
// have <|bos|> and <|eos|>), the ids that stop generation (eos among
// them) and its pad id; -1 for a role it lacks (Qwen's tokenizers have no
// bos).
func specialIDs(tok *bpe.Tokenizer) (bos, eos int32, stop []int32, pad int32) {
	one := func(f func() (int32, error)) int32 {
		id, err := f()
		if err != nil {
			return -1
		}
		return id
	}
	bos, eos, pad = one(tok.BOS), one(tok.EOS), one(tok.PAD)
	stop = tok.StopIDs()
	if eos >= 0 && !slices.Contains(stop, eos) {
		stop = append([]int32{eos}, stop...)
	}
	return bos, eos, stop, pad
}

// hfConfigJSON is config.json of m for transformers and vLLM: layers'
// HFConfigWith (the architecture's keys: Qwen2 for q/k/v biases, head_dim,
// rope_scaling) with torch_dtype, the tokenizer's bos/eos/pad ids (keys
// of roles it lacks removed) and extra keys (quantization_config).
func hfConfigJSON(m *layers.Model, tok *bpe.Tokenizer, torchDType string, extra map[string]any) ([]byte, error) {
	if tok.VocabSize() > m.Vocab {
		// transformers would index past the embedding
		return nil, fmt.Errorf("export: the tokenizer has %d tokens, more than the model's vocab_size %d", tok.VocabSize(), m.Vocab)
	}
	bos, eos, _, pad := specialIDs(tok)
	keys := map[string]any{"torch_dtype": torchDType}
	for k, id := range map[string]int32{"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad} {
		keys[k] = nil
		if id >= 0 {
			keys[k] = id
		}
	}
	for k, v := range extra {
		keys[k] = v
	}
	return m.Config.HFConfigWith(keys)
}

// idOrList is one id as a number, several as a list (transformers takes
// either for eos_token_id).
func idOrList(ids []int32) any {
	if len(ids) == 1 {
		return ids[0]
	}
	return ids
}

// generationConfigJSON is generation_config.json as transformers'
// GenerationConfig.save_pretrained writes it: only the values that differ
// from its defaults (greedy decoding is the default, so do_sample false
// and temperature are not written): the token ids, eos_token_id the list
// of stop ids when there are several (Llama 3's <|eot_id|> beside
// <|end_of_text|>).
func generationConfigJSON(tok *bpe.Tokenizer) ([]byte, error) {
	bos, _, stop, pad := specialIDs(tok)
	g := map[string]any{}
	if bos >= 0 {
		g["bos_token_id"] = bos
	}
	if len(stop) > 0 {
		g["eos_token_id"] = idOrList(stop)
	}
	if pad >= 0 {
		g["pad_token_id"] = pad
	}
	return json.MarshalIndent(g, "", "  ")
}

// writeTokenizer writes the tokenizer's files into dir: tokenizer.json and
// tokenizer_config.json (an imported tokenizer's as they were read, its
// chat template too).
func writeTokenizer(tok *bpe.Tokenizer, dir string) error { return tok.WriteFiles(dir) }

// ParseDType checks an HF export's dtype (bf16, f16 or f32) and returns its
// safetensors name.
func ParseDType(d string) (string, error) {
	dt, ok := hfDTypes[d]
	if !ok {
		return "", fmt.Errorf("%q, want bf16, f16 or f32", d)
	}
	return dt[0], nil
}

// HF writes m to dir as a Hugging Face checkpoint that transformers loads
// as is (AutoModelForCausalLM.from_pretrained(dir)): config.json,
// generation_config.json, the tokenizer's files and the weights in
// o.DType, sharded past o.MaxShardSize with model.safetensors.index.json.
// Quantized linears are written as their fake-quant weights: transformers
// computes with the weights the model trained with. Activation quantizers
// have no Hugging Face form: HFResult.ActQuant names those linears. A
// rotated model's online transform of the down_proj input is folded back
// into down_proj (W H^T) and config.json leaves qat_down_hadamard out:
// the residual rotation needs nothing at run time. dir is
// replaced only when qat wrote it, or with o.Force (atomic.Dir).
func HF(m *layers.Model, tok *bpe.Tokenizer, dir string, o HFOptions) (*HFResult, error) {
	var res *HFResult
	err := atomic.Dir(dir, o.Force, func(tmp string) error {
		var err error
		res, err = HFInto(m, tok, tmp, o)
		return err
	})
	return res, err
}

// HFInto is HF writing into dir, an empty directory the caller made (an
// atomic.Reservation's).
func HFInto(m *layers.Model, tok *bpe.Tokenizer, dir string, o HFOptions) (*HFResult, error) {
	dt, ok := hfDTypes[o.DType]
	if !ok {
		return nil, fmt.Errorf("dtype %q, want bf16, f16 or f32", o.DType)
	}
	ts, act, err := hfTensors(m, dt[0])
	if err != nil {
		return nil, err
	}
	// hfTensors folded a rotated model's online transform into down_proj
	cfg, err := hfConfigJSON(m, tok, dt[1], map[string]any{"qat_down_hadamard": nil})
	if err != nil {
		return nil, err
	}
	gen, err := generationConfigJSON(tok)
	if err != nil {
		return nil, err
	}
	res := &HFResult{ActQuant: act}
	if res.Files, res.Bytes, err = writeShards(dir, ts, o.MaxShardSize); err != nil {
		return nil, err
	}
	if err := atomic.WriteFile(filepath.Join(dir, "config.json"), cfg); err != nil {
		return nil, err
	}
	if err := atomic.WriteFile(filepath.Join(dir, "generation_config.json"), gen); err != nil {
		return nil, err
	}
	return res, writeTokenizer(tok, dir)
}

// writeShards writes ts into dir as safetensors shards of at most max bytes
// of tensor data (HF naming), with model.safetensors.index.json when there
// are several, and returns the file names and the data's total size. Each
// shard's tensors are made as it is written.
func writeShards(dir string, ts []lazyTensor, max int64) ([]string, int64, error) {
	shards := splitShards(ts, max)
	names := shardNames(len(shards))
	idx := hfIndex{Metadata: map[string]int64{"total_size": 0}, WeightMap: map[string]string{}}
	var total int64
	for i, sh := range shards {
		made := make([]safetensors.Tensor, len(sh))
		for k, lt := range sh {
			t, err := lt.make()
			if err != nil {
				return nil, 0, err
			}
			if int64(len(t.Data)) != lt.bytes {
				return nil, 0, fmt.Errorf("export %s: %d bytes, sized %d", t.Name, len(t.Data), lt.bytes)
			}
			made[k] = t
			total += lt.bytes
			idx.WeightMap[t.Name] = names[i]
		}
		if err := safetensors.Write(filepath.Join(dir, names[i]), made, map[string]string{"format": "pt"}); err != nil {
			return nil, 0, err
		}
	}
	idx.Metadata["total_size"] = total
	if len(shards) > 1 {
		b, err := json.MarshalIndent(idx, "", "  ")
		if err != nil {
			return nil, 0, err
		}
		if err := atomic.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b); err != nil {
			return nil, 0, err
		}
	}
	return names, total, nil
}

// rotatedRefusal refuses a rotated model (layers.Config.DownHadamard) for
// a format whose runtime cannot apply the online Hadamard transform of
// the down_proj input: folding it back into down_proj would change the
// weights that were quantized, so the format could not hold them as
// trained.
func rotatedRefusal(m *layers.Model, format, runtime string) error {
	if m.DownHadamard == "" {
		return nil
	}
	return fmt.Errorf("export %s: the model is rotated (qat_down_hadamard %q): %s has no online Hadamard transform of the down_proj input, and folding it back would change the quantized down_proj weights; export --format safetensors-packed (qat's packed kernels apply it) or --format hf (float weights, the transform folded back)",
		format, m.DownHadamard, runtime)
}
