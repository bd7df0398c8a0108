package layers

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// publishedConfigs are config.json files as published on the Hugging Face
// hub (trimmed of nothing), with the Config each describes and the
// parameter count the model card states: an independent check of the
// reading (and of Params).
var publishedConfigs = []struct {
	name   string
	json   string
	want   Config
	params int
}{
	{"TinyLlama-1.1B-Chat-v1.0", `{"architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
	  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 2048,
	  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4, "pretraining_tp": 1,
	  "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
	  "transformers_version": "4.35.0", "use_cache": true, "vocab_size": 32000}`,
		Config{Vocab: 32000, Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, FFNHidden: 5632, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 2048},
		1100048384},
	{"Llama-2-7b-hf", `{"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
	  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
	  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
	  "rope_scaling": null, "tie_word_embeddings": false, "torch_dtype": "float16", "transformers_version": "4.31.0.dev0",
	  "use_cache": true, "vocab_size": 32000}`,
		Config{Vocab: 32000, Dim: 4096, Layers: 32, Heads: 32, KVHeads: 32, FFNHidden: 11008, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 4096},
		6738415616},
	{"Llama-3.2-1B", `{"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
	  "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
	  "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32,
	  "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
	  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
	  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
	  "use_cache": true, "vocab_size": 128256}`,
		Config{Vocab: 128256, Dim: 2048, Layers: 16, Heads: 32, KVHeads: 8, FFNHidden: 8192, RopeTheta: 500000, NormEps: 1e-5, Tied: true, MaxSeq: 131072,
			RopeScaling: RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 8192}},
		1235814400},
	{"Mistral-7B-v0.3", `{"architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
	  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
	  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
	  "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
	  "transformers_version": "4.42.0.dev0", "use_cache": true, "vocab_size": 32768}`,
		Config{Vocab: 32768, Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, FFNHidden: 14336, RopeTheta: 1e6, NormEps: 1e-5, MaxSeq: 32768},
		7248023552},
	{"Qwen2-0.5B", `{"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
	  "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 131072,
	  "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
	  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
	  "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936}`,
		Config{Vocab: 151936, Dim: 896, Layers: 24, Heads: 14, KVHeads: 2, FFNHidden: 4864, RopeTheta: 1e6, NormEps: 1e-6, Tied: true, MaxSeq: 131072, QKVBias: true},
		494032768},
	{"Mistral-Nemo-Base-2407", `{"architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
	  "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02, "intermediate_size": 14336,
	  "max_position_embeddings": 1024000, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
	  "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
	  "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 131072}`,
		Config{Vocab: 131072, Dim: 5120, Layers: 40, Heads: 32, KVHeads: 8, FFNHidden: 14336, RopeTheta: 1e6, NormEps: 1e-5, MaxSeq: 1024000, HeadDimension: 128},
		12247782400},
}

// TestPublishedConfigs: the configs of published Llama, Mistral and Qwen2
// models read as the Config they describe, with the parameter count their
// model cards state, and write back (HFConfig) to the same Config.
func TestPublishedConfigs(t *testing.T) {
	for _, c := range publishedConfigs {
		got, err := ParseHFConfig([]byte(c.json))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: read %+v, want %+v", c.name, got, c.want)
		}
		if n, _ := got.Params(); n != c.params {
			t.Errorf("%s: %d parameters, the model card says %d", c.name, n, c.params)
		}
		back, err := ParseHFConfig(hfJSON(t, got, nil))
		if err != nil || back != got {
			t.Errorf("%s: HFConfig reads back as %+v, %v", c.name, back, err)
		}
	}
}

// TestHFConfigRoundTrip: every field HFConfig writes reads back exactly,
// head_dim, llama3 rope_scaling and Qwen2's biases included; the
// architecture written is qwen2 exactly when the model has q/k/v biases;
// HFConfigWith adds and removes keys.
func TestHFConfigRoundTrip(t *testing.T) {
	base := Config{Vocab: 300, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 96, RopeTheta: 5e5, NormEps: 1e-5, MaxSeq: 64}
	variants := []func(c *Config){
		func(c *Config) {},
		func(c *Config) { c.HeadDimension = 32 },
		func(c *Config) { c.QKVBias = true },
		func(c *Config) { c.Tied = true },
		func(c *Config) { c.DownHadamard = DownFull },
		func(c *Config) { c.DownHadamard = DownBlock },
		func(c *Config) {
			c.RopeScaling = RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 16}
		},
		func(c *Config) {
			c.HeadDimension, c.QKVBias = 8, true
			c.RopeScaling = RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1.5, HighFreqFactor: 4.25, OriginalMax: 8}
		},
	}
	for i, v := range variants {
		c := base
		v(&c)
		b, err := c.HFConfigWith(map[string]any{"bos_token_id": 7, "eos_token_id": []int{8, 9}, "torch_dtype": "bfloat16", "attention_bias": nil})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseHFConfig(b)
		if err != nil || got != c {
			t.Errorf("variant %d: %+v reads back as %+v, %v\n%s", i, c, got, err, b)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		if m["bos_token_id"] != 7.0 || m["torch_dtype"] != "bfloat16" || m["eos_token_id"] == nil {
			t.Errorf("variant %d: extra keys not written: %v", i, m)
		}
		if _, ok := m["attention_bias"]; ok {
			t.Errorf("variant %d: attention_bias not removed", i)
		}
		wantType := map[bool]string{true: "qwen2", false: "llama"}[c.QKVBias]
		if m["model_type"] != wantType {
			t.Errorf("variant %d: model_type %v, want %s", i, m["model_type"], wantType)
		}
	}
}

// TestHFConfigRefusals: each setting the model does not compute is
// refused with an error that names the key and its value and is
// BadInput; within 100 ms (nothing is sized from it).
func TestHFConfigRefusals(t *testing.T) {
	llama := publishedConfigs[2].json // Llama 3.2: rope_scaling, head_dim
	mistral := publishedConfigs[3].json
	qwen := publishedConfigs[4].json
	for _, c := range []struct {
		base  string
		edits map[string]any
		want  []string
	}{
		{llama, map[string]any{"model_type": "gpt2"}, []string{"model_type", "gpt2"}},
		{llama, map[string]any{"model_type": nil}, []string{"model_type", `""`}},
		{llama, map[string]any{"model_type": 3}, []string{"model_type", "3"}},
		{llama, map[string]any{"architectures": []string{"MistralForCausalLM"}}, []string{"architectures", "MistralForCausalLM", "llama"}},
		{llama, map[string]any{"architectures": []string{"LlamaForCausalLM", "X"}}, []string{"architectures"}},
		{llama, map[string]any{"model_type": "gemma", "architectures": []string{"GemmaForCausalLM"}}, []string{"model_type", "gemma"}},
		{llama, map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}, []string{"rope_scaling.rope_type", "yarn"}},
		{llama, map[string]any{"rope_scaling": map[string]any{"type": "dynamic", "factor": 2.0}}, []string{"rope_scaling.rope_type", "dynamic"}},
		{llama, map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 2.0}}, []string{"rope_scaling.rope_type", "linear"}},
		{llama, map[string]any{"rope_scaling": map[string]any{"rope_type": "longrope"}}, []string{"rope_scaling.rope_type", "longrope"}},
		{llama, map[string]any{"rope_scaling": 3}, []string{"rope_scaling", "3"}},
		{llama, map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}},
			[]string{"rope_scaling.original_max_position_embeddings", "missing"}},
		{llama, map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
			[]string{"rope_scaling.high_freq_factor", "4"}},
		{llama, map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": -1, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
			[]string{"rope_scaling.factor", "-1"}},
		{llama, map[string]any{"rope_parameters": map[string]any{"rope_type": "yarn", "rope_theta": 1e6}}, []string{"rope_parameters.rope_type", "yarn"}},
		{llama, map[string]any{"hidden_act": "gelu"}, []string{"hidden_act", "gelu"}},
		{llama, map[string]any{"attention_bias": true}, []string{"attention_bias", "true"}},
		{llama, map[string]any{"mlp_bias": true}, []string{"mlp_bias", "true"}},
		{llama, map[string]any{"attention_dropout": 0.1}, []string{"attention_dropout", "0.1"}},
		{llama, map[string]any{"layer_types": []string{"full_attention", "sliding_attention"}}, []string{"layer_types[1]", "sliding_attention"}},
		{llama, map[string]any{"head_dim": 63}, []string{"head_dim"}},
		{mistral, map[string]any{"sliding_window": 4096}, []string{"sliding_window", "4096", "32768"}},
		{mistral, map[string]any{"sliding_window": "big"}, []string{"sliding_window", "big"}},
		{qwen, map[string]any{"use_sliding_window": true}, []string{"use_sliding_window", "true"}},
		{qwen, map[string]any{"architectures": []string{"LlamaForCausalLM"}}, []string{"architectures", "Qwen2ForCausalLM"}},
		{llama, map[string]any{"qat_down_hadamard": "spin"}, []string{"qat_down_hadamard", "spin"}},
		{llama, map[string]any{"qat_down_hadamard": 1}, []string{"qat_down_hadamard"}},
	} {
		var m map[string]any
		if err := json.Unmarshal([]byte(c.base), &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range c.edits {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		b, _ := json.Marshal(m)
		_, err := ParseHFConfig(b)
		if err == nil {
			t.Errorf("%v: accepted", c.edits)
			continue
		}
		var bad interface{ BadInput() }
		if !errors.As(err, &bad) {
			t.Errorf("%v: %v is not BadInput", c.edits, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not name %q", c.edits, err, w)
			}
		}
	}
	// accepted spellings of the defaults
	for _, edits := range []map[string]any{
		{"rope_scaling": map[string]any{"rope_type": "default"}},
		{"sliding_window": 1 << 20, "model_type": "mistral", "architectures": []string{"MistralForCausalLM"}},
		{"architectures": nil},
		{"layer_types": []string{"full_attention"}},
		{"attention_dropout": 0},
	} {
		var m map[string]any
		json.Unmarshal([]byte(llama), &m)
		for k, v := range edits {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		b, _ := json.Marshal(m)
		if _, err := ParseHFConfig(b); err != nil {
			t.Errorf("%v: %v", edits, err)
		}
	}
}
