// Package bench measures the compute core on this machine: sgemm at the
// model's shapes next to the BLAS backend called directly, the fused
// kernels in GB/s, and whole training steps in tokens/s and MFU.
package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/cpu"

	"qat/autograd"
	"qat/engine"
	"qat/engine/tape"
	"qat/kernels"
	"qat/layers"
	"qat/optim"
)

// Options select what to run.
type Options struct {
	Model         layers.Config
	Name          string
	Batch, Seq    int
	Threads       []int
	Steps, Warmup int
	JSON          string // write results here as JSON lines too
}

// Result is one measured figure.
type Result struct {
	Kind    string  `json:"kind"`
	Name    string  `json:"name"`
	Threads int     `json:"threads"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Ref     float64 `json:"ref,omitempty"` // the limit it is compared with
	RefName string  `json:"ref_name,omitempty"`
}

// Machine describes the CPU, the sgemm backend and the kernel set, and
// warns when OpenBLAS runs AVX2 kernels on a CPU with AVX-512.
func Machine(w io.Writer) {
	fmt.Fprintf(w, "cpu: %d cores, AVX2 %v, AVX-512 %v; kernels: %s; sgemm: %s (core %s)\n",
		runtime.NumCPU(), cpu.X86.HasAVX2, cpu.X86.HasAVX512F, kernels.Active.Name, kernels.Backend, kernels.CoreName())
	if cpu.X86.HasAVX512F && kernels.CoreName() == "Haswell" {
		fmt.Fprintln(w, "warning: OpenBLAS runs its AVX2 (Haswell) kernels on an AVX-512 CPU, about half speed: unset OPENBLAS_CORETYPE before starting qat")
	}
}

func timeIt(minDur time.Duration, f func()) float64 {
	f()
	n := 0
	start := time.Now()
	for time.Since(start) < minDur || n < 3 {
		f()
		n++
	}
	return time.Since(start).Seconds() / float64(n)
}

// timePair times a and b in alternating rounds and returns the seconds per
// call of each one's fastest round: on a shared machine whose speed drifts,
// a side-by-side ratio taken in one long block each would measure the
// drift.
func timePair(rounds int, minDur time.Duration, a, b func()) (float64, float64) {
	ta, tb := math.Inf(1), math.Inf(1)
	for range rounds {
		ta = min(ta, timeIt(minDur, a))
		tb = min(tb, timeIt(minDur, b))
	}
	return ta, tb
}

func randSlice(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// Run prints the tables and returns every figure.
func Run(w io.Writer, o Options) ([]Result, error) {
	Machine(w)
	var res []Result
	rng := rand.New(rand.NewPCG(1, 1))
	c, N := o.Model, o.Batch*o.Seq
	kv := c.HeadDim() * c.KVHeads
	type shape struct {
		name    string
		tA, tB  bool
		m, n, k int
	}
	shapes := []shape{
		{"fwd q/o", false, true, N, c.Dim, c.Dim},
		{"fwd k/v", false, true, N, kv, c.Dim},
		{"fwd gate/up", false, true, N, c.FFNHidden, c.Dim},
		{"fwd down", false, true, N, c.Dim, c.FFNHidden},
		{"fwd lm_head", false, true, N, c.Vocab, c.Dim},
		{"dx gate/up", false, false, N, c.Dim, c.FFNHidden},
		{"dW gate/up", true, false, c.FFNHidden, c.Dim, N},
		{"dW lm_head", true, false, c.Vocab, c.Dim, N},
		{"square 1024", false, false, 1024, 1024, 1024},
	}
	peak := map[int]float64{}
	for _, th := range o.Threads {
		kernels.SetThreads(th)
		fmt.Fprintf(w, "\nsgemm, %d thread(s), GFLOP/s          ours   %s direct   ratio\n", th, kernels.Backend)
		for _, s := range shapes {
			a, b, cc := randSlice(rng, s.m*s.k), randSlice(rng, s.k*s.n), make([]float32, s.m*s.n)
			lda, ldb := s.k, s.n
			if s.tA {
				lda = s.m
			}
			if s.tB {
				ldb = s.k
			}
			fl := 2 * float64(s.m) * float64(s.n) * float64(s.k)
			td, to := timePair(4, 50*time.Millisecond, func() {
				kernels.BackendSgemm(s.tA, s.tB, s.m, s.n, s.k, 1, a, lda, b, ldb, 0, cc, s.n)
			}, func() {
				kernels.Sgemm(s.tA, s.tB, s.m, s.n, s.k, 1, a, lda, b, ldb, 0, cc, s.n)
			})
			direct, ours := fl/td/1e9, fl/to/1e9
			name := fmt.Sprintf("%s %dx%dx%d", s.name, s.m, s.n, s.k)
			fmt.Fprintf(w, "  %-32s %7.1f   %7.1f   %5.2f\n", name, ours, direct, ours/direct)
			res = append(res, Result{"sgemm", name, th, ours, "GFLOP/s", direct, kernels.Backend})
			peak[th] = math.Max(peak[th], direct)
		}
	}
	kernels.SetThreads(1)
	fmt.Fprintf(w, "\nkernels (%s, 1 thread), GB/s counting 4 bytes per float read or written\n", kernels.Active.Name)
	n := N * c.FFNHidden
	x, y, z, u := randSlice(rng, n), randSlice(rng, n), randSlice(rng, n), randSlice(rng, n)
	for i := range u {
		u[i] = u[i] * u[i]
	}
	rows := N
	// AdamW gets buffers of its own: the ones above end up holding the
	// other kernels' outputs, not a parameter's state.
	ap, ag, am, av := randSlice(rng, n), randSlice(rng, n), make([]float32, n), make([]float32, n)
	for _, k := range []struct {
		name  string
		bytes float64
		f     func()
	}{
		{"SwiGLU forward", 12 * float64(n), func() { kernels.Active.SwiGLUFwd(z, x, y) }},
		{"SwiGLU backward", 28 * float64(n), func() { kernels.Active.SwiGLUBwd(z, u, y, x, y, true) }},
		{"RMSNorm forward", 8 * float64(rows*c.Dim), func() { kernels.Active.RMSNormFwd(z, u[:rows], x, y[:c.Dim], rows, c.Dim, 1e-5) }},
		{"RMSNorm backward", 16 * float64(rows*c.Dim), func() {
			kernels.Active.RMSNormBwd(z, u[:c.Dim], y, x, y[:c.Dim], u[:rows], rows, c.Dim)
		}},
		{"cross-entropy fwd+grad", 8 * float64(min(n, rows*c.Vocab)), func() {
			r := min(n, rows*c.Vocab) / c.Vocab
			kernels.Active.CrossEntropy(x, make([]int32, r), z, u[:r], r, c.Vocab, 1)
		}},
		{"AdamW update", 28 * float64(n), func() { kernels.Active.AdamW(ap, ag, am, av, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.5) }},
	} {
		gbs := k.bytes / timeIt(200*time.Millisecond, k.f) / 1e9
		fmt.Fprintf(w, "  %-24s %7.1f\n", k.name, gbs)
		res = append(res, Result{Kind: "kernel", Name: k.name, Threads: 1, Value: gbs, Unit: "GB/s"})
	}

	res = append(res, fakeQuant(w, rng)...)
	res = append(res, optimizerStates(w, rng, o.Threads)...)

	fmt.Fprintf(w, "\ntraining step %s (batch %d x seq %d): forward + backward + clip + AdamW, median of %d steps\n", o.Name, o.Batch, o.Seq, o.Steps)
	for _, th := range o.Threads {
		r, err := step(o, th)
		if err != nil {
			return res, err
		}
		mfu := r.gflops / peak[th]
		fmt.Fprintf(w, "  threads %d: %7.1f ms/step  %8.0f tokens/s  %6.1f GFLOP/s  MFU %4.1f%% of sgemm %0.f  %5.0f allocs/step\n",
			th, r.ms, r.tokps, r.gflops, 100*mfu, peak[th], r.allocs)
		res = append(res,
			Result{"train", o.Name + " step", th, r.ms, "ms", 0, ""},
			Result{"train", o.Name + " tokens/s", th, r.tokps, "tokens/s", 0, ""},
			Result{"train", o.Name + " MFU", th, mfu, "fraction", peak[th], "best sgemm GFLOP/s"},
			Result{"train", o.Name + " allocs", th, r.allocs, "allocs/step", 0, ""})
	}
	if o.JSON != "" {
		f, err := os.Create(o.JSON)
		if err != nil {
			return res, err
		}
		enc := json.NewEncoder(f)
		for _, r := range res {
			enc.Encode(r)
		}
		if err := f.Close(); err != nil {
			return res, err
		}
	}
	return res, nil
}

type stepResult struct{ ms, tokps, gflops, allocs float64 }

// randomBatch is the batch every benchmarked step trains on: random ids
// and targets (a step's cost does not depend on their values).
func randomBatch(o Options) (ids, tg []int32) {
	rng := rand.New(rand.NewPCG(2, 2))
	ids, tg = make([]int32, o.Batch*o.Seq), make([]int32, o.Batch*o.Seq)
	for i := range ids {
		ids[i], tg[i] = int32(rng.IntN(o.Model.Vocab)), int32(rng.IntN(o.Model.Vocab))
	}
	return ids, tg
}

// trainStep returns what the training loop (cmd/internal/train's Step)
// does each step to m, as one call: zero the gradients, the loss forward
// and backward on the tape engine (data-parallel replicas on several
// threads), clip the gradient norm to 1, an AdamW update. Quantizer steps
// and clip values are not decayed, as in training. It returns the loss.
func trainStep(m *layers.Model, o Options, threads int, ids, tg []int32) (func() (float32, error), error) {
	eng, err := tape.New(m, engine.Options{Batch: o.Batch, Seq: o.Seq, Threads: threads})
	if err != nil {
		return nil, err
	}
	return stepOn(m, eng, ids, tg), nil
}

// stepOn is trainStep's step with eng computing the loss and gradients
// (the data-parallel engine in Distributed).
func stepOn(m *layers.Model, eng engine.Engine, ids, tg []int32) func() (float32, error) {
	var ps []optim.Param
	var vars []*autograd.Var
	for _, p := range m.Params() {
		ps = append(ps, optim.Param{Name: p.Name, Var: p.Var, Decay: len(p.Var.Shape()) > 1 && !p.Quant})
		vars = append(vars, p.Var)
	}
	opt := optim.NewAdamW(optim.DefaultAdamW, ps, nil)
	return func() (float32, error) {
		autograd.ZeroGrad(vars...)
		l, err := eng.LossBackward(ids, tg)
		if err != nil {
			return 0, err
		}
		optim.ClipGradNorm(vars, 1)
		opt.Update(3e-4)
		return l, nil
	}
}

func step(o Options, threads int) (stepResult, error) {
	kernels.SetThreads(threads)
	defer kernels.SetThreads(1)
	m := layers.New(o.Model)
	m.Init(1)
	ids, tg := randomBatch(o)
	one, err := trainStep(m, o, threads, ids, tg)
	if err != nil {
		return stepResult{}, err
	}
	for i := 0; i < o.Warmup; i++ {
		if _, err := one(); err != nil {
			return stepResult{}, err
		}
	}
	var times []float64
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for i := 0; i < o.Steps; i++ {
		t0 := time.Now()
		if _, err := one(); err != nil {
			return stepResult{}, err
		}
		times = append(times, time.Since(t0).Seconds())
	}
	runtime.ReadMemStats(&ms1)
	med := median(times)
	tok := float64(o.Batch * o.Seq)
	return stepResult{ms: med * 1e3, tokps: tok / med, gflops: tok * o.Model.FLOPsPerToken(o.Seq) / med / 1e9,
		allocs: float64(ms1.Mallocs-ms0.Mallocs) / float64(o.Steps)}, nil
}

// median of times (sorted in place); for an even count the upper of the
// two middle values, as step has always taken it.
func median(times []float64) float64 {
	slices.Sort(times)
	return times[len(times)/2]
}

// fakeQuant measures the fused fake-quant kernels on a tensor far larger
// than the caches (16M floats) next to a copy of it, measured in the same
// run: the bandwidth these memory-bound kernels are bounded by. Bytes are
// counted as moved: 4 per float read or written, 1 per mask byte.
func fakeQuant(w io.Writer, rng *rand.Rand) []Result {
	const n, row = 1 << 24, 1024
	x, y, dy, dx := randSlice(rng, n), make([]float32, n), randSlice(rng, n), make([]float32, n)
	mask := make([]uint8, n)
	rows := n / row
	lo, hi, zero := make([]float32, n/32), make([]float32, n/32), make([]float32, n/32)
	step, ds := make([]float32, rows), make([]float32, rows)
	for i := range step {
		step[i] = 0.3
	}
	copyGBs := 8 * float64(n) / timeIt(300*time.Millisecond, func() { copy(y, x) }) / 1e9
	fmt.Fprintf(w, "\nfake quant (1 thread, %d M floats), GB/s and fraction of copy (%.1f GB/s, same run)\n", n>>20, copyGBs)
	res := []Result{{Kind: "memory", Name: "copy", Threads: 1, Value: copyGBs, Unit: "GB/s"}}
	for _, k := range []struct {
		name  string
		bytes float64
		f     func()
	}{
		{"int8 per-token (range+quant)", 13, func() {
			kernels.MinMaxGroups(lo[:rows], hi[:rows], x, row)
			for r := range rows {
				hi[r] = max(hi[r]-lo[r], 1e-6) / 255
			}
			kernels.FakeQuantAffine(y, mask, x, hi[:rows], zero[:rows], row, 0, 255)
		}},
		{"int4 per-channel weight", 13, func() {
			kernels.AbsMaxGroups(hi[:rows], x, row)
			kernels.FakeQuantAffine(y, mask, x, hi[:rows], zero[:rows], row, -8, 7)
		}},
		{"Q4_0 grid", 9, func() { kernels.FakeQuantQ4_0(y, mask, x) }},
		{"LSQ forward", 9, func() { kernels.FakeQuantLSQ(y, mask, x, step, row, 8, 7) }},
		{"LSQ backward (dx, ds)", 16, func() { kernels.LSQGrad(dx, ds, dy, x, step, row, 8, 7, 0.01) }},
		{"STE backward (mask)", 13, func() { kernels.MaskGrad(dx, dy, mask) }},
	} {
		gbs := k.bytes * float64(n) / timeIt(300*time.Millisecond, k.f) / 1e9
		fmt.Fprintf(w, "  %-30s %7.1f   %4.0f%%\n", k.name, gbs, 100*gbs/copyGBs)
		res = append(res, Result{Kind: "fakequant", Name: k.name, Threads: 1, Value: gbs, Unit: "GB/s", Ref: copyGBs, RefName: "copy GB/s"})
	}
	return res
}

// optimizerStates measures AdamW's update with each moment storage on 4M
// parameters (the states fit in the last-level cache) and 64M (they do
// not: DRAM-bound for fp32) at each thread count: parameters per second,
// GB/s moved (fp32 28 bytes a parameter: p, m, v read and written, g
// read; 8-bit 16, plus the block scales read and written) next to a copy
// of the same size in the same run, state bytes per parameter, and speed
// against the fp32 kernel, the kinds taken in turn round by round so that
// machine drift falls on all alike.
func optimizerStates(w io.Writer, rng *rand.Rand, threads []int) []Result {
	var res []Result
	h := optim.Hyper{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, BC1: 0.5, BC2: 0.5}
	for _, n := range []int{1 << 22, 1 << 26} {
		p, g := randSlice(rng, n), randSlice(rng, n)
		kinds := []struct {
			name  string
			m     optim.Moments
			bytes float64 // per parameter
		}{
			{"fp32", optim.NewFP32Moments(n), 28},
			{"int8 (block 256)", optim.NewInt8Moments(n, optim.DefaultBlock8), 16 + 16.0/optim.DefaultBlock8},
			{"fp8 (group 128)", optim.NewFP8Moments(n, optim.DefaultGroupFP8), 16 + 8.0/optim.DefaultGroupFP8},
		}
		for _, th := range threads {
			kernels.SetThreads(th)
			// copy moves 8 bytes a float; p and g together are as large as
			// the 8-bit states' traffic
			cp := make([]float32, n)
			copyGBs := 8 * float64(n) / timeIt(300*time.Millisecond, func() { kernels.For(n, 1<<16, func(lo, hi int) { copy(cp[lo:hi], g[lo:hi]) }) }) / 1e9
			secs := make([]float64, len(kinds))
			for i := range secs {
				secs[i] = math.Inf(1)
			}
			for range 3 {
				for i, k := range kinds {
					secs[i] = min(secs[i], timeIt(200*time.Millisecond, func() { k.m.Update(p, g, h) }))
				}
			}
			fmt.Fprintf(w, "\noptimizer update (%d thread(s), %d M parameters): Mparams/s, GB/s and fraction of copy (%.1f GB/s), state bytes/param, speed vs fp32\n",
				th, n>>20, copyGBs)
			ref := float64(n) / secs[0] / 1e6
			name := fmt.Sprintf("%dM", n>>20)
			for i, k := range kinds {
				rate := float64(n) / secs[i] / 1e6
				gbs := k.bytes * rate / 1e3
				bpp := float64(k.m.Bytes()) / float64(n)
				fmt.Fprintf(w, "  %-18s %8.0f  %6.1f  %4.0f%%   %5.3f   %4.2fx\n", k.name, rate, gbs, 100*gbs/copyGBs, bpp, rate/ref)
				res = append(res, Result{Kind: "optimizer", Name: k.name + " " + name, Threads: th, Value: rate, Unit: "Mparams/s", Ref: ref, RefName: "fp32 Mparams/s"},
					Result{Kind: "optimizer", Name: k.name + " " + name + " GB/s", Threads: th, Value: gbs, Unit: "GB/s", Ref: copyGBs, RefName: "copy GB/s"},
					Result{Kind: "optimizer", Name: k.name + " state", Threads: th, Value: bpp, Unit: "bytes/param"})
			}
		}
	}
	kernels.SetThreads(1)
	return res
}
