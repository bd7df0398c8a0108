package layers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
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
	m.walk(func(n node) bool {
		if !n.quant {
			return !n.isVar
		}
		fs, ok := n.v.Interface().(FrozenState)
		if !ok {
			return false
		}
		fr := fs.Frozen()
		keys := make([]string, 0, len(fr))
		for k := range fr {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t := fr[k]
			t.Name = n.name() + "." + k
			out = append(out, frozenTensor{t, fs, k})
		}
		return false
	})
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
	return m.LoadFrom(path, f)
}

// LoadFrom is Load of a file already read; name stands for it in errors.
// Each tensor's dtype and shape are checked against the model before its
// values are read; quantizers range-check what they read (LoadFrozen).
func (m *Model) LoadFrom(name string, f *safetensors.File) error {
	for _, p := range m.Params() {
		t, ok := f.Get(p.Name)
		if !ok && p.Quant {
			continue // a full-precision checkpoint: keep the quantizer's initial state
		}
		if err := checkTensor(t, ok, p.Name, p.Var.Shape()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		v, err := t.F32()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		copy(p.Var.Data(), v)
	}
	for _, fr := range m.frozen() {
		t, ok := f.Get(fr.t.Name)
		if !ok {
			return fmt.Errorf("%s: tensor %s missing", name, fr.t.Name)
		}
		if t.DType != fr.t.DType || !slices.Equal(t.Shape, fr.t.Shape) {
			return fmt.Errorf("%s: tensor %s: %s %v, model wants %s %v", name, fr.t.Name, t.DType, t.Shape, fr.t.DType, fr.t.Shape)
		}
		if err := fr.q.LoadFrozen(fr.k, t); err != nil {
			return fmt.Errorf("%s: tensor %s: %w", name, fr.t.Name, err)
		}
	}
	return nil
}

// checkTensor reports a missing tensor, or one that is not F32 of shape
// want, naming it.
func checkTensor(t safetensors.Tensor, ok bool, name string, want []int) error {
	switch {
	case !ok:
		return fmt.Errorf("tensor %s missing", name)
	case t.DType != "F32":
		return fmt.Errorf("tensor %s: dtype %s, model wants F32", name, t.DType)
	case !slices.Equal(t.Shape, want):
		return fmt.Errorf("tensor %s: shape %v, model wants %v", name, t.Shape, want)
	}
	return nil
}

// CheckFile reports the first parameter of a model of config c that f
// lacks or holds with another dtype or shape, naming it: loaders call it
// before New, so the model's memory is bounded by the file's. Quantizer
// state is not checked (Load does).
func (c Config) CheckFile(f *safetensors.File) error {
	for _, s := range c.Shapes() {
		t, ok := f.Get(s.Name)
		if err := checkTensor(t, ok, s.Name, s.Shape); err != nil {
			return err
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

// ReadHFConfig reads a Hugging Face LlamaConfig config.json; errors name
// the file and the JSON key (ParseHFConfig).
func ReadHFConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := ParseHFConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseHFConfig decodes a config.json and validates it (Validate, the
// limits included) before anything is sized from it: an error names the
// JSON key and the Config field (hidden_size (model.dim): ...).
func ParseHFConfig(b []byte) (Config, error) {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, err
	}
	if mt, _ := raw["model_type"].(string); mt != "llama" {
		return Config{}, fmt.Errorf("model_type %q, want llama", mt)
	}
	c := Config{RopeTheta: 10000, NormEps: 1e-6}
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, err
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if err := c.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return Config{}, fmt.Errorf("%s (model.%s): %s", jsonKey(fe.Field), fe.Field, fe.Msg)
		}
		return Config{}, err
	}
	return c, nil
}

// jsonKey is config.json's key of the Config field whose YAML name is
// field.
func jsonKey(field string) string {
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("yaml") == field {
			return t.Field(i).Tag.Get("json")
		}
	}
	return field
}
