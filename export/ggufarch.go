package export

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"qat/data/gguf"
	"qat/kernels"
	"qat/layers"
)

// ropeFreqsGGUF is the tensor llama.cpp divides RoPE's frequencies by
// (one factor per pair of a head's dimensions): how convert_hf_to_gguf.py
// carries Llama 3.1/3.2's rope_scaling.
const ropeFreqsGGUF = "rope_freqs.weight"

// ggufArch is c's llama.cpp architecture: qwen2 for a model with q/k/v
// biases (llama.cpp's llama graph has no attention biases), else llama.
func ggufArch(c layers.Config) string {
	if c.QKVBias {
		return "qwen2"
	}
	return "llama"
}

// ropeFreqs is the rope_freqs tensor of a model with llama3
// rope_scaling, nil without: per frequency 1 (short wavelengths), factor
// (long ones) or 1/((1-smooth)/factor + smooth) between, computed as
// convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors does from the
// float32 frequencies.
func ropeFreqs(c layers.Config) *gguf.Tensor {
	s := c.RopeScaling
	if s.Type != "llama3" {
		return nil
	}
	hd := c.HeadDim()
	low := float64(s.OriginalMax) / s.LowFreqFactor
	high := float64(s.OriginalMax) / s.HighFreqFactor
	data := make([]byte, 4*(hd/2))
	for j := 0; j < hd/2; j++ {
		f := float64(1 / float32(math.Pow(c.RopeTheta, float64(float32(2*j)/float32(hd)))))
		wave := 2 * math.Pi / f
		factor := 1.0
		switch {
		case wave < high:
		case wave > low:
			factor = s.Factor
		default:
			smooth := (float64(s.OriginalMax)/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
			factor = 1 / ((1-smooth)/s.Factor + smooth)
		}
		binary.LittleEndian.PutUint32(data[4*j:], math.Float32bits(float32(factor)))
	}
	return &gguf.Tensor{Name: ropeFreqsGGUF, Dims: []uint64{uint64(hd / 2)}, Type: uint32(kernels.Formats[kernels.F32].GGML), Data: data}
}

// permRows and permRowLen are the rows permuteRotary moves for t: a
// matrix's rows, or a bias's elements one by one.
func (t tensorRef) permRows() int {
	if t.rows == 1 {
		return t.cols
	}
	return t.rows
}

func (t tensorRef) permRowLen() int {
	if t.rows == 1 {
		return 1
	}
	return t.cols
}

// ropeScalingOf reads the rope_scaling qat writes beside rope_freqs
// (LlamaKVs) into c. A rope_freqs tensor qat cannot describe (another
// converter's, without the keys, or factors other than those the keys
// give) is refused: the model would rotate with other frequencies than
// llama.cpp does.
func ropeScalingOf(f *gguf.File, c *layers.Config) error {
	t, hasFreqs := f.Tensor(ropeFreqsGGUF)
	if _, ok := f.Get("qat.rope_scaling.type"); !ok {
		if hasFreqs {
			return fmt.Errorf("%s: RoPE frequency factors without qat.rope_scaling.* keys: qat reads the llama3 rope_scaling it writes itself", ropeFreqsGGUF)
		}
		return nil
	}
	s := &c.RopeScaling
	var err error
	if s.Type, err = f.String("qat.rope_scaling.type"); err != nil {
		return err
	}
	for _, k := range []struct {
		key string
		dst *float64
	}{{"factor", &s.Factor}, {"low_freq_factor", &s.LowFreqFactor}, {"high_freq_factor", &s.HighFreqFactor}} {
		v, err := f.F32("qat.rope_scaling." + k.key)
		if err != nil {
			return err
		}
		*k.dst = float64(v)
	}
	om, err := f.U32("qat.rope_scaling.original_max_position_embeddings")
	if err != nil {
		return err
	}
	s.OriginalMax = int(om)
	if err := c.Validate(); err != nil {
		return fmt.Errorf("qat.rope_scaling: %w", err)
	}
	want := ropeFreqs(*c)
	if !hasFreqs || want == nil || fmt.Sprint(t.Dims) != fmt.Sprint(want.Dims) || t.Type != want.Type || !bytes.Equal(t.Data, want.Data) {
		return fmt.Errorf("%s: missing or not the factors of qat.rope_scaling (%s, factor %g)", ropeFreqsGGUF, s.Type, s.Factor)
	}
	return nil
}
