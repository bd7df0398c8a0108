package ptq

import (
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"qat/autograd"
	"qat/data"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

var cfg = layers.Config{Vocab: 96, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 96, RopeTheta: 10000,
	NormEps: 1e-5, Tied: false, MaxSeq: 16}

// trained is a model as a checkpoint of the activation-regularization
// recipe holds it: learned clip values on every block linear's input (each
// its own), and here int8 weight steps too, which a post-training
// quantization must replace.
func trained(t *testing.T) (*layers.Model, map[string][2]float32) {
	t.Helper()
	m := layers.New(cfg)
	m.Init(3)
	clip := qat.Spec{Format: kernels.Int, Bits: 4, Granularity: "tensor", Scale: "clip"}
	w8 := qat.Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "channel", Scale: "lsq"}
	if err := qat.Prepare(m, []qat.Rule{{Match: "model.layers.*", Weights: &w8, Activations: &clip}}); err != nil {
		t.Fatal(err)
	}
	vals := map[string][2]float32{}
	for k, ln := range m.Linears() {
		if ln.Linear.InputQuant == nil {
			continue
		}
		st := ln.Linear.InputQuant.State()
		lo, hi := -0.5-float32(k)/20, 0.7+float32(k)/30
		st["clip_lo"].Data()[0], st["clip_hi"].Data()[0] = lo, hi
		vals[ln.Name] = [2]float32{lo, hi}
	}
	return m, vals
}

func calibration() Calibration {
	rng := rand.New(rand.NewPCG(1, 2))
	ds := &data.Dataset{Tokens: make([]int32, 4096)}
	for i := range ds.Tokens {
		ds.Tokens[i] = int32(rng.IntN(cfg.Vocab))
	}
	return Calibration{Data: ds, Batch: 2, Seq: 16, Batches: 2, Seed: 1}
}

// TestQuantizeKeepsTrainedInputs: qat ptq --keep-activations on such a
// checkpoint, by RTN and GPTQ: the weights take the preset's quantizers
// (GPTQ's as fixed steps), the inputs keep their trained clip values
// through Quantize and the calibration after it, and the rules returned
// rebuild the same model from its checkpoint.
func TestQuantizeKeepsTrainedInputs(t *testing.T) {
	preset := qat.Presets["w4a4"]
	for _, method := range []string{RTN, GPTQ} {
		m, vals := trained(t)
		c := calibration()
		rules, rep, err := Quantize(m, preset, Options{Method: method, GPTQ: qat.DefaultGPTQ, KeepInputs: true}, c)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if rep.Inputs != len(vals) {
			t.Errorf("%s: kept %d inputs, want %d", method, rep.Inputs, len(vals))
		}
		if n, err := Calibrate(m, c); err != nil || n != 0 {
			t.Errorf("%s: calibration after Quantize set %d quantizers (%v), want none", method, n, err)
		}
		for _, ln := range m.Linears() {
			want, ok := vals[ln.Name]
			if !ok {
				continue
			}
			q, _ := qat.Plain(ln.Linear.InputQuant)
			if q == nil || q.Scale != "clip" || q.ClipLo.Data()[0] != want[0] || q.ClipHi.Data()[0] != want[1] {
				t.Fatalf("%s %s: input quantizer %+v, want the trained clip values %v", method, ln.Name, ln.Linear.InputQuant, want)
			}
			w, _ := qat.Plain(ln.Linear.WeightQuant)
			wantScale := map[string]string{RTN: "minmax", GPTQ: "lsq"}[method]
			if w == nil || w.Bits != 4 || w.Granularity != "channel" || w.Scale != wantScale {
				t.Fatalf("%s %s: weight quantizer %+v, want the preset's int4 per channel (%s)", method, ln.Name, ln.Linear.WeightQuant, wantScale)
			}
		}
		if method == GPTQ && rep.Quantized != len(vals) {
			t.Errorf("gptq quantized %d linears, want %d", rep.Quantized, len(vals))
		}
		rng := rand.New(rand.NewPCG(4, 5))
		ids := make([]int32, 32)
		for i := range ids {
			ids[i] = int32(rng.IntN(cfg.Vocab))
		}
		want := append([]float32(nil), m.Forward(autograd.NewTape(), ids, 2, 16).Data()...)
		path := filepath.Join(t.TempDir(), "q.safetensors")
		if err := m.Save(path); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(rules) // quant.json
		var back []qat.Rule
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		m2 := layers.New(cfg)
		if err := qat.Prepare(m2, back); err != nil {
			t.Fatalf("%s: rules %s: %v", method, b, err)
		}
		if err := m2.Load(path); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		got := m2.Forward(autograd.NewTape(), ids, 2, 16).Data()
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: logit %d is %g from the saved rules and checkpoint, %g before", method, i, got[i], want[i])
			}
		}
	}
}

// TestQuantizeReplacesQuantizers: without KeepInputs the checkpoint's own
// quantizers go (a weights-only preset leaves no input quantizer behind,
// which its rules would not describe), and asking to keep inputs a model
// does not have is an error.
func TestQuantizeReplacesQuantizers(t *testing.T) {
	m, _ := trained(t)
	if _, _, err := Quantize(m, qat.Presets["w4a16-g32"], Options{Method: RTN}, calibration()); err != nil {
		t.Fatal(err)
	}
	for _, ln := range m.Linears() {
		if ln.Linear.InputQuant != nil {
			t.Fatalf("%s kept an input quantizer the rules do not give", ln.Name)
		}
		if w, _ := qat.Plain(ln.Linear.WeightQuant); strings.HasPrefix(ln.Name, "model.layers.") && (w == nil || w.Format != kernels.Q4_0) {
			t.Fatalf("%s: weight quantizer %+v, want Q4_0", ln.Name, ln.Linear.WeightQuant)
		}
	}
	_, _, err := Quantize(m, qat.Presets["w4a4"], Options{Method: RTN, KeepInputs: true}, calibration())
	if err == nil || !strings.Contains(err.Error(), "no trained input quantizers") {
		t.Errorf("keeping the inputs of a model without trained ones: %v", err)
	}
	m, _ = trained(t)
	_, _, err = Quantize(m, qat.Presets["w4a8-qqq"], Options{Method: QQQ, GPTQ: qat.DefaultGPTQ, KeepInputs: true}, calibration())
	if err == nil || !strings.Contains(err.Error(), "qqq smooths the inputs") {
		t.Errorf("keeping trained inputs through qqq's smoothing: %v", err)
	}
}
