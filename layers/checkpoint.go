package layers

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"qat/data/safetensors"
)

// Tensors returns the model's parameters as F32 safetensors tensors with
// their Hugging Face names.
func (m *Model) Tensors() []safetensors.Tensor {
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.FromF32(p.Name, p.Var.Shape(), p.Var.Data()))
	}
	for _, f := range m.frozen() {
		ts = append(ts, f.t)
	}
	return ts
}

type frozenTensor struct {
	t safetensors.Tensor
	q FrozenState
	k string
}

// frozen lists the quantizers' frozen tensors (FrozenState), by name.
func (m *Model) frozen() []frozenTensor {
	var out []frozenTensor
	for _, nl := range m.Linears() {
		for _, q := range []struct {
			name string
			q    Quantizer
		}{{nl.Name + ".weight_quant", nl.Linear.WeightQuant}, {nl.Name + ".input_quant", nl.Linear.InputQuant}} {
			fs, ok := q.q.(FrozenState)
			if !ok {
				continue
			}
			fr := fs.Frozen()
			keys := make([]string, 0, len(fr))
			for k := range fr {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				t := fr[k]
				t.Name = q.name + "." + k
				out = append(out, frozenTensor{t, fs, k})
			}
		}
	}
	return out
}

// NamedLinear is a linear layer with its checkpoint name.
type NamedLinear struct {
	Name   string
	Linear *Linear
}

// Linears lists the model's linear layers (q/k/v/o, gate/up/down per
// layer, then an untied head) with their checkpoint names.
func (m *Model) Linears() []NamedLinear {
	var out []NamedLinear
	for i, L := range m.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		out = append(out, NamedLinear{p + "self_attn.q_proj", L.Attn.Q}, NamedLinear{p + "self_attn.k_proj", L.Attn.K},
			NamedLinear{p + "self_attn.v_proj", L.Attn.V}, NamedLinear{p + "self_attn.o_proj", L.Attn.O},
			NamedLinear{p + "mlp.gate_proj", L.MLP.Gate}, NamedLinear{p + "mlp.up_proj", L.MLP.Up}, NamedLinear{p + "mlp.down_proj", L.MLP.Down})
	}
	if m.Head != nil {
		out = append(out, NamedLinear{"lm_head", m.Head})
	}
	return out
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
	for _, fr := range m.frozen() {
		t, ok := f.Get(fr.t.Name)
		if !ok {
			return fmt.Errorf("%s: tensor %s missing", path, fr.t.Name)
		}
		if err := fr.q.LoadFrozen(fr.k, t); err != nil {
			return fmt.Errorf("%s: tensor %s: %w", path, fr.t.Name, err)
		}
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
