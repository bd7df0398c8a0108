package layers

import (
	"encoding/json"
	"fmt"
	"os"

	"qat/data/safetensors"
)

// Tensors returns the model's parameters as F32 safetensors tensors with
// their Hugging Face names.
func (m *Model) Tensors() []safetensors.Tensor {
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.FromF32(p.Name, p.Var.Shape(), p.Var.Data()))
	}
	return ts
}

// Save writes the weights to path (temp file + rename).
func (m *Model) Save(path string) error {
	return safetensors.Write(path, m.Tensors(), map[string]string{"format": "pt"})
}

// Load reads weights from a safetensors file into m. Every parameter must
// be present with its exact shape and dtype F32; the error names the file
// and the tensor.
func (m *Model) Load(path string) error {
	f, err := safetensors.Read(path)
	if err != nil {
		return err
	}
	for _, p := range m.Params() {
		t, ok := f.Get(p.Name)
		if !ok && p.Quant {
			continue // a full-precision checkpoint: keep the quantizer's initial state
		}
		if !ok {
			return fmt.Errorf("%s: tensor %s missing", path, p.Name)
		}
		if fmt.Sprint(t.Shape) != fmt.Sprint(p.Var.Shape()) {
			return fmt.Errorf("%s: tensor %s: shape %v, model wants %v", path, p.Name, t.Shape, p.Var.Shape())
		}
		v, err := t.F32()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		copy(p.Var.Data(), v)
	}
	return nil
}

// HFConfig returns config.json in the Hugging Face LlamaConfig format.
func (c Config) HFConfig() ([]byte, error) {
	m := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"vocab_size": c.Vocab, "hidden_size": c.Dim, "num_hidden_layers": c.Layers,
		"num_attention_heads": c.Heads, "num_key_value_heads": c.KVHeads,
		"intermediate_size": c.FFNHidden, "rope_theta": c.RopeTheta, "rms_norm_eps": c.NormEps,
		"tie_word_embeddings": c.Tied, "max_position_embeddings": c.MaxSeq,
		"hidden_act": "silu", "torch_dtype": "float32", "attention_bias": false,
	}
	return json.MarshalIndent(m, "", "  ")
}

// ReadHFConfig reads a Hugging Face LlamaConfig config.json.
func ReadHFConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if mt, _ := raw["model_type"].(string); mt != "llama" {
		return Config{}, fmt.Errorf("%s: model_type %q, want llama", path, mt)
	}
	c := Config{RopeTheta: 10000, NormEps: 1e-6}
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
