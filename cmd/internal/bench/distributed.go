package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"qat/dist"
	"qat/engine"
	"qat/engine/dp"
	"qat/kernels"
	"qat/layers"
)

// DistResult is what a data-parallel job measured (its lead writes it).
type DistResult struct {
	Procs      int     `json:"processes"`
	GradValues int     `json:"gradient_values"`
	OursMs     float64 `json:"ordered_reduce_ms"` // engine/dp's reduce-scatter + ordered sum + all-gather
	MPIMs      float64 `json:"mpi_allreduce_ms"`  // MPI_Allreduce of the same values
	StepMs     float64 `json:"step_ms"`
	CommMs     float64 `json:"step_comm_ms"` // of StepMs, in collectives
	TokensSec  float64 `json:"tokens_per_s"`
	// the overlap of the backward pass with the reduction, bounded: the
	// rows' forward and backward alone, and the same while the reduction
	// of another copy of the gradients runs on a second thread
	LocalMs   float64 `json:"local_ms"`
	OverlapMs float64 `json:"local_with_reduce_ms"`
}

// Distributed is one process's part of `qat bench --distributed` run
// under a launcher: training steps of o's model with the data-parallel
// engine (one thread per process), then the gradient's reduction timed
// beside MPI_Allreduce of the same bytes. The lead returns the result.
func Distributed(comm dist.Comm, o Options) (DistResult, error) {
	kernels.SetThreads(1)
	m := layers.New(o.Model)
	m.Init(1)
	e, err := dp.New(comm, "tape", m, engine.Options{Batch: o.Batch, Seq: o.Seq, Threads: 1})
	if err != nil {
		return DistResult{}, err
	}
	ids, tg := randomBatch(o)
	step := stepOn(m, e, ids, tg)
	one := func() error {
		_, err := step()
		return err
	}
	for i := 0; i < o.Warmup; i++ {
		if err := one(); err != nil {
			return DistResult{}, err
		}
	}
	var steps, comms []float64
	for i := 0; i < o.Steps; i++ {
		if err := comm.Barrier(); err != nil {
			return DistResult{}, err
		}
		c0, t0 := e.Comm, time.Now()
		if err := one(); err != nil {
			return DistResult{}, err
		}
		steps, comms = append(steps, time.Since(t0).Seconds()), append(comms, (e.Comm-c0).Seconds())
	}
	n := 0
	for _, p := range m.Params() {
		if p.Var.RequiresGrad() {
			n += p.Var.Size()
		}
	}
	buf := make([]float32, n)
	var ours, theirs []float64
	for i := 0; i < max(o.Steps, 5); i++ {
		for _, f := range []struct {
			times *[]float64
			run   func() error
		}{{&ours, e.Reduce}, {&theirs, func() error { return comm.AllreduceSumF32(buf) }}} {
			if err := comm.Barrier(); err != nil {
				return DistResult{}, err
			}
			t0 := time.Now()
			if err := f.run(); err != nil {
				return DistResult{}, err
			}
			*f.times = append(*f.times, time.Since(t0).Seconds())
		}
	}
	local, both, err := overlap(comm, o, e, ids, tg)
	if err != nil {
		return DistResult{}, err
	}
	st := median(steps)
	return DistResult{Procs: comm.Size(), GradValues: n, OursMs: median(ours) * 1e3, MPIMs: median(theirs) * 1e3,
		StepMs: st * 1e3, CommMs: median(comms) * 1e3, TokensSec: float64(o.Batch*o.Seq) / st,
		LocalMs: local * 1e3, OverlapMs: both * 1e3}, nil
}

// overlap measures what running the reduction during the backward pass
// could save on this machine, before building it: the median time of the
// rows' forward and backward alone (e.Local), and of the same while a
// second engine, on its own copy of the model, reduces its gradients on
// another goroutine. Perfect overlap would make the second max(local,
// reduce); no gain makes it local + reduce.
func overlap(comm dist.Comm, o Options, e *dp.Engine, ids, tg []int32) (local, both float64, err error) {
	m2 := layers.New(o.Model)
	m2.Init(2)
	e2, err := dp.New(comm, "tape", m2, engine.Options{Batch: o.Batch, Seq: o.Seq, Threads: 1})
	if err != nil {
		return 0, 0, err
	}
	defer e2.Close()
	var alone, with []float64
	for i := 0; i < max(o.Steps, 5); i++ {
		if err := comm.Barrier(); err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		if _, err := e.Local(ids, tg); err != nil {
			return 0, 0, err
		}
		alone = append(alone, time.Since(t0).Seconds())
		if err := comm.Barrier(); err != nil {
			return 0, 0, err
		}
		t0 = time.Now()
		done := make(chan error, 1)
		go func() { done <- e2.Reduce() }()
		_, lerr := e.Local(ids, tg)
		rerr := <-done
		with = append(with, time.Since(t0).Seconds())
		if lerr != nil || rerr != nil {
			return 0, 0, errors.Join(lerr, rerr)
		}
	}
	return median(alone), median(with), nil
}

// DistributedSideBySide is `qat bench --distributed` run by hand: it
// measures one process with procs threads (the tape's replicas), then
// starts exe (an MPI build of qat) under mpirun with procs processes of
// one thread and prints both, with the reduction's GB/s beside
// MPI_Allreduce's. args are the benchmark's flags for the job.
func DistributedSideBySide(w io.Writer, o Options, procs int, mpirun, exe string, args []string) error {
	Machine(w)
	single, err := step(o, procs)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "qat-bench-dist-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "result.json")
	argv := []string{"-np", strconv.Itoa(procs)}
	if os.Geteuid() == 0 {
		argv = append(argv, "--allow-run-as-root")
	}
	argv = append(append(argv, exe, "bench", "--distributed", "--dist-result", out), args...)
	cmd := exec.Command(mpirun, argv...)
	cmd.Stdout, cmd.Stderr = w, w
	fmt.Fprintf(w, "\n%s %v\n", mpirun, argv)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", mpirun, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	var r DistResult
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	PrintDistributed(w, o, r)
	fmt.Fprintf(w, "\ntraining step, %s, %d x %d tokens       tokens/s     ms/step\n", o.Name, o.Batch, o.Seq)
	fmt.Fprintf(w, "1 process x %d threads (tape replicas)  %10.0f  %10.1f\n", procs, single.tokps, single.ms)
	fmt.Fprintf(w, "%d processes x 1 thread (MPI)          %10.0f  %10.1f   (%.1f ms of it in collectives)\n", r.Procs, r.TokensSec, r.StepMs, r.CommMs)
	fmt.Fprintf(w, "ratio (MPI / one process)              %10.2fx\n", r.TokensSec/single.tokps)
	PrintOverlap(w, r)
	return nil
}

// PrintDistributed prints the reduction's figures of r.
func PrintDistributed(w io.Writer, o Options, r DistResult) {
	bytes := 4 * float64(r.GradValues)
	// bus bandwidth: what each process sends and receives, 2(N-1)/N of
	// the gradient for a reduce-scatter + all-gather (OSU's convention)
	bus := 2 * float64(r.Procs-1) / float64(r.Procs)
	fmt.Fprintf(w, "\ngradient reduction, %s: %d values (%.1f MB), %d processes      ms   GB/s (algorithm)   GB/s (bus)\n",
		o.Name, r.GradValues, bytes/1e6, r.Procs)
	for _, x := range []struct {
		name string
		ms   float64
	}{{"ordered reduce-scatter + sum + all-gather (engine/dp)", r.OursMs}, {"MPI_Allreduce of the same bytes (Open MPI)", r.MPIMs}} {
		fmt.Fprintf(w, "%-56s %8.2f %10.2f %16.2f\n", x.name, x.ms, bytes/x.ms/1e6, bus*bytes/x.ms/1e6)
	}
	fmt.Fprintf(w, "ratio (ours / MPI_Allreduce time)                        %8.2fx\n", r.OursMs/r.MPIMs)
}

// PrintOverlap prints what overlapping the reduction with the backward
// pass would save, measured (overlap).
func PrintOverlap(w io.Writer, r DistResult) {
	fmt.Fprintf(w, "\noverlap of the reduction with forward+backward, per process            ms\n")
	fmt.Fprintf(w, "forward+backward of the process's rows alone                       %8.1f\n", r.LocalMs)
	fmt.Fprintf(w, "the same while a reduction runs on a second thread                 %8.1f\n", r.OverlapMs)
	fmt.Fprintf(w, "one after the other (forward+backward + reduction)                 %8.1f\n", r.LocalMs+r.OursMs)
	fmt.Fprintf(w, "perfect overlap (the longer of the two)                            %8.1f\n", max(r.LocalMs, r.OursMs))
	fmt.Fprintf(w, "saved by overlapping: %.1f ms of the %.1f ms reduction (%.0f%%)\n",
		r.LocalMs+r.OursMs-r.OverlapMs, r.OursMs, 100*(r.LocalMs+r.OursMs-r.OverlapMs)/r.OursMs)
}
