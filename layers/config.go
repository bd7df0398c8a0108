package layers

import (
	"fmt"
	"math"

	"qat/kernels"
)

// Config holds a Llama model's hyperparameters.
type Config struct {
	Vocab     int     `yaml:"vocab" json:"vocab_size"`
	Dim       int     `yaml:"dim" json:"hidden_size"`
	Layers    int     `yaml:"layers" json:"num_hidden_layers"`
	Heads     int     `yaml:"heads" json:"num_attention_heads"`
	KVHeads   int     `yaml:"kv_heads" json:"num_key_value_heads"`
	FFNHidden int     `yaml:"ffn_hidden" json:"intermediate_size"`
	RopeTheta float64 `yaml:"rope_theta" json:"rope_theta"`
	NormEps   float64 `yaml:"norm_eps" json:"rms_norm_eps"`
	Tied      bool    `yaml:"tied_embeddings" json:"tie_word_embeddings"`
	MaxSeq    int     `yaml:"max_seq" json:"max_position_embeddings"`
	// HeadDimension is the width of one attention head when it is not
	// Dim/Heads (Llama 3.2 and Mistral-Nemo style: q_proj is
	// (heads*head_dim, dim)); 0 means Dim/Heads.
	HeadDimension int `yaml:"head_dim,omitempty" json:"head_dim,omitempty"`
	// QKVBias adds a bias to q_proj, k_proj and v_proj (Qwen2).
	QKVBias bool `yaml:"qkv_bias,omitempty" json:"-"`
	// RopeScaling rescales RoPE's frequencies for long contexts; the zero
	// value is plain RoPE.
	RopeScaling RopeScaling `yaml:"rope_scaling,omitempty" json:"-"`
	// DownHadamard is the online transform of a rotated model (package
	// qat/rotate, QuaRot): each MLP's SwiGLU output goes through
	// x -> x H/sqrt(ffn_hidden) before down_proj, whose weight carries
	// H's transpose, so the down_proj input's outliers are spread before
	// its observers and input quantizer see it. "full" is
	// kernels.NewHadamard(ffn_hidden), "block" kernels.NewBlockHadamard,
	// "" none. config.json keeps it as qat_down_hadamard, a key
	// transformers does not know: a Hugging Face export folds H back into
	// down_proj and leaves the key out.
	DownHadamard string `yaml:"down_hadamard,omitempty" json:"qat_down_hadamard,omitempty"`
}

// Down-projection transforms (Config.DownHadamard).
const (
	DownFull  = "full"
	DownBlock = "block"
)

// DownTransform returns the online transform of the down_proj input that
// c.DownHadamard names, nil for none.
func (c Config) DownTransform() (*kernels.Hadamard, error) {
	switch c.DownHadamard {
	case "":
		return nil, nil
	case DownFull:
		return kernels.NewHadamard(c.FFNHidden)
	case DownBlock:
		return kernels.NewBlockHadamard(c.FFNHidden)
	}
	return nil, fmt.Errorf("down_hadamard %q, want %s, %s or none", c.DownHadamard, DownFull, DownBlock)
}

// RopeScaling is Hugging Face's rope_scaling of type "llama3" (Llama 3.1
// and 3.2): wavelengths longer than OriginalMax/LowFreqFactor are divided
// by Factor, shorter than OriginalMax/HighFreqFactor kept, and the band
// between interpolated (Config.RopeFreqs). Type "" is none.
type RopeScaling struct {
	Type           string  `yaml:"type,omitempty"`
	Factor         float64 `yaml:"factor,omitempty"`
	LowFreqFactor  float64 `yaml:"low_freq_factor,omitempty"`
	HighFreqFactor float64 `yaml:"high_freq_factor,omitempty"`
	OriginalMax    int     `yaml:"original_max_position_embeddings,omitempty"`
}

// HeadDim is the width of one attention head: HeadDimension when set,
// else Dim/Heads.
func (c Config) HeadDim() int {
	if c.HeadDimension > 0 {
		return c.HeadDimension
	}
	return c.Dim / c.Heads
}

// Validate reports the first impossible value, naming its field: a
// *FieldError for every field. Sizes over the limits (CurrentLimits) are
// errors too, so a validated Config is safe to allocate: New's memory is
// bounded before anything is read into it.
func (c Config) Validate() error { return c.ValidateLimits(CurrentLimits()) }

// ValidateLimits is Validate under the limits l.
func (c Config) ValidateLimits(l Limits) error {
	for _, f := range []struct {
		key string
		v   int
	}{{"vocab", c.Vocab}, {"dim", c.Dim}, {"layers", c.Layers}, {"heads", c.Heads},
		{"kv_heads", c.KVHeads}, {"ffn_hidden", c.FFNHidden}, {"max_seq", c.MaxSeq}} {
		if f.v <= 0 {
			return &FieldError{f.key, int64(f.v), fmt.Sprintf("%d, must be positive", f.v)}
		}
	}
	if err := c.checkSizes(l); err != nil {
		return err
	}
	switch {
	case c.HeadDimension < 0:
		return &FieldError{"head_dim", int64(c.HeadDimension), fmt.Sprintf("%d, must be positive (or 0: dim/heads)", c.HeadDimension)}
	case c.HeadDimension == 0 && c.Dim%c.Heads != 0:
		return &FieldError{"dim", int64(c.Dim), fmt.Sprintf("%d is not a multiple of model.heads %d", c.Dim, c.Heads)}
	case c.HeadDim()%2 != 0:
		return &FieldError{"heads", int64(c.Heads), fmt.Sprintf("%d: head dimension %d must be even for RoPE", c.Heads, c.HeadDim())}
	case c.Heads%c.KVHeads != 0:
		return &FieldError{"kv_heads", int64(c.KVHeads), fmt.Sprintf("%d does not divide model.heads %d", c.KVHeads, c.Heads)}
	case !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0):
		return &FieldError{"rope_theta", 0, fmt.Sprintf("%g, must be positive", c.RopeTheta)}
	case !(c.NormEps > 0) || c.NormEps > 1:
		return &FieldError{"norm_eps", 0, fmt.Sprintf("%g, must be in (0, 1]", c.NormEps)}
	}
	if err := c.RopeScaling.validate(); err != nil {
		return err
	}
	switch c.DownHadamard {
	case "", DownBlock:
	case DownFull:
		if !kernels.HadamardSupported(c.FFNHidden) {
			return &FieldError{"down_hadamard", 0, fmt.Sprintf("%s: no Hadamard matrix of size ffn_hidden %d is known (%s: the block-diagonal one)", DownFull, c.FFNHidden, DownBlock)}
		}
	default:
		return &FieldError{"down_hadamard", 0, fmt.Sprintf("%q, want %s, %s or none (set by a rotation: quant.rotate, qat ptq --rotate)", c.DownHadamard, DownFull, DownBlock)}
	}
	return c.checkProducts(l)
}

// BlockAligned reports an error when a weight dimension is not a multiple
// of block (32 for llama.cpp's Q4_0/Q8_0), naming the field; block-quantized
// presets call it.
func (c Config) BlockAligned(block int) error {
	for _, f := range []struct {
		name string
		v    int
	}{{"vocab", c.Vocab}, {"dim", c.Dim}, {"ffn_hidden", c.FFNHidden}, {"dim/heads*kv_heads", c.HeadDim() * c.KVHeads},
		{"head_dim*heads", c.HeadDim() * c.Heads}} {
		if f.v%block != 0 {
			return fmt.Errorf("model.%s: %d is not a multiple of the quantization block %d", f.name, f.v, block)
		}
	}
	return nil
}

// Tiny and Small are the reference configurations (configs/tiny.yaml and
// configs/small.yaml carry the same values).
var (
	Tiny  = Config{Vocab: 4096, Dim: 256, Layers: 4, Heads: 4, KVHeads: 4, FFNHidden: 704, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 128}
	Small = Config{Vocab: 8192, Dim: 512, Layers: 8, Heads: 8, KVHeads: 8, FFNHidden: 1376, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 256}
)

// Params counts the parameters of the model c describes; NonEmbedding leaves
// out the token embedding and an untied lm_head.
func (c Config) Params() (total, nonEmbedding int) {
	kv := c.HeadDim() * c.KVHeads
	q := c.HeadDim() * c.Heads
	block := 2*c.Dim*q + 2*c.Dim*kv + 3*c.Dim*c.FFNHidden + 2*c.Dim
	if c.QKVBias {
		block += q + 2*kv
	}
	nonEmbedding = c.Layers*block + c.Dim
	total = nonEmbedding + c.Vocab*c.Dim
	if !c.Tied {
		total += c.Vocab * c.Dim
	}
	return total, nonEmbedding
}

// FLOPsPerToken is the training cost (forward + backward) per token of a
// sequence of length seq: 6 x (non-embedding params + lm_head) plus the
// attention products QK^T and AV (12 * layers * dim * seq, the full T x T as
// PyTorch computes it, so both sides count the same work).
func (c Config) FLOPsPerToken(seq int) float64 {
	_, ne := c.Params()
	return 6*float64(ne+c.Vocab*c.Dim) + 12*float64(c.Layers*c.Dim*seq)
}
