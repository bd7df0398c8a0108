package export

import (
	"errors"
	"fmt"
	"math"

	"qat/autograd"
	"qat/data/bpe"
	"qat/data/gguf"
	"qat/kernels"
	"qat/layers"
)

// embedGGUF and headGGUF are the GGUF names of the token embedding and an
// untied output matrix (the model's tags): a GGUF's vocabulary is the
// embedding's rows, and an output matrix makes it untied.
var embedGGUF, headGGUF = func() (string, string) {
	m := layers.Describe(layers.Config{Vocab: 1, Dim: 1, Layers: 1, Heads: 1, KVHeads: 1, FFNHidden: 1, MaxSeq: 1})
	var embed, head string
	for _, p := range m.Params() {
		switch p.Var {
		case m.Embed.Weight:
			embed = p.GGUF
		case m.Head.Weight:
			head = p.GGUF
		}
	}
	return embed, head
}()

// ggufKeys name, per Config field (YAML name), where a GGUF holds it
// (under the architecture's prefix).
var ggufKeys = map[string]string{"vocab": embedGGUF + "'s rows", "dim": "embedding_length",
	"layers": "block_count", "heads": "attention.head_count", "kv_heads": "attention.head_count_kv",
	"ffn_hidden": "feed_forward_length", "max_seq": "context_length", "rope_theta": "rope.freq_base",
	"norm_eps": "attention.layer_norm_rms_epsilon", "head_dim": "attention.key_length"}

// ConfigOf reads a llama or qwen2 GGUF's hyperparameters. u32 keys must be
// u32 and the required ones present, as llama.cpp requires. The sizes are
// validated against the limits (layers.CurrentLimits); an error names the
// GGUF key and the Config field.
func ConfigOf(f *gguf.File) (layers.Config, error) {
	var c layers.Config
	a, err := f.String("general.architecture")
	if err != nil || (a != "llama" && a != "qwen2") {
		return c, fmt.Errorf("general.architecture %q, want llama or qwen2 (%v)", a, err)
	}
	c.QKVBias = a == "qwen2"
	for _, k := range []struct {
		key string
		dst *int
	}{{"context_length", &c.MaxSeq}, {"embedding_length", &c.Dim}, {"block_count", &c.Layers},
		{"feed_forward_length", &c.FFNHidden}, {"attention.head_count", &c.Heads}} {
		v, err := f.U32(a + "." + k.key)
		if err != nil {
			return c, err
		}
		*k.dst = int(v)
	}
	optU32 := func(key string, dst *int) error {
		if _, ok := f.Get(key); !ok {
			return nil
		}
		v, err := f.U32(key)
		*dst = int(v)
		return err
	}
	c.KVHeads = c.Heads
	if err := optU32(a+".attention.head_count_kv", &c.KVHeads); err != nil {
		return c, err
	}
	if err := optU32(a+".attention.key_length", &c.HeadDimension); err != nil {
		return c, err
	}
	if c.Heads > 0 && c.HeadDimension*c.Heads == c.Dim {
		c.HeadDimension = 0 // the default, as a Config from config.json has it
	}
	eps, err := f.F32(a + ".attention.layer_norm_rms_epsilon")
	if err != nil {
		return c, err
	}
	c.NormEps = float64(eps)
	c.RopeTheta = 10000
	if _, ok := f.Get(a + ".rope.freq_base"); ok {
		th, err := f.F32(a + ".rope.freq_base")
		if err != nil {
			return c, err
		}
		c.RopeTheta = float64(th)
	}
	emb, ok := f.Tensor(embedGGUF)
	if !ok || len(emb.Dims) != 2 {
		return c, fmt.Errorf("%s missing or not a matrix", embedGGUF)
	}
	if emb.Dims[1] > math.MaxInt32 {
		return c, fmt.Errorf("%s: %d rows (model.vocab) exceed the limit %d (--limits vocab=N raises it)",
			embedGGUF, emb.Dims[1], layers.CurrentLimits().Vocab)
	}
	c.Vocab = int(emb.Dims[1])
	_, untied := f.Tensor(headGGUF)
	c.Tied = !untied
	if err := c.Validate(); err != nil {
		var fe *layers.FieldError
		if errors.As(err, &fe) {
			key := ggufKeys[fe.Field]
			if fe.Field != "vocab" {
				key = a + "." + key
			}
			return c, fmt.Errorf("%s (model.%s): %s", key, fe.Field, fe.Msg)
		}
		return c, err
	}
	// after the sizes are known valid: its factors are computed from them
	if err := ropeScalingOf(f, &c); err != nil {
		return c, err
	}
	return c, nil
}

// LoadGGUF reads a llama GGUF (as GGUF writes it, or llama.cpp's converter
// with a gpt2 vocabulary) into a model with its weights unpacked to
// float32, and its tokenizer.
func LoadGGUF(path string) (*layers.Model, *bpe.Tokenizer, *gguf.File, error) {
	m, f, err := LoadGGUFModel(path, true)
	if err != nil {
		return nil, nil, nil, err
	}
	tok, err := ggufTokenizer(m, f)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, tok, f, nil
}

// ggufTokenizer reads f's vocabulary, which must have m's size.
func ggufTokenizer(m *layers.Model, f *gguf.File) (*bpe.Tokenizer, error) {
	tok, err := TokenizerOf(f)
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() != m.Vocab {
		return nil, fmt.Errorf("%d tokens, %s has %d rows", tok.VocabSize(), embedGGUF, m.Vocab)
	}
	return tok, nil
}

// LoadGGUFModel reads the model of a llama GGUF without its tokenizer.
// With unpackAll false, matrices stored in Q4_0 or Q8_0 are left packed
// (their float32 weights stay zero and untouched): the form a packed
// decoder needs, without the memory of the unpacked weights.
func LoadGGUFModel(path string, unpackAll bool) (*layers.Model, *gguf.File, error) {
	f, err := gguf.Read(path)
	if err != nil {
		return nil, nil, err
	}
	m, err := ggufModel(f, unpackAll)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, f, nil
}

// ggufModel builds the model of a parsed GGUF. The hyperparameters are
// checked against the limits and every tensor's name, dims and type
// against them before the model is allocated: its memory is then bounded
// by the file's (gguf.Parse checks that each tensor's data is there).
func ggufModel(f *gguf.File, unpackAll bool) (*layers.Model, error) {
	c, err := ConfigOf(f)
	if err != nil {
		return nil, err
	}
	refs := ggufLayout(c)
	extra := 0
	if c.RopeScaling.Type != "" {
		extra = 1 // rope_freqs, checked by ropeScalingOf
	}
	if len(f.Tensors) != len(refs)+extra {
		return nil, fmt.Errorf("%d tensors, a llama of this shape has %d", len(f.Tensors), len(refs))
	}
	for _, r := range refs {
		t, ok := f.Tensor(r.gguf)
		if !ok {
			return nil, fmt.Errorf("tensor %s missing", r.gguf)
		}
		if want := r.dims(); fmt.Sprint(t.Dims) != fmt.Sprint(want) {
			return nil, fmt.Errorf("tensor %s has dims %v, want %v", r.gguf, t.Dims, want)
		}
		tf, ok := kernels.FormatOfGGML(t.Type)
		if !ok {
			return nil, fmt.Errorf("tensor %s: ggml type %d not supported", r.gguf, t.Type)
		}
		if len(t.Data) != r.rows*tf.RowBytes(r.cols) {
			return nil, fmt.Errorf("tensor %s: %d bytes, %s of dims %v takes %d", r.gguf, len(t.Data), tf, t.Dims, r.rows*tf.RowBytes(r.cols))
		}
	}
	m := layers.New(c)
	for _, r := range layout(m) {
		t, _ := f.Tensor(r.gguf)
		tf, _ := kernels.FormatOfGGML(t.Type)
		if !unpackAll && r.lin != nil && (tf == kernels.Q4_0 || tf == kernels.Q8_0) {
			continue
		}
		tf.Unpack(r.w, t.Data)
		if r.permK > 0 {
			copy(r.w, permuteRotary(r.w, r.permRows(), r.permRowLen(), r.permK, true))
		}
	}
	return m, nil
}

// TokenizerOf reads the vocabulary of f (gpt2 or llama, vocab.go): the
// tokenizer.json it carries when qat wrote it from an imported tokenizer,
// else the tokenizer llama.cpp's keys describe.
func TokenizerOf(f *gguf.File) (*bpe.Tokenizer, error) {
	return vocabOf(f, true)
}

// Packed returns the block matrices of f stored in Q4_0 or Q8_0 as packed
// weights of m (LoadGGUF's model), q and k rows back in m's order, for a
// layers.NewPackedDecoder; the token embedding stays unpacked (it is read
// by rows).
func Packed(m *layers.Model, f *gguf.File) map[*autograd.Var]layers.PackedWeight {
	out := map[*autograd.Var]layers.PackedWeight{}
	for _, r := range layout(m) {
		t, ok := f.Tensor(r.gguf)
		if !ok || r.lin == nil {
			continue
		}
		tf, ok := kernels.FormatOfGGML(t.Type)
		if !ok || (tf != kernels.Q4_0 && tf != kernels.Q8_0) {
			continue
		}
		data := t.Data
		if r.permK > 0 {
			data = permuteRotary(data, r.rows, tf.RowBytes(r.cols), r.permK, true)
		}
		pw := layers.PackedWeight{Format: tf, Data: data}
		// repacked where the CPU has the kernel; the rows are then not
		// needed twice
		if pw.R4 = kernels.Repack(tf, data, r.rows, r.cols); pw.R4 != nil {
			pw.Data = nil
		}
		out[r.lin.Weight] = pw
	}
	return out
}
