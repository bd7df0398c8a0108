package engine_test

import (
	"math"
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
func TestEnginesAgree(t *testing.T) {
	c := layers.Config{Vocab: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 16}
	const B, T = 4, 16
	ids, tg := make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i], tg[i] = int32(i*7%c.Vocab), int32((i*7+3)%c.Vocab)
	}
	for _, preset := range []string{"", "w4a8"} {
		m := layers.New(c)
		m.Init(2)
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
			t.Logf("%-5s %-9s x%d: loss %.6f (tape %.6f), worst gradient difference %.2g", preset, e.name, e.threads, loss, wantLoss, worst)
		}
	}
	if _, err := engine.New("no-such", nil, engine.Options{}); err == nil {
		t.Error("an unknown engine was built")
	}
}
