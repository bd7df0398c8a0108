// Package export writes trained models in the formats inference engines
// read: GGUF for llama.cpp (and ollama), and packed safetensors; and reads
// them back into a layers.Model.
package export

import (
	"fmt"
	"strings"

	"qat/autograd"
	"qat/data/bpe"
	"qat/data/gguf"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// tensorRef is one tensor of the model with its GGUF name and whether it
// is a matrix that takes the export's quantization.
type tensorRef struct {
	gguf   string
	w      []float32
	rows   int // out dimension (ne[1]); 1 for vectors
	cols   int // in dimension (ne[0])
	matrix bool
	permK  int // heads to permute for rotary (q: heads, k: kv_heads), 0 none
	lin    *layers.Linear
}

// dims are the tensor's GGUF dims (ne): [cols] or [cols, rows].
func (r tensorRef) dims() []uint64 {
	if r.rows == 1 {
		return []uint64{uint64(r.cols)}
	}
	return []uint64{uint64(r.cols), uint64(r.rows)}
}

// ggufLayout lists the GGUF tensors of a llama of config c in file order,
// without weights (layers.Describe): the names, shapes and roles a file
// must match before the model is allocated. c must be valid.
func ggufLayout(c layers.Config) []tensorRef { return layout(layers.Describe(c)) }

// layout lists m's GGUF tensors (the parameters with GGUF names, in
// order) with their weights and linears bound. A linear without a float32
// weight (LR-QAT) is left out.
func layout(m *layers.Model) []tensorRef {
	lins := map[*autograd.Var]*layers.Linear{}
	for _, nl := range m.Linears() {
		if nl.Linear.Weight != nil {
			lins[nl.Linear.Weight] = nl.Linear
		}
	}
	// llama.cpp's rotary layout for its llama architecture: q's rows (and
	// bias) permuted by heads, k's by kv heads. Its qwen2 architecture
	// rotates halves as transformers does (NEOX RoPE): no permutation.
	perm := map[*autograd.Var]int{}
	for _, l := range m.Layers {
		if ggufArch(m.Config) != "llama" {
			break
		}
		perm[l.Attn.Q.Weight], perm[l.Attn.K.Weight] = m.Heads, m.KVHeads
		if l.Attn.Q.Bias != nil {
			perm[l.Attn.Q.Bias], perm[l.Attn.K.Bias] = m.Heads, m.KVHeads
		}
	}
	var ts []tensorRef
	for _, p := range m.Params() {
		if p.GGUF == "" {
			continue
		}
		t := tensorRef{gguf: p.GGUF, w: p.Var.Data(), rows: 1, cols: p.Var.Shape()[0], permK: perm[p.Var], lin: lins[p.Var]}
		if sh := p.Var.Shape(); len(sh) == 2 {
			t.rows, t.cols = sh[0], sh[1]
		}
		t.matrix = t.lin != nil && t.lin != m.Head // an untied head is kept at the embedding's type
		ts = append(ts, t)
	}
	return ts
}

// permuteRotary reorders the rows of a q or k weight from the Hugging Face
// rotate-half layout (pairs j, j+hd/2 of a head) to llama.cpp's adjacent
// pairs (2j, 2j+1), as llama.cpp's converter does: GGUF row h*hd+2j is HF
// row h*hd+j, GGUF row h*hd+2j+1 is HF row h*hd+hd/2+j. inverse undoes it.
// A row is rowLen elements: floats, or the bytes of packed blocks (whole
// rows move, so packed data permutes without unpacking).
func permuteRotary[T any](w []T, rows, rowLen, heads int, inverse bool) []T {
	out := make([]T, len(w))
	hd := rows / heads
	for h := 0; h < heads; h++ {
		for j := 0; j < hd/2; j++ {
			for k, src := range [2]int{h*hd + j, h*hd + hd/2 + j} {
				dst := h*hd + 2*j + k
				if inverse {
					dst, src = src, dst
				}
				copy(out[dst*rowLen:(dst+1)*rowLen], w[src*rowLen:(src+1)*rowLen])
			}
		}
	}
	return out
}

// ggufFormats lists the formats a GGUF's matrices can take (those with a
// llama file type), for messages: "f32, f16, q4_0 or q8_0".
func ggufFormats() string {
	var names []string
	for id := range kernels.Formats {
		if f := kernels.Formats[id]; f.FileType >= 0 && f.Pack != nil {
			names = append(names, f.Name)
		}
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// GGUF builds the GGUF file of m and its tokenizer with the block matrices
// in format quant (f32, f16, q4_0, q8_0). Embeddings, an untied output
// matrix and norms stay f32 (f16 with quant f16): the QAT presets keep them
// in full precision, and the export must compute what the model computed.
// A matrix whose quantizer trained on the same grid (q4_0, q8_0) packs to
// exactly its fake-quant values; other matrices are quantized with
// llama.cpp's reference rule (the post-training baseline).
func GGUF(m *layers.Model, tok *bpe.Tokenizer, quant, name string) (*gguf.File, error) {
	f, err := kernels.ParseFormat(quant)
	if err != nil || kernels.Formats[f].FileType < 0 || kernels.Formats[f].Pack == nil {
		return nil, fmt.Errorf("export: quantization %q, want %s", quant, ggufFormats())
	}
	if err := rotatedRefusal(m, "GGUF", "llama.cpp"); err != nil {
		return nil, err
	}
	if b := kernels.Formats[f].BlockElems; b > 1 {
		if err := m.Config.BlockAligned(b); err != nil {
			return nil, fmt.Errorf("export %s: %w", quant, err)
		}
	}
	for _, ln := range m.Linears() {
		if qat.KeepsOutliers(ln.Linear) {
			return nil, fmt.Errorf("export %s: %s keeps fp16 outliers beside its quantized weights (GWQ): GGUF's block formats cannot hold them; export --format safetensors-packed", quant, ln.Name)
		}
		if ln.Linear.Weight == nil {
			return nil, fmt.Errorf("export %s: %s has LR-QAT adapters: qat merge the checkpoint first", quant, ln.Name)
		}
		if q, ok := qat.Plain(ln.Linear.WeightQuant); ok && kernels.Formats[q.Format].BlockElems > 1 && q.Format != f {
			return nil, fmt.Errorf("export %s: %s was trained on the %s grid: export it as %s to keep what it learned", quant, ln.Name, q.Format, q.Format)
		}
	}
	other := kernels.F32
	if f == kernels.F16 {
		other = kernels.F16
	}
	kvs, err := tokenizerKVs(tok)
	if err != nil {
		return nil, err
	}
	u32 := func(k string, v int) gguf.KV { return gguf.KV{Key: k, Type: gguf.TypeU32, Value: uint32(v)} }
	head := []gguf.KV{
		{Key: "general.architecture", Type: gguf.TypeString, Value: ggufArch(m.Config)},
		{Key: "general.name", Type: gguf.TypeString, Value: name},
		u32("general.file_type", kernels.Formats[f].FileType),
		u32("general.quantization_version", 2),
		u32("general.alignment", gguf.Alignment),
	}
	file := &gguf.File{KVs: append(append(head, LlamaKVs(m.Config)...), kvs...)}
	for _, t := range layout(m) {
		w := t.w
		if t.permK > 0 {
			w = permuteRotary(w, t.permRows(), t.permRowLen(), t.permK, false)
		}
		tf := other
		switch {
		case t.matrix:
			tf = f
		case t.rows == 1:
			tf = kernels.F32 // norms
		}
		data := make([]byte, t.rows*tf.RowBytes(t.cols))
		tf.Pack(data, w)
		file.Tensors = append(file.Tensors, gguf.Tensor{Name: t.gguf, Dims: t.dims(), Type: uint32(kernels.Formats[tf].GGML), Data: data})
	}
	if rf := ropeFreqs(m.Config); rf != nil {
		file.Tensors = append(file.Tensors, *rf)
	}
	return file, nil
}

// LlamaKVs are the hyperparameter keys of c under its llama.cpp
// architecture's prefix (llama.*, qwen2.*), typed as llama.cpp reads them
// (u32 counts, f32 rope base and norm epsilon). A head_dim other than
// dim/heads is key_length and value_length, as convert_hf_to_gguf.py
// writes it; llama3 rope_scaling is the rope_freqs tensor (ropeFreqs) plus
// qat.rope_scaling.* keys that let qat read its parameters back.
func LlamaKVs(c layers.Config) []gguf.KV {
	a := ggufArch(c)
	u32 := func(k string, v int) gguf.KV { return gguf.KV{Key: a + "." + k, Type: gguf.TypeU32, Value: uint32(v)} }
	f32 := func(k string, v float64) gguf.KV {
		return gguf.KV{Key: a + "." + k, Type: gguf.TypeF32, Value: float32(v)}
	}
	kvs := []gguf.KV{
		u32("context_length", c.MaxSeq),
		u32("embedding_length", c.Dim),
		u32("block_count", c.Layers),
		u32("feed_forward_length", c.FFNHidden),
		u32("attention.head_count", c.Heads),
		u32("attention.head_count_kv", c.KVHeads),
		u32("rope.dimension_count", c.HeadDim()),
		u32("vocab_size", c.Vocab),
		f32("rope.freq_base", c.RopeTheta),
		f32("attention.layer_norm_rms_epsilon", c.NormEps),
	}
	if c.HeadDimension > 0 {
		kvs = append(kvs, u32("attention.key_length", c.HeadDim()), u32("attention.value_length", c.HeadDim()))
	}
	if rs := c.RopeScaling; rs.Type != "" {
		kvs = append(kvs, gguf.KV{Key: "qat.rope_scaling.type", Type: gguf.TypeString, Value: rs.Type},
			gguf.KV{Key: "qat.rope_scaling.factor", Type: gguf.TypeF32, Value: float32(rs.Factor)},
			gguf.KV{Key: "qat.rope_scaling.low_freq_factor", Type: gguf.TypeF32, Value: float32(rs.LowFreqFactor)},
			gguf.KV{Key: "qat.rope_scaling.high_freq_factor", Type: gguf.TypeF32, Value: float32(rs.HighFreqFactor)},
			gguf.KV{Key: "qat.rope_scaling.original_max_position_embeddings", Type: gguf.TypeU32, Value: uint32(rs.OriginalMax)})
	}
	return kvs
}

// tokenizerKVs describes tok as llama.cpp's vocabulary: byte-level BPE
// as gpt2 with the pre-tokenizer convert_hf_to_gguf.py names, SentencePiece
// style as llama with scores and token types; bos/eos/add_bos from the
// tokenizer's configs (vocab.go).
func tokenizerKVs(tok *bpe.Tokenizer) ([]gguf.KV, error) {
	return vocabKVs(tok)
}
