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
	"unsafe"

	"qat/autograd"
	"qat/dist"
	"qat/engine"
	"qat/kernels"
	"qat/layers"
)

// Engine is one process's part of a data-parallel step (engine.Engine).
type Engine struct {
	comm       dist.Comm
	inner      engine.Engine
	batch      int
	seq        int
	r0, r1     int // this process's rows
	master     []layers.Param
	worker     []layers.Param // mirrors master
	reduced    []int          // the master params that take gradients
	offs       []int          // offset of each reduced param in the flat gradient (len+1)
	first      []int          // dist.Partition of reduced over the processes (len N+1)
	send, full []float32      // staging for values that are not one run of memory
	recv       []float32      // every worker's part of this process's run
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
	e.reduced, sizes, e.first = partition(m, n)
	e.offs = []int{0}
	for _, s := range sizes {
		e.offs = append(e.offs, e.offs[len(e.offs)-1]+s)
	}
	e.recv = make([]float32, n*e.span(rank))
	io := o
	io.Batch = e.r1 - e.r0
	var err error
	if e.inner, err = engine.New(inner, w, io); err != nil {
		return nil, err
	}
	return e, nil
}

// partition lists the parameters of m that take gradients (m.Params()
// indices, in the order of a packed model's memory), their sizes, and
// their split over n processes.
func partition(m *layers.Model, n int) (reduced, sizes, first []int) {
	ps := m.Params()
	for _, i := range layers.PackOrder(ps) {
		p := ps[i]
		if p.Var.GradData() == nil || !p.Var.RequiresGrad() {
			continue
		}
		reduced = append(reduced, i)
		sizes = append(sizes, p.Var.Size())
	}
	return reduced, sizes, dist.Partition(sizes, n)
}

// Owners is, for each of n processes, the m.Params() indices whose
// gradients it sums: under ZeRO-1 it keeps their optimizer moments and
// updates their weights (AllgatherWeights shares them). New's engine
// splits the same way.
func Owners(m *layers.Model, n int) [][]int {
	reduced, _, first := partition(m, n)
	out := make([][]int, n)
	for p := range out {
		out[p] = reduced[first[p]:first[p+1]]
	}
	return out
}

// flat is of's slices of the reduced params of ps (the model's or the
// worker's) as one slice, or nil when they are not one run of memory.
// It is looked up at every use: a loader or quantizer may give a tensor
// new memory after New.
func (e *Engine) flat(ps []layers.Param, of func(*autograd.Var) []float32) []float32 {
	parts := make([][]float32, len(e.reduced))
	for j, i := range e.reduced {
		parts[j] = of(ps[i].Var)
	}
	return contiguous(parts)
}

// staging is *buf, allocated to the flat gradient's length on first use.
func (e *Engine) staging(buf *[]float32) []float32 {
	if *buf == nil {
		*buf = make([]float32, e.offs[len(e.offs)-1])
	}
	return *buf
}

// contiguous is parts as one slice when each starts where the one before
// ends, else nil. The slice spans one packed arena (autograd.PackNew); the
// Vars keep the memory alive.
func contiguous(parts [][]float32) []float32 {
	if len(parts) == 0 {
		return nil
	}
	n := 0
	for j, p := range parts {
		if len(p) == 0 {
			return nil
		}
		if j > 0 {
			prev := parts[j-1]
			if unsafe.Pointer(&p[0]) != unsafe.Add(unsafe.Pointer(&prev[0]), len(prev)*4) {
				return nil
			}
		}
		n += len(p)
	}
	return unsafe.Slice(&parts[0][0], n)
}

// span is the length of process p's run in the flat gradient.
func (e *Engine) span(p int) int { return e.offs[e.first[p+1]] - e.offs[e.first[p]] }

// LossBackward computes the batch's mean loss and adds its gradient into
// the model's gradients on every process (engine.Engine).
func (e *Engine) LossBackward(ids, targets []int32) (float32, error) {
	// every process has the whole batch: the target counts of all rows
	// are known without a message
	counts, total := layers.TargetCounts(targets, e.batch, e.seq, e.comm.Size())
	l, err := e.Local(ids, targets)
	if err != nil {
		return 0, err
	}
	return e.combine(l, counts, total)
}

// Local is LossBackward's computation without its communication: the
// loss and gradients of this process's rows of the batch, on the worker.
// Benchmarks run it beside a reduction to measure what overlapping the
// two would save.
func (e *Engine) Local(ids, targets []int32) (float32, error) {
	for _, p := range e.worker {
		autograd.ZeroGrad(p.Var)
	}
	T := e.seq
	return e.inner.LossBackward(ids[e.r0*T:e.r1*T], targets[e.r0*T:e.r1*T])
}

// Reduce adds the workers' current gradients into the model's, each
// weighted 1/N: LossBackward's communication and sum alone, which
// benchmarks time against MPI_Allreduce of the same bytes.
func (e *Engine) Reduce() error {
	n := e.comm.Size()
	counts := make([]int, n)
	for w := range counts {
		counts[w] = 1
	}
	_, err := e.combine(0, counts, n)
	return err
}

// combine gathers the workers' losses (this one's is l) and sums their
// gradients into the model's on every process, worker w weighted by
// counts[w]/total.
func (e *Engine) combine(l float32, counts []int, total int) (float32, error) {
	n, rank := e.comm.Size(), e.comm.Rank()
	t0 := time.Now()
	defer func() { e.Comm += time.Since(t0) }()
	losses, err := dist.AllgatherOne(e.comm, l)
	if err != nil {
		return 0, err
	}
	var loss float32
	for w := 0; w < n; w++ {
		if total > 0 {
			loss += losses[w] * float32(counts[w]) / float32(total)
		}
	}
	// reduce-scatter: run p of this worker's gradient to process p, sent
	// from the worker's arena when its gradients are one run of memory
	send := e.flat(e.worker, (*autograd.Var).GradData)
	if send == nil {
		send = e.staging(&e.send)
		for j, i := range e.reduced {
			copy(send[e.offs[j]:e.offs[j+1]], e.worker[i].Var.GradData())
		}
	}
	sc, sd, rc, rd := make([]int, n), make([]int, n), make([]int, n), make([]int, n)
	own := e.span(rank)
	for p := 0; p < n; p++ {
		sc[p], sd[p] = e.span(p), e.offs[e.first[p]]
		rc[p], rd[p] = own, p*own
	}
	// this process's own part is read where it lies, not sent to itself
	sc[rank], rc[rank] = 0, 0
	if err := e.comm.AlltoallvF32(send, sc, sd, e.recv, rc, rd); err != nil {
		return 0, err
	}
	// the sum, in worker order, into the model's gradients of this run
	base := e.offs[e.first[rank]]
	lo, hi := e.first[rank], e.first[rank+1]
	kernels.ForBLAS(hi-lo, 1, func(_, a, b int) {
		for j := lo + a; j < lo+b; j++ {
			g := e.master[e.reduced[j]].Var.GradData()
			for w := 0; w < n; w++ {
				if counts[w] == 0 {
					continue
				}
				part := e.recv[w*own+e.offs[j]-base:]
				if w == rank {
					part = send[e.offs[j]:]
				}
				kernels.Active.Axpy(g, part[:len(g)], float32(counts[w])/float32(total))
			}
		}
	})
	return loss, e.gatherRuns(e.flat(e.master, (*autograd.Var).GradData), func(i int) []float32 { return e.master[i].Var.GradData() })
}

// gatherRuns gives every process the other processes' runs of what of
// returns for a model parameter (m.Params() index i): gradients once
// summed, weights once stepped (ZeRO-1). flat is the same values as one
// slice (nil when they are not one run of memory): the gather is then in
// place, without a copy.
func (e *Engine) gatherRuns(flat []float32, of func(i int) []float32) error {
	n, rank := e.comm.Size(), e.comm.Rank()
	lo, hi := e.first[rank], e.first[rank+1]
	counts, displs := make([]int, n), make([]int, n)
	for p := 0; p < n; p++ {
		counts[p], displs[p] = e.span(p), e.offs[e.first[p]]
	}
	if flat != nil {
		return e.comm.AllgathervF32(flat[e.offs[lo]:e.offs[hi]], flat, counts, displs)
	}
	send, full := e.staging(&e.send), e.staging(&e.full)
	for j := lo; j < hi; j++ {
		copy(send[e.offs[j]:e.offs[j+1]], of(e.reduced[j])) // MPI forbids sending from the receive buffer
	}
	if err := e.comm.AllgathervF32(send[e.offs[lo]:e.offs[hi]], full, counts, displs); err != nil {
		return err
	}
	for j, i := range e.reduced {
		if j < lo || j >= hi {
			copy(of(i), e.full[e.offs[j]:e.offs[j+1]])
		}
	}
	return nil
}

// AllgatherWeights gives every process the weights the others updated
// (ZeRO-1: each steps the tensors it owns, Owners).
func (e *Engine) AllgatherWeights() error {
	t0 := time.Now()
	defer func() { e.Comm += time.Since(t0) }()
	return e.gatherRuns(e.flat(e.master, (*autograd.Var).Data), func(i int) []float32 { return e.master[i].Var.Data() })
}

// Close closes the inner engine.
func (e *Engine) Close() error { return e.inner.Close() }
