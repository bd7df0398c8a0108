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
// of each linear's input and output observers (no statistics shared between goroutines),
// and together they see every row of the batch.
func TestReplicasCopyObservers(t *testing.T) {
	c := Config{Vocab: 97, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 16}
	m := New(c)
	m.Init(5)
	var reps []*countObserver
	master := map[*countObserver]bool{}
	lins := m.Linears()
	for _, nl := range lins {
		in, out := &countObserver{replicas: &reps}, &countObserver{replicas: &reps}
		master[in], master[out] = true, true
		nl.Linear.Observers, nl.Linear.OutputObservers = []Observer{in}, []Observer{out}
	}
	rng := rand.New(rand.NewPCG(8, 8))
	B, T := 4, 8
	r := NewReplicas(m, 2)
	r.LossBackward(randomTokens(rng, B*T, c.Vocab), randomTokens(rng, B*T, c.Vocab), B, T)
	if len(reps) != 2*2*len(lins) {
		t.Fatalf("%d observer replicas, want %d", len(reps), 2*2*len(lins))
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
	if want := 2 * B * T * len(lins); rows != want { // inputs and outputs
		t.Errorf("replicas observed %d rows, want %d", rows, want)
	}
}

// recorder keeps what it observed.
type recorder struct{ seen []float32 }

func (o *recorder) Observe(_ autograd.Ops, x *autograd.Var) *autograd.Var {
	o.seen = append(o.seen[:0], x.Data()...)
	return x
}

func (o *recorder) Replica() Observer { return o }

// TestOutputObservers: an output observer sees the linear's product x W^T
// (float64 reference, from what the input observer saw) on every path a
// linear takes: the q/k/v and gate/up groups, the residual projections
// (o_proj, down_proj) and the head; and observing changes no logit.
func TestOutputObservers(t *testing.T) {
	c := Config{Vocab: 97, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 16}
	m := New(c)
	m.Init(6)
	rng := rand.New(rand.NewPCG(9, 9))
	ids := randomTokens(rng, 2*8, c.Vocab)
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	want := append([]float32(nil), m.Forward(tp, ids, 2, 8).Data()...)
	tp.Reset()
	type pair struct {
		name    string
		l       *Linear
		in, out *recorder
	}
	var ps []pair
	for _, nl := range m.Linears() {
		p := pair{nl.Name, nl.Linear, &recorder{}, &recorder{}}
		nl.Linear.Observers, nl.Linear.OutputObservers = []Observer{p.in}, []Observer{p.out}
		ps = append(ps, p)
	}
	got := m.Forward(tp, ids, 2, 8).Data()
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("logit %d: %g with observers, %g without", i, got[i], want[i])
		}
	}
	for _, p := range ps {
		w := p.l.Weight.Data()
		out, in := p.l.Weight.Shape()[0], p.l.Weight.Shape()[1]
		rows := len(p.in.seen) / in
		if rows == 0 || len(p.out.seen) != rows*out {
			t.Fatalf("%s: saw %d inputs and %d outputs", p.name, len(p.in.seen), len(p.out.seen))
		}
		for r := 0; r < rows; r++ {
			for j := 0; j < out; j++ {
				var s float64
				for k := 0; k < in; k++ {
					s += float64(p.in.seen[r*in+k]) * float64(w[j*in+k])
				}
				if d := math.Abs(s - float64(p.out.seen[r*out+j])); d > 1e-4*(1+math.Abs(s)) {
					t.Fatalf("%s: output (%d, %d) observed %g, x W^T = %g", p.name, r, j, p.out.seen[r*out+j], s)
				}
			}
		}
	}
}
