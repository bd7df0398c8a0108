// Package dp is data parallelism across processes: every process of a
// job (a dist.Comm) holds the whole model, computes the loss and
// gradients of its own rows of each batch with an inner engine (tape or
// gorgonia) on a worker replica, and the gradients are combined into the
// model's in a fixed order, so a run on N processes is bit for bit the
// run of one process with N tape replicas (layers.Replicas), whatever N
// is split into and whichever MPI algorithm moves the bytes.
//
// The combination is a reduce-scatter and an all-gather, as a ring
// all-reduce moves (2(N-1)/N of the gradient per process), but the sum is
// ours: the parameters are partitioned into N runs (dist.Partition, whole
// tensors); process p receives every worker's gradient of its run
// (all-to-all) and adds them into the model's gradient in worker order,
// weighted by each worker's share of the counted targets, exactly as
// Replicas.LossBackward does; then every process gathers the other runs
// (all-gather). MPI's own Allreduce sums in an order that depends on the
// process count and message size, which would make runs differ in the
// last bits.
package dp

import (
	"fmt"
	"time"

	"qat/autograd"
	"qat/dist"
	"qat/engine"
	"qat/kernels"
	"qat/layers"
)

// Engine is one process's part of a data-parallel step (engine.Engine).
type Engine struct {
	comm    dist.Comm
	inner   engine.Engine
	batch   int
	seq     int
	r0, r1  int // this process's rows
	master  []layers.Param
	worker  []layers.Param // mirrors master
	reduced []int          // the master params that take gradients
	offs    []int          // offset of each reduced param in the flat gradient (len+1)
	first   []int          // dist.Partition of reduced over the processes (len N+1)
	send    []float32      // this worker's flat gradient
	recv    []float32      // every worker's part of this process's run
	full    []float32      // the combined flat gradient
	losses  []float32
	// Comm is the time spent in collectives (for the log and benchmarks).
	Comm time.Duration
}

// New builds the data-parallel engine over m: an inner engine of the
// registered name on a worker replica for this process's rows of each
// o.Batch x o.Seq batch (rows [rank*B/N, (rank+1)*B/N), the rows of
// Replicas worker rank), with o.Threads threads.
func New(comm dist.Comm, inner string, m *layers.Model, o engine.Options) (*Engine, error) {
	n, rank := comm.Size(), comm.Rank()
	if o.Batch < n {
		return nil, fmt.Errorf("a batch of %d rows cannot be shared by %d processes: train.batch must be at least the number of processes", o.Batch, n)
	}
	e := &Engine{comm: comm, batch: o.Batch, seq: o.Seq, r0: rank * o.Batch / n, r1: (rank + 1) * o.Batch / n}
	w := layers.Replicate(m)
	e.master, e.worker = m.Params(), w.Params()
	var sizes []int
	e.offs = []int{0}
	for i, p := range e.master {
		if p.Var.GradData() == nil || !p.Var.RequiresGrad() {
			continue
		}
		e.reduced = append(e.reduced, i)
		sizes = append(sizes, p.Var.Size())
		e.offs = append(e.offs, e.offs[len(e.offs)-1]+p.Var.Size())
	}
	e.first = dist.Partition(sizes, n)
	total := e.offs[len(e.offs)-1]
	own := e.span(rank)
	e.send, e.recv, e.full = make([]float32, total), make([]float32, n*own), make([]float32, total)
	e.losses = make([]float32, n)
	io := o
	io.Batch = e.r1 - e.r0
	var err error
	if e.inner, err = engine.New(inner, w, io); err != nil {
		return nil, err
	}
	return e, nil
}

// span is the length of process p's run in the flat gradient.
func (e *Engine) span(p int) int { return e.offs[e.first[p+1]] - e.offs[e.first[p]] }

// Owned says which of the model's parameters (m.Params() indices) this
// process sums the gradients of: ZeRO-1 keeps their optimizer states
// here (optim.AdamW.Shard).
func (e *Engine) Owned() []int { return e.reduced[e.first[e.comm.Rank()]:e.first[e.comm.Rank()+1]] }

// Partition is, for each process, the m.Params() indices it owns.
func (e *Engine) Partition() [][]int {
	out := make([][]int, e.comm.Size())
	for p := range out {
		out[p] = e.reduced[e.first[p]:e.first[p+1]]
	}
	return out
}

// LossBackward computes the batch's mean loss and adds its gradient into
// the model's gradients on every process (engine.Engine).
func (e *Engine) LossBackward(ids, targets []int32) (float32, error) {
	n, rank, B, T := e.comm.Size(), e.comm.Rank(), e.batch, e.seq
	// every process has the whole batch: the target counts of all rows
	// are known without a message
	counts := make([]int, n)
	total := 0
	for w := 0; w < n; w++ {
		for _, t := range targets[w*B/n*T : (w+1)*B/n*T] {
			if t != layers.IgnoreIndex {
				counts[w]++
			}
		}
		total += counts[w]
	}
	for _, p := range e.worker {
		autograd.ZeroGrad(p.Var)
	}
	l, err := e.inner.LossBackward(ids[e.r0*T:e.r1*T], targets[e.r0*T:e.r1*T])
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	defer func() { e.Comm += time.Since(t0) }()
	one := make([]int, n)
	at := make([]int, n)
	for p := range one {
		one[p], at[p] = 1, p
	}
	if err := e.comm.AllgathervF32([]float32{l}, e.losses, one, at); err != nil {
		return 0, err
	}
	var loss float32
	for w := 0; w < n; w++ {
		if total > 0 {
			loss += e.losses[w] * float32(counts[w]) / float32(total)
		}
	}
	// reduce-scatter: run p of this worker's gradient to process p
	for j, i := range e.reduced {
		copy(e.send[e.offs[j]:e.offs[j+1]], e.worker[i].Var.GradData())
	}
	sc, sd, rc, rd := make([]int, n), make([]int, n), make([]int, n), make([]int, n)
	own := e.span(rank)
	for p := 0; p < n; p++ {
		sc[p], sd[p] = e.span(p), e.offs[e.first[p]]
		rc[p], rd[p] = own, p*own
	}
	if err := e.comm.AlltoallvF32(e.send, sc, sd, e.recv, rc, rd); err != nil {
		return 0, err
	}
	// the sum, in worker order, into the model's gradients of this run
	base := e.offs[e.first[rank]]
	lo, hi := e.first[rank], e.first[rank+1]
	kernels.ForBLAS(hi-lo, 1, func(_, a, b int) {
		for j := lo + a; j < lo+b; j++ {
			g := e.master[e.reduced[j]].Var.GradData()
			for w := 0; w < n; w++ {
				if counts[w] > 0 {
					kernels.Active.Axpy(g, e.recv[w*own+e.offs[j]-base:][:len(g)], float32(counts[w])/float32(total))
				}
			}
			copy(e.send[e.offs[j]:e.offs[j+1]], g) // MPI forbids sending from the receive buffer
		}
	})
	// all-gather the runs
	if err := e.comm.AllgathervF32(e.send[base:base+own], e.full, sc, sd); err != nil {
		return 0, err
	}
	for j, i := range e.reduced {
		if j < lo || j >= hi {
			copy(e.master[i].Var.GradData(), e.full[e.offs[j]:e.offs[j+1]])
		}
	}
	return loss, nil
}

// Close closes the inner engine.
func (e *Engine) Close() error { return e.inner.Close() }
