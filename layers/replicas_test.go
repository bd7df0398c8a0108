package layers

import (
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd"
	"qat/kernels"
)

// TestReplicasMatchOneTape: splitting the batch over 1, 2 or 3 workers gives
// the loss and gradients of one pass over the whole batch, also when the
// workers count different numbers of ignored targets.
func TestReplicasMatchOneTape(t *testing.T) {
	c := Config{Vocab: 97, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 16}
	m := New(c)
	m.Init(5)
	rng := rand.New(rand.NewPCG(8, 8))
	B, T := 5, 12
	ids, tg := randomTokens(rng, B*T, c.Vocab), randomTokens(rng, B*T, c.Vocab)
	for i := 0; i < 20; i++ {
		tg[i] = IgnoreIndex // the first rows count fewer targets
	}
	tp := autograd.NewTape()
	want := m.Loss(tp, ids, tg, B, T)
	tp.Backward(want)
	ref := map[string][]float32{}
	for _, p := range m.Params() {
		ref[p.Name] = append([]float32(nil), p.Var.GradData()...)
	}
	for _, th := range []int{1, 2} {
		kernels.SetThreads(th)
		for _, n := range []int{1, 2, 3} {
			r := NewReplicas(m, n)
			for _, p := range m.Params() {
				autograd.ZeroGrad(p.Var)
			}
			got := r.LossBackward(ids, tg, B, T)
			if d := math.Abs(float64(got - want.Data()[0])); d > 1e-5 {
				t.Errorf("threads %d, %d workers: loss %g, one tape %g", th, n, got, want.Data()[0])
			}
			for _, p := range m.Params() {
				var worst, scale float64
				for i, v := range p.Var.GradData() {
					worst = math.Max(worst, math.Abs(float64(v-ref[p.Name][i])))
					scale = math.Max(scale, math.Abs(float64(ref[p.Name][i])))
				}
				if worst > 1e-5*scale+1e-9 {
					t.Errorf("threads %d, %d workers: %s differs by %.3g (scale %.3g)", th, n, p.Name, worst, scale)
				}
			}
		}
	}
	kernels.SetThreads(1)
}

// countObserver counts the rows it sees; its replicas count their own.
type countObserver struct {
	rows     int
	replicas *[]*countObserver
}

func (o *countObserver) Observe(_ autograd.Ops, x *autograd.Var) *autograd.Var {
	o.rows += x.Size() / x.Shape()[len(x.Shape())-1]
	return x
}

func (o *countObserver) Replica() Observer {
	r := &countObserver{replicas: o.replicas}
	*o.replicas = append(*o.replicas, r)
	return r
}

// TestReplicasCopyObservers: every worker observes through its own replica
// of each linear's observers (no statistics shared between goroutines),
// and together they see every row of the batch.
func TestReplicasCopyObservers(t *testing.T) {
	c := Config{Vocab: 97, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 16}
	m := New(c)
	m.Init(5)
	var reps []*countObserver
	master := map[*countObserver]bool{}
	lins := m.Linears()
	for _, nl := range lins {
		o := &countObserver{replicas: &reps}
		master[o] = true
		nl.Linear.Observers = []Observer{o}
	}
	rng := rand.New(rand.NewPCG(8, 8))
	B, T := 4, 8
	r := NewReplicas(m, 2)
	r.LossBackward(randomTokens(rng, B*T, c.Vocab), randomTokens(rng, B*T, c.Vocab), B, T)
	if len(reps) != 2*len(lins) {
		t.Fatalf("%d observer replicas, want %d", len(reps), 2*len(lins))
	}
	var rows int
	for _, o := range reps {
		if master[o] {
			t.Fatal("a worker shares the model's observer")
		}
		rows += o.rows
	}
	for o := range master {
		if o.rows != 0 {
			t.Fatal("the model's observer ran in a worker")
		}
	}
	if want := B * T * len(lins); rows != want {
		t.Errorf("replicas observed %d rows, want %d", rows, want)
	}
}
