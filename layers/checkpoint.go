package layers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

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

// InputError is a checkpoint or config.json the model cannot be read
// from (a missing or misshapen tensor, an architecture or setting the
// model does not implement): the user's to fix, so the CLI exits 2
// (BadInput). Its text names the file and the tensor or key.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// BadInput marks the error as the user's to fix (exit status 2).
func (e *InputError) BadInput() {}

// Load reads weights from a safetensors file into m (mapped, not read
// whole: Load's memory is the model's). Every parameter must be present
// with its exact shape, as F32, F16 or BF16 (converted exactly to
// float32); the error names the file and the tensor.
func (m *Model) Load(path string) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return m.LoadFrom(path, f)
}

// LoadFrom is Load of a file already read or mapped; name stands for it
// in errors (a sharded file's tensors are named with their shard,
// File.Source). Each tensor's dtype and shape are checked against the
// model before its values are read, and each tensor's pages are released
// once converted (File.Release), so loading a mapped checkpoint holds the
// model and about one tensor of the file; quantizers range-check what
// they read (LoadFrozen), and their frozen state keeps its own dtype.
func (m *Model) LoadFrom(name string, f *safetensors.File) error {
	where := func(tensor string) string {
		if s := f.Source(tensor); s != "" {
			return s
		}
		return name
	}
	for _, p := range m.Params() {
		t, ok := f.Get(p.Name)
		if !ok && p.Quant {
			continue // a full-precision checkpoint: keep the quantizer's initial state
		}
		if err := checkTensor(t, ok, p.Name, p.Var.Shape()); err != nil {
			return &InputError{fmt.Errorf("%s: %w", where(p.Name), err)}
		}
		if err := t.Float32Into(p.Var.Data()); err != nil {
			return &InputError{fmt.Errorf("%s: %w", where(p.Name), err)}
		}
		f.Release(t)
	}
	for _, fr := range m.frozen() {
		t, ok := f.Get(fr.t.Name)
		if !ok {
			return &InputError{fmt.Errorf("%s: tensor %s missing", name, fr.t.Name)}
		}
		if t.DType != fr.t.DType || !slices.Equal(t.Shape, fr.t.Shape) {
			return &InputError{fmt.Errorf("%s: tensor %s: %s %v, model wants %s %v", where(fr.t.Name), fr.t.Name, t.DType, t.Shape, fr.t.DType, fr.t.Shape)}
		}
		if err := fr.q.LoadFrozen(fr.k, t); err != nil {
			return &InputError{fmt.Errorf("%s: tensor %s: %w", where(fr.t.Name), fr.t.Name, err)}
		}
		f.Release(t)
	}
	return nil
}

// checkTensor reports a missing tensor, or one that is not a float
// (F32, F16, BF16) of shape want, naming it.
func checkTensor(t safetensors.Tensor, ok bool, name string, want []int) error {
	switch {
	case !ok:
		return fmt.Errorf("tensor %s missing", name)
	case !safetensors.IsFloat(t.DType):
		return fmt.Errorf("tensor %s: dtype %s, model wants F32 (or F16, BF16)", name, t.DType)
	case !slices.Equal(t.Shape, want):
		return fmt.Errorf("tensor %s: shape %v, model wants %v", name, t.Shape, want)
	}
	return nil
}

// CheckFile reports the first parameter of a model of config c that f
// lacks or holds with another dtype or shape, naming it (and its shard,
// for a sharded file): loaders call it before New, so the model's memory
// is bounded by the file's. Quantizer state is not checked (Load does).
// Tensors the model does not use (rotary_emb.inv_freq, a tied model's
// lm_head.weight) are ignored.
func (c Config) CheckFile(f *safetensors.File) error {
	for _, s := range c.Shapes() {
		t, ok := f.Get(s.Name)
		if err := checkTensor(t, ok, s.Name, s.Shape); err != nil {
			if src := f.Source(s.Name); src != "" {
				err = fmt.Errorf("%s: %w", src, err)
			}
			return &InputError{err}
		}
	}
	return nil
}

// HFConfig returns config.json in the Hugging Face format
// (HFConfigWith without extra keys).
func (c Config) HFConfig() ([]byte, error) { return c.HFConfigWith(nil) }

// HFConfigWith returns config.json in the Hugging Face format of the
// architecture c is: Qwen2ForCausalLM (model_type qwen2) when it has
// q/k/v biases, LlamaForCausalLM (llama) otherwise, with head_dim,
// rope_scaling (llama3) and the bias flags written so ParseHFConfig reads
// c back exactly, and transformers, vLLM and llama.cpp's converter build
// the same model. A rotated model's online transform is written as
// qat_down_hadamard, which only qat reads: exports for other runtimes
// fold it away or refuse the model. extra adds or replaces keys (bos_token_id,
// eos_token_id, torch_dtype: the exporter's); a value of nil removes a
// key.
func (c Config) HFConfigWith(extra map[string]any) ([]byte, error) {
	m := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"vocab_size": c.Vocab, "hidden_size": c.Dim, "num_hidden_layers": c.Layers,
		"num_attention_heads": c.Heads, "num_key_value_heads": c.KVHeads,
		"intermediate_size": c.FFNHidden, "rope_theta": c.RopeTheta, "rms_norm_eps": c.NormEps,
		"tie_word_embeddings": c.Tied, "max_position_embeddings": c.MaxSeq,
		"hidden_act": "silu", "torch_dtype": "float32", "attention_bias": false,
	}
	if c.HeadDimension != 0 {
		m["head_dim"] = c.HeadDimension
	}
	if c.QKVBias {
		// Qwen2's attention has q/k/v biases and no o_proj bias, which
		// Llama's attention_bias (all four) cannot say
		m["architectures"], m["model_type"] = []string{"Qwen2ForCausalLM"}, "qwen2"
		m["use_sliding_window"], m["sliding_window"] = false, nil
		delete(m, "attention_bias")
	}
	if c.DownHadamard != "" {
		m["qat_down_hadamard"] = c.DownHadamard
	}
	if c.RopeScaling.Type != "" {
		m["rope_scaling"] = map[string]any{"rope_type": c.RopeScaling.Type, "factor": c.RopeScaling.Factor,
			"low_freq_factor": c.RopeScaling.LowFreqFactor, "high_freq_factor": c.RopeScaling.HighFreqFactor,
			"original_max_position_embeddings": c.RopeScaling.OriginalMax}
	}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return json.MarshalIndent(m, "", "  ")
}

// ReadHFConfig reads a Hugging Face config.json; errors name the file and
// the JSON key (ParseHFConfig).
func ReadHFConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := ParseHFConfig(b)
	if err != nil {
		return Config{}, &InputError{fmt.Errorf("%s: %w", path, err)}
	}
	return c, nil
}

// hfArchitectures are the model_type values ParseHFConfig reads, with the
// architecture class each names: all three are the Llama decoder this
// package implements, within the settings ParseHFConfig checks.
var hfArchitectures = map[string]string{
	"llama":   "LlamaForCausalLM",
	"mistral": "MistralForCausalLM",
	"qwen2":   "Qwen2ForCausalLM",
}

// ParseHFConfig decodes a Hugging Face config.json of a Llama (Llama 2,
// 3, 3.1, 3.2), Mistral or Qwen2 model and validates it (Validate, the
// limits included) before anything is sized from it. Every setting that
// would make transformers compute another function than this package's
// model is refused, naming the JSON key and its value: another
// architecture or model_type, rope_scaling other than llama3, a sliding window
// in effect, an activation other than silu, Llama's attention_bias or
// mlp_bias, attention dropout. A size error names the key and the Config
// field (hidden_size (model.dim): ...). Keys that do not change the
// function (torch_dtype, bos_token_id, use_cache, ...) are ignored, and so
// is quantization_config, which says how the weights are stored (the
// packed safetensors reader reads it; a float loader refuses it:
// checkpoint.HFConfig). head_dim equal to hidden_size/num_attention_heads
// reads as HeadDimension 0 (the one spelling of the default), so HFConfig
// writes head_dim only when it differs and a config round-trips exactly.
// qat_down_hadamard (qat's rotated models: Config.DownHadamard) is read
// and checked like the other keys. Every error is an *InputError.
func ParseHFConfig(b []byte) (Config, error) {
	c, err := parseHFConfig(b)
	if err != nil {
		return Config{}, &InputError{err}
	}
	return c, nil
}

func parseHFConfig(b []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, err
	}
	str := func(key string) (string, bool, error) {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", true, fmt.Errorf("%s %s: want a string", key, v)
		}
		return s, true, nil
	}
	mt, _, err := str("model_type")
	if err != nil {
		return Config{}, err
	}
	arch, ok := hfArchitectures[mt]
	if !ok {
		return Config{}, fmt.Errorf("model_type %q: not a supported architecture (llama, mistral, qwen2)", mt)
	}
	if v, ok := raw["architectures"]; ok && string(v) != "null" {
		var as []string
		if err := json.Unmarshal(v, &as); err != nil || len(as) != 1 {
			return Config{}, fmt.Errorf("architectures %s: want [%q]", v, arch)
		}
		if as[0] != arch {
			return Config{}, fmt.Errorf("architectures [%q]: model_type %s wants [%q]", as[0], mt, arch)
		}
	}
	if act, ok, err := str("hidden_act"); err != nil {
		return Config{}, err
	} else if ok && act != "silu" {
		return Config{}, fmt.Errorf("hidden_act %q: the model's MLP is SwiGLU (silu)", act)
	}
	c := Config{RopeTheta: 10000, NormEps: 1e-6}
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, err
	}
	if mt == "qwen2" {
		c.QKVBias = true // Qwen2's q/k/v projections always have biases
	}
	if err := checkHFFlags(raw, mt); err != nil {
		return Config{}, err
	}
	if err := checkSliding(raw, mt, c.MaxSeq); err != nil {
		return Config{}, err
	}
	if c.RopeScaling, err = parseRopeScaling("rope_scaling", raw["rope_scaling"]); err != nil {
		return Config{}, err
	}
	if rp, ok := raw["rope_parameters"]; ok && string(rp) != "null" {
		// transformers 5 writes rope_theta and the scaling here
		if c.RopeScaling, err = parseRopeScaling("rope_parameters", rp); err != nil {
			return Config{}, err
		}
		var th struct {
			Theta *float64 `json:"rope_theta"`
		}
		if json.Unmarshal(rp, &th) == nil && th.Theta != nil {
			c.RopeTheta = *th.Theta
		}
	}
	if c.KVHeads == 0 {
		if _, given := raw["num_key_value_heads"]; !given && mt == "mistral" {
			c.KVHeads = 8 // MistralConfig's default
		} else {
			c.KVHeads = c.Heads
		}
	}
	if c.HeadDimension%2 != 0 {
		// Validate would name num_attention_heads, which sets the width
		// only when head_dim is not given
		return Config{}, fmt.Errorf("head_dim %d: must be even for RoPE", c.HeadDimension)
	}
	if c.HeadDimension > 0 && c.Heads > 0 && c.HeadDimension*c.Heads == c.Dim {
		c.HeadDimension = 0 // head_dim as hidden_size/heads: the default, one spelling of it
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

// checkHFFlags refuses the boolean and numeric settings that change the
// function: Llama's attention_bias (q/k/v/o biases) and mlp_bias, and
// attention dropout (training would differ).
func checkHFFlags(raw map[string]json.RawMessage, mt string) error {
	for _, key := range []string{"attention_bias", "mlp_bias"} {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			continue
		}
		var on bool
		if err := json.Unmarshal(v, &on); err != nil {
			return fmt.Errorf("%s %s: want true or false", key, clip(v))
		}
		if on {
			return fmt.Errorf("%s true: biases on every projection are not implemented (model_type %s)", key, mt)
		}
	}
	if v, ok := raw["attention_dropout"]; ok && string(v) != "null" {
		var p float64
		if err := json.Unmarshal(v, &p); err != nil || p != 0 {
			return fmt.Errorf("attention_dropout %s: attention dropout is not implemented (want 0)", clip(v))
		}
	}
	return nil
}

// checkSliding refuses a sliding attention window in effect: Mistral's
// sliding_window below max_position_embeddings, Qwen2's
// use_sliding_window, or layer_types naming a sliding layer (the model's
// attention is full causal).
func checkSliding(raw map[string]json.RawMessage, mt string, maxSeq int) error {
	if v, ok := raw["layer_types"]; ok && string(v) != "null" {
		var lt []string
		if err := json.Unmarshal(v, &lt); err != nil {
			return fmt.Errorf("layer_types %s: want a list of strings", clip(v))
		}
		for i, t := range lt {
			if t != "full_attention" {
				return fmt.Errorf("layer_types[%d] %q: only full_attention is implemented", i, t)
			}
		}
	}
	switch mt {
	case "qwen2":
		if v, ok := raw["use_sliding_window"]; ok && string(v) != "null" {
			var on bool
			if err := json.Unmarshal(v, &on); err != nil {
				return fmt.Errorf("use_sliding_window %s: want true or false", clip(v))
			}
			if on {
				return fmt.Errorf("use_sliding_window true: sliding-window attention is not implemented")
			}
		}
	case "mistral":
		if v, ok := raw["sliding_window"]; ok && string(v) != "null" {
			var w int64
			if err := json.Unmarshal(v, &w); err != nil {
				return fmt.Errorf("sliding_window %s: want an integer or null", clip(v))
			}
			if w < int64(maxSeq) {
				return fmt.Errorf("sliding_window %d: a window shorter than max_position_embeddings %d is not implemented (null: none)", w, maxSeq)
			}
		}
	}
	return nil
}

// parseRopeScaling reads rope_scaling: absent, null or rope_type
// "default" is plain RoPE; "llama3" needs factor, low_freq_factor,
// high_freq_factor (above low_freq_factor) and
// original_max_position_embeddings; any other type is refused.
func parseRopeScaling(key string, v json.RawMessage) (RopeScaling, error) {
	if v == nil || string(v) == "null" {
		return RopeScaling{}, nil
	}
	var rs map[string]json.RawMessage
	if err := json.Unmarshal(v, &rs); err != nil {
		return RopeScaling{}, fmt.Errorf("%s %s: want an object", key, clip(v))
	}
	var typ string
	for _, k := range []string{"rope_type", "type"} { // transformers reads either, rope_type first
		if t, ok := rs[k]; ok && typ == "" {
			if err := json.Unmarshal(t, &typ); err != nil {
				return RopeScaling{}, fmt.Errorf("%s.%s %s: want a string", key, k, clip(t))
			}
		}
	}
	switch typ {
	case "default":
		return RopeScaling{}, nil
	case "llama3":
	default:
		return RopeScaling{}, fmt.Errorf("%s.rope_type %q: only llama3 scaling is implemented", key, typ)
	}
	out := RopeScaling{Type: typ}
	for _, f := range []struct {
		key string
		dst *float64
	}{{"factor", &out.Factor}, {"low_freq_factor", &out.LowFreqFactor}, {"high_freq_factor", &out.HighFreqFactor}} {
		x, ok := rs[f.key]
		if !ok {
			return RopeScaling{}, fmt.Errorf("%s.%s missing (rope_type llama3)", key, f.key)
		}
		if err := json.Unmarshal(x, f.dst); err != nil || !(*f.dst > 0) || *f.dst > 1e6 {
			return RopeScaling{}, fmt.Errorf("%s.%s %s: want a positive number", key, f.key, clip(x))
		}
	}
	if out.HighFreqFactor <= out.LowFreqFactor {
		return RopeScaling{}, fmt.Errorf("%s.high_freq_factor %g: must exceed low_freq_factor %g", key, out.HighFreqFactor, out.LowFreqFactor)
	}
	x, ok := rs["original_max_position_embeddings"]
	if !ok {
		return RopeScaling{}, fmt.Errorf("%s.original_max_position_embeddings missing (rope_type llama3)", key)
	}
	var om int64
	if err := json.Unmarshal(x, &om); err != nil || om <= 0 || om > 1<<40 {
		return RopeScaling{}, fmt.Errorf("%s.original_max_position_embeddings %s: want a positive integer", key, clip(x))
	}
	out.OriginalMax = int(om)
	return out, nil
}

// clip shortens a JSON value quoted in an error.
func clip(v json.RawMessage) string {
	if len(v) > 60 {
		return string(v[:60]) + "..."
	}
	return string(v)
}

// jsonKey is config.json's key of the Config field whose YAML name is
// field.
func jsonKey(field string) string {
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if y, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); y == field {
			j, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			return j
		}
	}
	return field
}
