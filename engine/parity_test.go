package engine_test

import (
	"math"
	"strings"
	"testing"

	"qat/autograd"
	"qat/engine"
	_ "qat/engine/device"
	_ "qat/engine/gorgonia"
	_ "qat/engine/tape"
	"qat/layers"
	"qat/qat"
)

// TestEnginesAgree: every engine that runs on the CPU, built by name
// through the seam the training loop uses, gives the tape's loss and
// gradients on the same batch (fp32, and fake-quantized at w4a8 where the
// engine supports it: an engine that does not must say so when built).
//
// The Hugging Face features run on every engine too: llama3 rope_scaling,
// head_dim != dim/heads and q/k/v biases.
func TestEnginesAgree(t *testing.T) {
	scaled := layers.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 16}
	for _, c := range []layers.Config{
		{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 16},
		{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 16,
			RopeScaling: scaled},
		{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, HeadDimension: 16, QKVBias: true, FFNHidden: 64, RopeTheta: 1e4,
			NormEps: 1e-5, Tied: false, MaxSeq: 16, RopeScaling: scaled},
		{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, QKVBias: true, FFNHidden: 64, RopeTheta: 1e4,
			NormEps: 1e-5, Tied: true, MaxSeq: 16},
	} {
		enginesAgree(t, c)
	}
	if _, err := engine.New("no-such", nil, engine.Options{}); err == nil {
		t.Error("an unknown engine was built")
	}
}

func enginesAgree(t *testing.T, c layers.Config) {
	const B, T = 4, 16
	ids, tg := make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i], tg[i] = int32(i*7%c.Vocab), int32((i*7+3)%c.Vocab)
		if i%5 == 2 { // masked chat data: targets outside the replies do not count
			tg[i] = layers.IgnoreIndex
		}
	}
	for _, preset := range []string{"", "w4a8"} {
		m := layers.New(c)
		m.Init(2)
		for _, p := range m.Params() { // biases start at 0; give them values
			if strings.HasSuffix(p.Name, ".bias") {
				for i := range p.Var.Data() {
					p.Var.Data()[i] = float32(i%7) * 0.1
				}
			}
		}
		for _, l := range m.Layers { // scores that depend on the positions' angles: an engine with another RoPE differs
			for _, w := range []*autograd.Var{l.Attn.Q.Weight, l.Attn.K.Weight} {
				for i := range w.Data() {
					w.Data()[i] *= 30
				}
			}
		}
		if preset != "" {
			if err := qat.Prepare(m, qat.Presets[preset]); err != nil {
				t.Fatal(err)
			}
		}
		var vars []*autograd.Var
		for _, p := range m.Params() {
			vars = append(vars, p.Var)
		}
		run := func(name string, threads int) (float32, [][]float32, error) {
			autograd.ZeroGrad(vars...)
			e, err := engine.New(name, m, engine.Options{Batch: B, Seq: T, Threads: threads})
			if err != nil {
				return 0, nil, err
			}
			defer e.Close()
			loss, err := e.LossBackward(ids, tg)
			if err != nil {
				return 0, nil, err
			}
			var grads [][]float32
			for _, v := range vars {
				grads = append(grads, append([]float32(nil), v.GradData()...))
			}
			return loss, grads, nil
		}
		wantLoss, want, err := run("tape", 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range []struct {
			name    string
			threads int
			tol     float64
		}{{"tape", 2, 1e-5}, {"gorgonia", 1, 1e-4}, {"cuda-host", 1, 1e-4}} {
			loss, got, err := run(e.name, e.threads)
			if err != nil {
				if preset == "" {
					t.Errorf("%s: %v", e.name, err)
				} else {
					t.Logf("%s does not run %s: %v", e.name, preset, err)
				}
				continue
			}
			if d := math.Abs(float64(loss - wantLoss)); d > e.tol {
				t.Errorf("%s %s x%d: loss %g, tape %g", preset, e.name, e.threads, loss, wantLoss)
			}
			var worst float64
			for i := range got {
				for j := range got[i] {
					d := math.Abs(float64(got[i][j]-want[i][j])) / (1e-3 + math.Abs(float64(want[i][j])))
					worst = max(worst, d)
				}
			}
			if worst > 100*e.tol {
				t.Errorf("%s %s x%d: gradients differ from the tape's by %.2g relative", preset, e.name, e.threads, worst)
			}
			t.Logf("head_dim %d bias %v rope %q %-5s %-9s x%d: loss %.6f (tape %.6f), worst gradient difference %.2g",
				c.HeadDim(), c.QKVBias, c.RopeScaling.Type, preset, e.name, e.threads, loss, wantLoss, worst)
		}
	}
}
