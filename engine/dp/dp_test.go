package dp_test

import (
	"math"
	"sync"
	"testing"

	"qat/autograd"
	"qat/dist"
	"qat/engine"
	"qat/engine/dp"
	_ "qat/engine/gorgonia"
	_ "qat/engine/tape"
	"qat/layers"
	"qat/qat"
)

var cfg = layers.Config{Vocab: 97, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 16}

func model(t *testing.T, preset string) *layers.Model {
	m := layers.New(cfg)
	m.Init(3)
	if preset == "frozen" {
		// a frozen tensor amid the others: the gradients are no longer one
		// run of memory, and dp stages them through its own buffers
		m.Params()[3].Var.SetRequiresGrad(false)
		return m
	}
	if preset != "" {
		if err := qat.Prepare(m, qat.Presets[preset]); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func batch(B, T int) (ids, tg []int32) {
	ids, tg = make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i], tg[i] = int32(i*13%cfg.Vocab), int32((i*29+5)%cfg.Vocab)
		if i < 2*T+3 || i%7 == 1 { // the first rows count fewer targets
			tg[i] = layers.IgnoreIndex
		}
	}
	return ids, tg
}

type result struct {
	loss  float32
	grads [][]float32
}

func snapshot(m *layers.Model, loss float32) result {
	r := result{loss: loss}
	for _, p := range m.Params() {
		r.grads = append(r.grads, append([]float32(nil), p.Var.GradData()...))
	}
	return r
}

// steps runs two micro-batches (gradients accumulate, as with grad_accum)
// on an engine built by build on a fresh model, then clears the model's
// gradients as a training step does (lazily: autograd.ZeroGrad) and runs
// a third.
func steps(t *testing.T, preset string, B, T int, build func(m *layers.Model) (engine.Engine, error)) result {
	m := model(t, preset)
	e, err := build(m)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ids, tg := batch(B, T)
	var loss float32
	for k := 0; k < 3; k++ {
		if k == 2 {
			for _, p := range m.Params() {
				autograd.ZeroGrad(p.Var)
			}
		}
		if loss, err = e.LossBackward(ids, tg); err != nil {
			t.Fatal(err)
		}
		ids = append(ids[T:], ids[:T]...) // another batch
	}
	return snapshot(m, loss)
}

// onRanks runs f on each of n ranks of one Local job, each on its own
// goroutine, and returns their results in rank order.
func onRanks(n int, f func(c dist.Comm) result) []result {
	got := make([]result, n)
	var wg sync.WaitGroup
	for rank, c := range dist.Local(n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[rank] = f(c)
		}()
	}
	wg.Wait()
	return got
}

// TestBitIdenticalToReplicas: N processes (dist.Local) each running its
// rows on a one-thread tape leave, on every process, the loss and
// gradients of one process whose tape runs N replicas, to the bit: plain
// and fake-quantized (w4a4), N = 2 and 3, with rows that count different
// numbers of targets, and a batch that does not divide evenly.
func TestBitIdenticalToReplicas(t *testing.T) {
	const T = 12
	for _, preset := range []string{"", "w4a4", "frozen"} {
		for _, n := range []int{2, 3} {
			B := 5
			want := steps(t, preset, B, T, func(m *layers.Model) (engine.Engine, error) {
				return engine.New("tape", m, engine.Options{Batch: B, Seq: T, Threads: n})
			})
			got := onRanks(n, func(c dist.Comm) result {
				return steps(t, preset, B, T, func(m *layers.Model) (engine.Engine, error) {
					return dp.New(c, "tape", m, engine.Options{Batch: B, Seq: T, Threads: 1})
				})
			})
			for rank := range got {
				if got[rank].loss != want.loss {
					t.Errorf("%q N=%d rank %d: loss %.9g, %d replicas %.9g", preset, n, rank, got[rank].loss, n, want.loss)
				}
				diff := 0
				for i := range want.grads {
					for j := range want.grads[i] {
						if math.Float32bits(got[rank].grads[i][j]) != math.Float32bits(want.grads[i][j]) {
							diff++
						}
					}
				}
				if diff > 0 {
					t.Errorf("%q N=%d rank %d: %d gradient values differ from %d replicas'", preset, n, rank, diff, n)
				}
			}
		}
	}
}

// TestGorgoniaInside: the gorgonia engine runs each process's rows; the
// result agrees with the tape's replicas to float32 rounding (its graph
// sums in another order, so not to the bit).
func TestGorgoniaInside(t *testing.T) {
	const B, T, n = 4, 12, 2
	want := steps(t, "", B, T, func(m *layers.Model) (engine.Engine, error) {
		return engine.New("tape", m, engine.Options{Batch: B, Seq: T, Threads: n})
	})
	got := onRanks(n, func(c dist.Comm) result {
		return steps(t, "", B, T, func(m *layers.Model) (engine.Engine, error) {
			return dp.New(c, "gorgonia", m, engine.Options{Batch: B, Seq: T, Threads: 1})
		})
	})
	for rank := range got {
		if d := math.Abs(float64(got[rank].loss - want.loss)); d > 1e-5 {
			t.Errorf("rank %d: loss %g, tape %g", rank, got[rank].loss, want.loss)
		}
		var worst float64
		for i := range want.grads {
			for j := range want.grads[i] {
				worst = max(worst, math.Abs(float64(got[rank].grads[i][j]-want.grads[i][j]))/(1e-3+math.Abs(float64(want.grads[i][j]))))
			}
		}
		if worst > 1e-3 {
			t.Errorf("rank %d: gradients differ from the tape's by %.2g relative", rank, worst)
		}
	}
}

func TestBatchSmallerThanProcesses(t *testing.T) {
	c := dist.Local(3)[0]
	if _, err := dp.New(c, "tape", model(t, ""), engine.Options{Batch: 2, Seq: 4, Threads: 1}); err == nil {
		t.Error("2 rows were shared by 3 processes")
	}
}
