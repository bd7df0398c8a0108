package lora

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

var (
	small = layers.Config{Vocab: 50, Dim: 32, Layers: 2, Heads: 2, KVHeads: 1, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 16}
	// hfSmall has q and o_proj's input wider than the residual (head_dim
	// 32 on dim 32, 2 heads) and q/k/v biases, as Llama 3.2 and Qwen2
	hfSmall = layers.Config{Vocab: 50, Dim: 32, Layers: 2, Heads: 2, KVHeads: 1, HeadDimension: 32, QKVBias: true, FFNHidden: 64,
		RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 16}
)

func smallModel() *layers.Model { return modelOf(small) }

// modelOf is an initialised model of c, biases away from 0.
func modelOf(c layers.Config) *layers.Model {
	m := layers.New(c)
	m.Init(3)
	for _, l := range m.Layers {
		for _, lin := range []*layers.Linear{l.Attn.Q, l.Attn.K, l.Attn.V} {
			if lin.Bias != nil {
				for i := range lin.Bias.Data() {
					lin.Bias.Data()[i] = float32(i%5) * 0.2
				}
			}
		}
	}
	return m
}

var (
	w4ch = []qat.Rule{{Match: "model.layers.*",
		Weights:     &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax"},
		Activations: &qat.Spec{Format: kernels.Int, Bits: 8, Granularity: "token", Scale: "minmax"}}}
	w4g = []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 16, Scale: "minmax"}}}
)

func forward(m *layers.Model, ids []int32) []float32 {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	return append([]float32(nil), m.Forward(tp, ids, 1, len(ids)).Data()...)
}

// adapt prepares m with rules and adapters and moves the adapters off
// their initial values, as training would.
func adapt(t *testing.T, m *layers.Model, rules []qat.Rule, c Config) {
	if err := qat.Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(m, c, 1); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for _, p := range m.Params() {
		if p.Quant && filepath.Ext(p.Name) != ".step" {
			for i := range p.Var.Data() {
				p.Var.Data()[i] = float32(rng.NormFloat64() * 0.3)
			}
		}
	}
}

// TestMergeExact: merged models (LR-QAT per channel and per group,
// LoRA-QAT) compute the adapted model's logits bit for bit, with no
// adapters left; LR-QAT layers keep no float32 weight before merging.
// Also with head_dim != dim/heads and q/k/v biases.
func TestMergeExact(t *testing.T) {
	for _, c := range []layers.Config{small, hfSmall} {
		mergeExact(t, c)
	}
}

func mergeExact(t *testing.T, mc layers.Config) {
	ids := []int32{1, 5, 9, 2, 7, 3, 11, 4}
	for _, tc := range []struct {
		rules []qat.Rule
		c     Config
	}{{w4ch, Config{Method: "lr-qat", Rank: 4, Alpha: 4}}, {w4g, Config{Method: "lr-qat", Rank: 4, Alpha: 4}}, {w4ch, Config{Method: "lora-qat", Rank: 4, Alpha: 8}}} {
		m := modelOf(mc)
		adapt(t, m, tc.rules, tc.c)
		for _, nl := range m.Linears() {
			if tc.c.Method == "lr-qat" && nl.Name != "lm_head" && nl.Linear.Weight != nil {
				t.Fatalf("%s: %s keeps its float32 weight", tc.c.Method, nl.Name)
			}
		}
		want := forward(m, ids)
		rules, n, err := Merge(m, tc.rules)
		if err != nil || n != 7*len(m.Layers) {
			t.Fatalf("%s: merged %d layers: %v", tc.c.Method, n, err)
		}
		for _, nl := range m.Linears() {
			switch nl.Linear.Adapter.(type) {
			case *LRQAT, *LoRAQAT:
				t.Fatalf("%s: %s still has adapters", tc.c.Method, nl.Name)
			}
		}
		got := forward(m, ids)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s %s: logit %d: %g merged, %g adapted", tc.c.Method, tc.rules[0].Weights.Granularity, i, got[i], want[i])
			}
		}
		// the merged rules re-create the quantizers: a fresh model with them
		// and the merged weights gives the same logits
		path := filepath.Join(t.TempDir(), "m.safetensors")
		if err := m.Save(path); err != nil {
			t.Fatal(err)
		}
		m2 := modelOf(mc)
		if err := qat.Prepare(m2, rules); err != nil {
			t.Fatal(err)
		}
		if err := m2.Load(path); err != nil {
			t.Fatal(err)
		}
		got = forward(m2, ids)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s reloaded: logit %d: %g, adapted %g", tc.c.Method, i, got[i], want[i])
			}
		}
	}
}

// TestLRQATCheckpoint: an adapted model saved and loaded into a fresh
// model with the same rules and adapters (its int8 base from the file)
// computes the same logits.
func TestLRQATCheckpoint(t *testing.T) {
	ids := []int32{1, 5, 9, 2, 7}
	c := Config{Method: "lr-qat", Rank: 4, Alpha: 4}
	m := smallModel()
	adapt(t, m, w4ch, c)
	want := forward(m, ids)
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	m2 := layers.New(m.Config) // zero weights: the base must come from the file
	if err := qat.Prepare(m2, w4ch); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(m2, c, 5); err != nil {
		t.Fatal(err)
	}
	if err := m2.Load(path); err != nil {
		t.Fatal(err)
	}
	got := forward(m2, ids)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logit %d: %g loaded, %g saved", i, got[i], want[i])
		}
	}
}

// TestPrepareErrors: lr-qat needs an int weight quantizer; globs must
// match; bad fields are named.
func TestPrepareErrors(t *testing.T) {
	m := smallModel()
	if _, err := Prepare(m, Config{Method: "lr-qat"}, 1); err == nil {
		t.Fatal("lr-qat without weight quantizers accepted")
	}
	if _, err := Prepare(smallModel(), Config{Method: "lora-qat", Targets: []string{"model.nothing.*"}}, 1); err == nil {
		t.Fatal("a glob matching nothing accepted")
	}
	if err := (Config{Method: "dora"}).Defaults().Validate("lora"); err == nil {
		t.Fatal("method dora accepted")
	}
}

// TestPrepareCollectsCodes: after LR-QAT's Prepare the heap holds what
// the adapters keep (int8 base, A and B and the scales with their
// gradients) and at most the last linear's temporaries of the
// quantizer's Codes (6 bytes a weight), even with the collector off, as
// it is in effect at full size: its goal counts the untouched gradient
// arena, and the temporaries of every linear stayed resident (5.8 GB at
// TinyLlama's size, qat bench finetune).
func TestPrepareCollectsCodes(t *testing.T) {
	c := layers.Config{Vocab: 64, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 768, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 16}
	m := modelOf(c)
	if err := qat.Prepare(m, w4g); err != nil {
		t.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	before := heapObjects()
	if _, err := Prepare(m, Config{Method: "lr-qat", Rank: 4}, 1); err != nil {
		t.Fatal(err)
	}
	grown := heapObjects() - before
	var weights, kept, largest int64
	for _, nl := range m.Linears() {
		lq, ok := nl.Linear.Adapter.(*LRQAT)
		if !ok {
			continue
		}
		n := int64(lq.Rows * lq.Cols)
		weights += n
		largest = max(largest, n)
		kept += n + 8*int64(lq.A.Size()+lq.B.Size()+lq.Step.Size())
	}
	if weights != 2*(2*256*256+2*256*128+3*256*768) {
		t.Fatalf("%d adapted weights", weights)
	}
	if limit := kept + 6*largest + 1<<20; grown > limit {
		t.Fatalf("the heap grew by %d bytes over %d weights: the adapters keep %d, one linear's temporaries %d", grown, weights, kept, 6*largest)
	}
}

func heapObjects() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}
