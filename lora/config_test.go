package lora

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"qat/qat"
)

// TestValidateFinite: alpha and step_lr_scale must be finite float32
// values; the error names the field.
func TestValidateFinite(t *testing.T) {
	for _, c := range []struct {
		c    Config
		want string
	}{
		{Config{Method: "lr-qat", Alpha: math.Inf(1)}, "lora.alpha"},
		{Config{Method: "lr-qat", Alpha: 1e39}, "lora.alpha"},
		{Config{Method: "lr-qat", Alpha: math.NaN()}, "lora.alpha"},
		{Config{Method: "lora-qat", StepLRScale: math.Inf(1)}, "lora.step_lr_scale"},
		{Config{Method: "lora-qat", Rank: -2}, "lora.rank"},
	} {
		if err := c.c.Defaults().Validate("lora"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one naming %s", c.c, err, c.want)
		}
	}
	if err := (Config{Method: "lr-qat", Alpha: math.MaxFloat32}).Defaults().Validate("lora"); err != nil {
		t.Errorf("alpha MaxFloat32: %v", err)
	}
}

// FuzzLoraConfig: any lora.json is refused or adapts a small model with
// int4 weight quantizers, which then runs forward; never a panic.
func FuzzLoraConfig(f *testing.F) {
	for _, c := range []Config{{Method: "lr-qat", Rank: 4}, {Method: "lora-qat", Rank: 2, Alpha: 8, Targets: []string{"model.layers.0.mlp.*"}},
		{Method: "lr-qat", Rank: 100, StepLRScale: 0.5, Targets: []string{"model.layers.*.self_attn.q_proj", "model.layers.*"}}} {
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		if json.Unmarshal(b, &c) != nil {
			return
		}
		m := smallModel()
		if err := qat.Prepare(m, w4ch); err != nil {
			t.Fatal(err)
		}
		if _, err := Prepare(m, c, 1); err != nil {
			return
		}
		forward(m, []int32{1, 2, 3})
	})
}
