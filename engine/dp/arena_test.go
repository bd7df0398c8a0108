package dp

import (
	"testing"

	"qat/autograd"
	"qat/dist"
	"qat/engine"
	_ "qat/engine/tape"
	"qat/layers"
)

// TestArenas: on a packed model the collectives work on the model's and
// the worker's arenas (no staging copies); a frozen tensor amid the others
// breaks the run of gradients, and the engine stages them instead
// (its buffers are made on first use).
func TestArenas(t *testing.T) {
	cfg := layers.Config{Vocab: 31, Dim: 16, Layers: 2, Heads: 2, KVHeads: 1, FFNHidden: 32, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 8}
	for _, frozen := range []bool{false, true} {
		m := layers.New(cfg)
		m.Init(1)
		if frozen {
			m.Params()[3].Var.SetRequiresGrad(false)
		}
		e, err := New(dist.Local(1)[0], "tape", m, engine.Options{Batch: 2, Seq: 8, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		views := [][]float32{e.flat(e.worker, (*autograd.Var).GradData), e.flat(e.master, (*autograd.Var).GradData), e.flat(e.master, (*autograd.Var).Data)}
		for k, v := range views {
			if (v == nil) != frozen {
				t.Errorf("frozen tensor %v: view %d is one run of memory: %v", frozen, k, v != nil)
			}
			if v != nil && len(v) != e.offs[len(e.offs)-1] {
				t.Errorf("view %d holds %d values, the reduced tensors %d", k, len(v), e.offs[len(e.offs)-1])
			}
		}
		ids := make([]int32, 16)
		if _, err := e.LossBackward(ids, ids); err != nil {
			t.Fatal(err)
		}
		if (e.send != nil) != frozen {
			t.Errorf("frozen tensor %v: staging buffers allocated: %v", frozen, e.send != nil)
		}
		e.Close()
	}
}
