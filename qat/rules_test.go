package qat

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"qat/kernels"
	"qat/layers"
)

// ruleCases are rule sets Prepare accepts and refuses, for testCfg.
func ruleCases() [][]Rule {
	int4 := func(gran string, group int) *Spec {
		return &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: gran, GroupSize: group, Scale: "minmax"}
	}
	cases := [][]Rule{
		{{Match: "model.layers.*.mlp.nothing", Weights: int4("channel", 0)}},
		{{Match: "model.layers.*", Weights: int4("group", 40)}},
		{{Match: "model.layers.*", Weights: int4("group", 32)}},
		{{Match: "model.layers.*.mlp.down_proj", Weights: int4("group", 64)}}, // 96 inputs
		{{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 1, Symmetric: true, Granularity: "channel", Scale: "minmax"}}},
		{{Match: "[", Weights: int4("channel", 0)}},
		{{Match: "model.layers.*", Activations: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "channel", Scale: "mse"}}},
		{{Match: "model.layers.*", Activations: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "tensor", Scale: "lsq", Outliers: 0.1}}},
		{{Match: "model.layers.*", KVCache: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "group", GroupSize: 12, Scale: "minmax"}}},
		{{Match: "model.layers.*", KVCache: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "group", GroupSize: 16, Scale: "minmax"}}},
		{{Match: "model.layers.*.mlp", KVCache: &Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "token", Scale: "minmax"}}},
		{{Match: "lm_head", Weights: &Spec{Format: kernels.Q4_0, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"}}},
		{{Match: "model.layers.0.*", Weights: int4("channel", 0)}, {Match: "model.layers.0.mlp.up_proj", Weights: int4("tensor", 0)}},
		{{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 3, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "lsq", Outliers: 0.01}}},
	}
	for _, name := range []string{"w4a16-g32", "w4a8", "w4a8-qqq-g128", "w8a8", "fp8"} {
		cases = append(cases, Presets[name])
	}
	return cases
}

// TestCheckRulesAgreesWithPrepare: CheckRules, which builds no model,
// reports exactly what Prepare reports, and Prepare changes nothing when
// it refuses.
func TestCheckRulesAgreesWithPrepare(t *testing.T) {
	tied := testCfg
	tied.Tied = true
	refused := 0
	for _, c := range []layers.Config{testCfg, tied} {
		for i, rules := range ruleCases() {
			m := layers.New(c)
			m.Init(1)
			perr, cerr := Prepare(m, rules), CheckRules(c, rules)
			if (perr == nil) != (cerr == nil) || (perr != nil && perr.Error() != cerr.Error()) {
				t.Errorf("tied %v, case %d: Prepare %v, CheckRules %v", c.Tied, i, perr, cerr)
			}
			if perr == nil {
				continue
			}
			refused++
			for _, nl := range m.Linears() {
				if nl.Linear.Quantized() {
					t.Errorf("tied %v, case %d refused (%v) but %s has quantizers", c.Tied, i, perr, nl.Name)
				}
			}
		}
	}
	if refused < 10 || refused > 2*len(ruleCases())-10 {
		t.Errorf("%d of %d refused: the table should hold both kinds", refused, 2*len(ruleCases()))
	}
}

// TestCheckRulesWithoutModel: rules are checked against a 70B-sized
// config in milliseconds and a few kilobytes, not its 280 GB.
func TestCheckRulesWithoutModel(t *testing.T) {
	big := layers.Config{Vocab: 128256, Dim: 8192, Layers: 80, Heads: 64, KVHeads: 8, FFNHidden: 28672, RopeTheta: 5e5, NormEps: 1e-5, MaxSeq: 8192}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for _, name := range []string{"w4a16-g32", "w4a8"} {
		if err := CheckRules(big, Presets[name]); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := []Rule{{Match: "model.layers.79.mlp.down_proj", Weights: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 1000, Scale: "minmax"}}}
	if err := CheckRules(big, bad); err == nil || !strings.Contains(err.Error(), "model.layers.79.mlp.down_proj") || !strings.Contains(err.Error(), "28672") {
		t.Errorf("group 1000 on a row of 28672: %v", err)
	}
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; d > time.Second || alloc > 16<<20 {
		t.Errorf("CheckRules on a 70B config: %v, %d bytes allocated", d, alloc)
	}
}

// FuzzQuantRules: any quant.json is refused or attaches quantizers to a
// tiny model, CheckRules agreeing with Prepare; never a panic.
func FuzzQuantRules(f *testing.F) {
	for _, rules := range ruleCases() {
		b, err := json.Marshal(rules)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`[{"match": "model.layers.*", "kv_cache": {"format": "int", "bits": 4, "symmetric": true, "granularity": "tensor", "scale": "mse"}}]`))
	small := layers.Config{Vocab: 40, Dim: 32, Layers: 2, Heads: 2, KVHeads: 1, FFNHidden: 64, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 8}
	f.Fuzz(func(t *testing.T, b []byte) {
		var rules []Rule
		if json.Unmarshal(b, &rules) != nil {
			return
		}
		m := layers.New(small)
		m.Init(2)
		perr, cerr := Prepare(m, rules), CheckRules(small, rules)
		if (perr == nil) != (cerr == nil) || (perr != nil && perr.Error() != cerr.Error()) {
			t.Fatalf("Prepare %v, CheckRules %v", perr, cerr)
		}
	})
}
