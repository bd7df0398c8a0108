package layers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestHFConfigValidate: a bad rope_scaling is refused naming its field.
func TestHFConfigValidate(t *testing.T) {
	good := RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 8192}
	base := Config{Vocab: 64, Dim: 64, Layers: 1, Heads: 4, KVHeads: 2, HeadDimension: 32, QKVBias: true, FFNHidden: 96,
		RopeTheta: 500000, NormEps: 1e-5, MaxSeq: 32, RopeScaling: good}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit  func(r *RopeScaling)
		field string
	}{
		{func(r *RopeScaling) { r.Type = "yarn" }, "rope_scaling.type"},
		{func(r *RopeScaling) { *r = RopeScaling{Factor: 8} }, "rope_scaling.type"},
		{func(r *RopeScaling) { r.Factor = 0.5 }, "rope_scaling.factor"},
		{func(r *RopeScaling) { r.LowFreqFactor = 0 }, "rope_scaling.low_freq_factor"},
		{func(r *RopeScaling) { r.HighFreqFactor = 1 }, "rope_scaling.high_freq_factor"},
		{func(r *RopeScaling) { r.OriginalMax = 0 }, "rope_scaling.original_max_position_embeddings"},
	} {
		c := base
		tc.edit(&c.RopeScaling)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want an error naming %s", c.RopeScaling, err, tc.field)
		}
	}
}

// TestHFShapes: q_proj is (heads*head_dim, dim), k/v (kv_heads*head_dim,
// dim), o_proj (dim, heads*head_dim), the biases Hugging Face's and
// llama.cpp's names; the biases start at 0 and the norms at 1.
func TestHFShapes(t *testing.T) {
	c := Config{Vocab: 64, Dim: 64, Layers: 1, Heads: 4, KVHeads: 2, HeadDimension: 32, QKVBias: true, FFNHidden: 96,
		RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8, Tied: true}
	got := map[string]string{}
	for _, s := range c.Shapes() {
		got[s.Name] = fmt.Sprint(s.Shape)
	}
	for name, want := range map[string]string{
		"model.layers.0.self_attn.q_proj.weight": "[128 64]", "model.layers.0.self_attn.k_proj.weight": "[64 64]",
		"model.layers.0.self_attn.v_proj.weight": "[64 64]", "model.layers.0.self_attn.o_proj.weight": "[64 128]",
		"model.layers.0.self_attn.q_proj.bias": "[128]", "model.layers.0.self_attn.k_proj.bias": "[64]",
		"model.layers.0.self_attn.v_proj.bias": "[64]",
	} {
		if got[name] != want {
			t.Errorf("%s: shape %s, want %s", name, got[name], want)
		}
	}
	if _, ok := got["model.layers.0.self_attn.o_proj.bias"]; ok {
		t.Error("o_proj has a bias")
	}
	if total, _ := c.Params(); total != paramCount(New(c)) {
		t.Errorf("Params counts %d, the model has %d", total, paramCount(New(c)))
	}
	m := New(c)
	m.Init(1)
	for _, p := range m.Params() {
		if strings.HasSuffix(p.Name, ".bias") {
			if !strings.HasSuffix(p.GGUF, ".bias") || !strings.Contains(p.GGUF, "attn_") {
				t.Errorf("%s: GGUF name %q", p.Name, p.GGUF)
			}
			for _, v := range p.Var.Data() {
				if v != 0 {
					t.Fatalf("%s starts at %g", p.Name, v)
				}
			}
		}
		if strings.HasSuffix(p.Name, "norm.weight") && p.Var.Data()[0] != 1 {
			t.Fatalf("%s starts at %g", p.Name, p.Var.Data()[0])
		}
	}
}

func paramCount(m *Model) int {
	n := 0
	for _, p := range m.Params() {
		n += p.Var.Size()
	}
	return n
}
