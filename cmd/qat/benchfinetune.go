package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"qat/checkpoint"
	"qat/cmd/internal/config"
	"qat/cmd/internal/train"
	"qat/layers"
)

// ftRun is one configuration qat bench finetune measures.
type ftRun struct {
	Key   string // --configs name
	Label string // what the table calls it
	// yaml is the run config's method sections (quant, lora, optimizer)
	yaml func(o ftOptions) string
}

// ftRuns are the measured configurations, in the table's order. The two
// QAT runs keep the same 4-bit grid size (32 inputs per scale): full QAT
// on the Q4_0 grid the README recommends for llama.cpp (w4a16-g32), and
// LR-QAT on the symmetric int4 grid with groups of 32 (LR-QAT needs an
// int grid: its base weight is int8 fixed point on it).
var ftRuns = []ftRun{
	{"qat", "full QAT w4a16-g32, int8 states", func(ftOptions) string {
		return "optimizer: {state: int8}\nquant: {preset: w4a16-g32}\n"
	}},
	{"lrqat", "LR-QAT int4 g32, int8 states", func(o ftOptions) string {
		return fmt.Sprintf(`optimizer: {state: int8}
quant:
  rules:
    - match: "model.layers.*"
      weights: {format: int, bits: 4, symmetric: true, granularity: group, group_size: 32, scale: minmax}
lora: {method: lr-qat, rank: %d, alpha: %d}
`, o.Rank, o.Rank)
	}},
	{"fp32", "fp32 full fine-tune, fp32 states", func(ftOptions) string {
		return "optimizer: {state: fp32}\n"
	}},
}

// ftOptions are qat bench finetune's flags.
type ftOptions struct {
	Dir, Model, Data, Shape string
	Inputs                  []string
	Vocab                   int
	Configs                 []string
	Steps, Batch, Seq, Rank int
	Threads                 int
	MinFreeGB               float64
	Force, Keep             bool
	JSON                    string
}

// check validates the flags, naming the first bad one.
func (o ftOptions) check() error {
	switch {
	case o.Steps < 2:
		return inputf("--steps %d: at least 2 (the first step is untimed warm-up: the median is over the rest)", o.Steps)
	case o.Batch < 1:
		return inputf("--batch %d: must be positive", o.Batch)
	case o.Seq < 2:
		return inputf("--seq %d: at least 2", o.Seq)
	case o.Rank < 1:
		return inputf("--rank %d: must be positive", o.Rank)
	case o.Threads < 1 || o.Threads > config.MaxThreads:
		return inputf("--threads %d: 1 to %d", o.Threads, config.MaxThreads)
	case o.Vocab < 1:
		return inputf("--vocab %d: must be positive", o.Vocab)
	case !(o.MinFreeGB >= 0):
		return inputf("--min-free %g: must not be negative", o.MinFreeGB)
	case len(o.Configs) == 0:
		return inputf("--configs: name at least one of %s", ftKeys())
	}
	seen := map[string]bool{}
	for _, c := range o.Configs {
		if ftByKey(c) == nil {
			return inputf("--configs %q: want %s", c, ftKeys())
		}
		if seen[c] {
			return inputf("--configs %q given twice", c)
		}
		seen[c] = true
	}
	if _, ok := importShapes[o.Shape]; !ok && o.Model == "" {
		return inputf("--shape %q: want tinyllama or mid", o.Shape)
	}
	return nil
}

func ftByKey(k string) *ftRun {
	for i := range ftRuns {
		if ftRuns[i].Key == k {
			return &ftRuns[i]
		}
	}
	return nil
}

func ftKeys() string {
	var ks []string
	for _, r := range ftRuns {
		ks = append(ks, r.Key)
	}
	return strings.Join(ks, ", ")
}

// ftResult is what the measured child reports.
type ftResult struct {
	Params      int       `json:"params"`
	Trainable   int       `json:"trainable"`
	FrozenF32   int       `json:"frozen_f32"`
	FrozenInt8  int       `json:"frozen_int8_bytes"`
	StateBytes  int       `json:"state_bytes"`
	OpenSeconds float64   `json:"open_seconds"`
	Steps       []float64 `json:"step_seconds"`
	Losses      []float64 `json:"losses"`
	// From /proc/self: resident memory when the run was open (model
	// loaded, quantizers and adapters attached), the high-water mark then
	// (the load's peak), and the largest resident size sampled during the
	// steps (every 20 ms: a lower bound of the steps' peak). 0: not Linux.
	RSSOpen  int64 `json:"rss_open_bytes"`
	HWMOpen  int64 `json:"hwm_open_bytes"`
	StepPeak int64 `json:"step_rss_peak_bytes"`
}

func benchFinetuneCmd() *cobra.Command {
	var o ftOptions
	var run string
	cmd := &cobra.Command{
		Use:   "finetune",
		Short: "Measure QAT fine-tune steps on a TinyLlama-1.1B-shaped checkpoint: tokens/s and peak memory, full QAT beside LR-QAT",
		Long: `Measure fine-tune steps at --batch x --seq (1 x 256) on a TinyLlama-1.1B-shaped
checkpoint (synthetic BF16, as qat bench import writes it, or --model): for
each of --configs a child process opens the run as qat train does
(init_from the checkpoint, quantizers, adapters, optimizer) and takes
--steps steps; its peak resident memory is getrusage's ru_maxrss.

  qat    full QAT on the Q4_0 grid (w4a16-g32), 8-bit AdamW states
  lrqat  LR-QAT (--rank) over int4 groups of 32, 8-bit AdamW states
  fp32   full-precision fine-tune with fp32 states (reference; ~18 GB)

The table gives trainable parameters, the median step time after the
first step, tokens/s, peak RSS and its ratio to the float32 weights, the
load's peak and the steps' sampled peak; then, per configuration, an
estimate of where the memory goes computed from the tensor sizes.

The checkpoint and the data (SOTU with a --vocab BPE tokenizer, as qat
data prepare makes it) are written under --dir and reused by the next run
that names the same --dir; without --dir a temporary directory is used
and removed. A configuration whose estimate exceeds the machine's
available memory is skipped (--force runs it), and a child is stopped
when available memory falls under --min-free GB.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if run != "" { // the child
				return ftChild(cmd.OutOrStdout(), cmd.ErrOrStderr(), run, o.Steps)
			}
			if err := o.check(); err != nil {
				return err
			}
			return benchFinetune(cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "", "work directory: the synthetic checkpoint and data are written there once and reused (default: a temporary one, removed)")
	f.StringVar(&o.Model, "model", "", "a Hugging Face model directory to fine-tune (default: the synthetic --shape checkpoint)")
	f.StringVar(&o.Shape, "shape", "tinyllama", "synthetic checkpoint shape: tinyllama or mid")
	f.StringVar(&o.Data, "data", "", "a prepared data directory (qat data prepare; its vocabulary at most the model's) (default: SOTU prepared under --dir)")
	f.StringSliceVar(&o.Inputs, "input", []string{"../shared/data/sotu"}, "text the data is prepared from")
	f.IntVar(&o.Vocab, "vocab", 4096, "vocabulary of the tokenizer trained on --input (at most the model's)")
	f.StringSliceVar(&o.Configs, "configs", []string{"qat", "lrqat"}, "configurations to measure: "+ftKeys())
	f.IntVar(&o.Steps, "steps", 4, "steps per configuration (the first is warm-up)")
	f.IntVar(&o.Batch, "batch", 1, "sequences per step")
	f.IntVar(&o.Seq, "seq", 256, "tokens per sequence")
	f.IntVar(&o.Rank, "rank", 16, "LR-QAT rank (alpha the same: adapters enter at scale 1)")
	f.IntVar(&o.Threads, "threads", 2, "threads (train.threads)")
	f.Float64Var(&o.MinFreeGB, "min-free", 1, "stop a child when the machine's available memory falls under this many GB")
	f.BoolVar(&o.Force, "force", false, "run configurations whose memory estimate exceeds the available memory")
	f.BoolVar(&o.Keep, "keep", false, "keep the temporary work directory")
	f.StringVar(&o.JSON, "json", "", "also write one JSON line per configuration to this file")
	f.StringVar(&run, "run", "", "open this run config and take --steps steps (the measured child)")
	f.MarkHidden("run")
	return cmd
}

// ftChild is the measured process: it opens the run of cfgPath, takes
// steps and prints an ftResult.
func ftChild(stdout, log io.Writer, cfgPath string, steps int) error {
	c, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	t0 := time.Now()
	r, err := train.OpenWith(c, train.Options{}, log)
	if err != nil {
		return err
	}
	defer r.Close()
	res := ftResult{OpenSeconds: time.Since(t0).Seconds(), StateBytes: r.Opt.StateBytes()}
	for _, p := range r.Model.Params() {
		res.Params += p.Var.Size()
		if p.Var.RequiresGrad() {
			res.Trainable += p.Var.Size()
		} else {
			res.FrozenF32 += p.Var.Size()
		}
	}
	for _, nl := range r.Model.Linears() {
		for _, q := range []any{nl.Linear.WeightQuant, nl.Linear.Adapter} {
			if f, ok := q.(layers.FrozenState); ok {
				for _, t := range f.Frozen() {
					res.FrozenInt8 += len(t.Data)
				}
			}
		}
	}
	res.RSSOpen, res.HWMOpen = procStatus("VmRSS"), procStatus("VmHWM")
	fmt.Fprintf(log, "open in %.1f s: RSS %.2f GB, peak so far %.2f GB\n", res.OpenSeconds, gb(res.RSSOpen), gb(res.HWMOpen))
	stop := sampleRSS(&res.StepPeak)
	for i := 0; i < steps; i++ {
		t := time.Now()
		s, err := r.Step()
		if err != nil {
			stop()
			return err
		}
		d := time.Since(t).Seconds()
		res.Steps = append(res.Steps, d)
		res.Losses = append(res.Losses, s.Loss)
		fmt.Fprintf(log, "step %d/%d: %.1f s, loss %.3f, RSS %.2f GB\n", i+1, steps, d, s.Loss, gb(procStatus("VmRSS")))
	}
	stop()
	return json.NewEncoder(stdout).Encode(res)
}

// procStatus reads a kB field of /proc/self/status in bytes (0 where
// there is none).
func procStatus(key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return meminfoField(b, key)
}

// meminfoField parses "Key:   1234 kB" lines (/proc/self/status,
// /proc/meminfo) into bytes; 0 when key is absent.
func meminfoField(b []byte, key string) int64 {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0
		}
		if len(f) > 1 && f[1] == "kB" {
			n <<= 10
		}
		return n
	}
	return 0
}

// sampleRSS records the largest VmRSS seen every 20 ms into peak until the
// returned function is called.
func sampleRSS(peak *int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			*peak = max(*peak, procStatus("VmRSS"))
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func gb(n int64) float64 { return float64(n) / 1e9 }

// ftMeasured is one configuration's row.
type ftMeasured struct {
	Run     *ftRun
	Res     ftResult
	Peak    int64 // ru_maxrss of the child, bytes
	Est     memEstimate
	Skipped string // why it did not run
}

// benchFinetune prepares the checkpoint and data and measures each
// configuration in a child process.
func benchFinetune(w, log io.Writer, o ftOptions) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "qat-finetune-"); err != nil {
			return err
		}
		if o.Keep {
			fmt.Fprintf(w, "work directory kept: %s\n", dir)
		} else {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return inputf("--dir: %v", err)
	}
	fmt.Fprintf(w, "machine: load average %s at the start; %.1f GB available of %.1f GB\n", loadAvg(), gb(memAvailable()), gb(memTotal()))
	model := o.Model
	if model == "" {
		if model, err = ftCheckpoint(w, dir, o.Shape); err != nil {
			return err
		}
	}
	mc, err := checkpoint.HFConfig(model)
	if err != nil {
		return inputf("--model: %v", err)
	}
	if o.Seq > mc.MaxSeq {
		return inputf("--seq %d: the model's max_seq is %d", o.Seq, mc.MaxSeq)
	}
	dataDir := o.Data
	if dataDir == "" {
		if o.Vocab > mc.Vocab {
			return inputf("--vocab %d: the model has %d rows", o.Vocab, mc.Vocab)
		}
		if dataDir, err = ftData(w, log, self, dir, o); err != nil {
			return err
		}
	}
	runs, err := os.MkdirTemp(dir, "runs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(runs)
	params, _ := mc.Params()
	fmt.Fprintf(w, "model: %s, %d parameters (dim %d, %d layers, vocab %d), float32 weights %.2f GB; data %s; %d steps of %d x %d tokens, %d threads\n",
		model, params, mc.Dim, mc.Layers, mc.Vocab, gb(4*int64(params)), dataDir, o.Steps, o.Batch, o.Seq, o.Threads)
	var rows []ftMeasured
	for _, key := range o.Configs {
		run := ftByKey(key)
		m := ftMeasured{Run: run, Est: estimateMemory(mc, key, o.Rank, o.Batch, o.Seq)}
		if avail := memAvailable(); avail > 0 && m.Est.Total() > avail && !o.Force {
			m.Skipped = fmt.Sprintf("estimated %.1f GB, %.1f GB available (--force runs it)", gb(m.Est.Total()), gb(avail))
			fmt.Fprintf(log, "[%s] skipped: %s\n", key, m.Skipped)
			rows = append(rows, m)
			continue
		}
		cfg := filepath.Join(runs, key+".yaml")
		y := ftYAML(model, dataDir, filepath.Join(runs, key), o) + run.yaml(o)
		if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(log, "[%s] %s: estimated %.1f GB; running %d steps\n", key, run.Label, gb(m.Est.Total()), o.Steps)
		if m.Res, m.Peak, err = ftRunChild(log, self, key, cfg, o.Steps, int64(o.MinFreeGB*1e9)); err != nil {
			return err
		}
		rows = append(rows, m)
	}
	fmt.Fprintf(w, "machine: load average %s at the end\n", loadAvg())
	writeFinetuneTable(w, mc, o, rows)
	if o.JSON != "" {
		return appendFinetuneJSON(o.JSON, model, mc, o, rows)
	}
	return nil
}

// ftCheckpoint returns dir/model, writing the synthetic checkpoint of
// shape there first unless an earlier run left it (it is written under
// another name and renamed when complete, so a killed write is not
// reused).
func ftCheckpoint(w io.Writer, dir, shape string) (string, error) {
	model := filepath.Join(dir, "model-"+shape)
	if _, err := os.Stat(filepath.Join(model, "config.json")); err == nil {
		fmt.Fprintf(w, "reusing the synthetic %s checkpoint in %s\n", shape, model)
		return model, nil
	}
	tmp := model + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	start := time.Now()
	if err := checkpoint.WriteSynthetic(tmp, importShapes[shape], 2, 1); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, model); err != nil {
		return "", err
	}
	fmt.Fprintf(w, "wrote a synthetic %s checkpoint (BF16, 2 shards) to %s in %.1f s\n", shape, model, time.Since(start).Seconds())
	return model, nil
}

// ftData returns dir/data-vVOCAB, prepared by `qat data prepare` in a
// child process (this process stays small: a child started from it
// begins its ru_maxrss at this one's) unless an earlier run left it.
func ftData(w, log io.Writer, self, dir string, o ftOptions) (string, error) {
	out := filepath.Join(dir, fmt.Sprintf("data-v%d", o.Vocab))
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err == nil {
		fmt.Fprintf(w, "reusing the data in %s\n", out)
		return out, nil
	}
	tmp := out + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	args := []string{"data", "prepare", "--vocab", strconv.Itoa(o.Vocab), "--out", tmp}
	for _, in := range o.Inputs {
		args = append(args, "--input", in)
	}
	c := exec.Command(self, args...)
	var errb bytes.Buffer
	c.Stdout, c.Stderr = log, &errb
	if err := c.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			return "", inputf("--input: %s", strings.TrimSpace(errb.String()))
		}
		return "", fmt.Errorf("qat data prepare: %v\n%s", err, errb.String())
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	return out, nil
}

// ftYAML is the part of a run config every configuration shares.
func ftYAML(model, dataDir, outDir string, o ftOptions) string {
	return fmt.Sprintf(`init_from: %s
data: {dir: %s}
train: {steps: %d, batch: %d, seq: %d, lr: 1.0e-5, warmup: 1, threads: %d, eval_every: %d, ckpt_every: %d}
out_dir: %s
`, strconv.Quote(model), strconv.Quote(dataDir), o.Steps, o.Batch, o.Seq, o.Threads, o.Steps, o.Steps, strconv.Quote(outDir))
}

// ftRunChild runs `qat bench finetune --run cfg` and returns its result
// and peak RSS. Its stderr (the run's log, a line per step) is passed on
// prefixed with key as the progress; the child is killed when the
// machine's available memory falls under minFree bytes.
func ftRunChild(log io.Writer, self, key, cfg string, steps int, minFree int64) (ftResult, int64, error) {
	c := exec.Command(self, "bench", "finetune", "--run", cfg, "--steps", strconv.Itoa(steps))
	var out bytes.Buffer
	c.Stdout = &out
	pr, pw := io.Pipe()
	c.Stderr = pw
	var tail []string
	fwd := make(chan struct{})
	go func() {
		defer close(fwd)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintf(log, "[%s] %s\n", key, sc.Text())
			tail = append(tail, sc.Text())
			if len(tail) > 20 {
				tail = tail[1:]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	if err := c.Start(); err != nil {
		return ftResult{}, 0, err
	}
	// the watchdog says why it killed the child on its channel
	killed := make(chan string, 1)
	done := make(chan struct{})
	var wd sync.WaitGroup
	wd.Add(1)
	go func() {
		defer wd.Done()
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				if a := memAvailable(); minFree > 0 && a > 0 && a < minFree {
					killed <- fmt.Sprintf("stopped: the machine's available memory fell to %.2f GB (--min-free %.2f)", gb(a), gb(minFree))
					c.Process.Kill()
					return
				}
			}
		}
	}()
	err := c.Wait()
	close(done)
	wd.Wait()
	pw.Close()
	<-fwd
	var lowMem string
	select {
	case lowMem = <-killed:
	default:
	}
	if lowMem != "" {
		return ftResult{}, 0, fmt.Errorf("[%s] %s", key, lowMem)
	}
	if err != nil {
		msg := fmt.Sprintf("[%s] %v:\n%s", key, err, strings.Join(tail, "\n"))
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			return ftResult{}, 0, inputf("%s", msg)
		}
		return ftResult{}, 0, errors.New(msg)
	}
	var r ftResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return r, 0, fmt.Errorf("[%s] the child printed %q: %v", key, out.String(), err)
	}
	ru := c.ProcessState.SysUsage().(*syscall.Rusage)
	return r, ru.Maxrss << 10, nil // kilobytes on Linux
}

// memEstimate is where a configuration's memory goes, computed from the
// tensor sizes (bytes). Activations is a rough count of what the tape
// keeps per token; Buffers what the quantizers or adapters hold per step.
type memEstimate struct {
	Trainable   int64 `json:"trainable"`
	Weights     int64 `json:"weights"`   // float32 values of the model's tensors, trained or frozen
	Int8Base    int64 `json:"int8_base"` // LR-QAT's frozen int8 weights
	Grads       int64 `json:"grads"`     // float32 gradients of the trained tensors
	States      int64 `json:"states"`    // AdamW moments
	Adapters    int64 `json:"adapters"`  // float32 values of the adapters and their scales
	Buffers     int64 `json:"buffers"`   // fake-quant weights (QAT) or the rebuilt weight (LR-QAT)
	Activations int64 `json:"activations"`
}

func (e memEstimate) Total() int64 {
	return e.Weights + e.Int8Base + e.Grads + e.States + e.Adapters + e.Buffers + e.Activations
}

// estimateMemory walks the model's tensors (layers.Config.Shapes) and
// counts each one's bytes as configuration key keeps them:
//   - qat: every tensor trains (gradient, 8-bit moments); each linear of
//     the blocks also has, per step, its fake-quant weight, that weight's
//     gradient and a one-byte mask on the tape (9 bytes per weight);
//   - lrqat: the blocks' linears become int8 codes plus rank x (rows +
//     cols) adapters and one scale per 32 inputs, the only trained
//     tensors; embeddings, head and norms stay frozen float32; one
//     linear's weight is rebuilt at a time (two float32 buffers and two
//     byte buffers of the largest, pooled);
//   - fp32: every tensor trains with fp32 moments.
//
// Moments are those of optim.States: 8-bit (one byte each plus a float32
// absmax per 256) for tensors of 4096 values or more, fp32 below.
// Activations count the values and gradients of each block's outputs per
// token (9 dim + 3 kv + 3 ffn floats: norms, q/k/v, RoPE, attention,
// projections, residuals, SwiGLU) and the logits with their gradient and
// softmax.
func estimateMemory(c layers.Config, key string, rank, batch, seq int) memEstimate {
	var e memEstimate
	moments := func(n int64, int8 bool) int64 {
		if !int8 || n < 4096 {
			return 8 * n
		}
		return 2*n + 8*((n+255)/256)
	}
	var maxLin int64
	for _, t := range c.Shapes() {
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		lin := len(t.Shape) == 2 && strings.HasPrefix(t.Name, "model.layers.")
		switch key {
		case "fp32":
			e.Trainable += n
			e.Weights += 4 * n
			e.States += moments(n, false)
		case "qat":
			e.Trainable += n
			e.Weights += 4 * n
			e.States += moments(n, true)
			if lin {
				e.Buffers += 9 * n
			}
		case "lrqat":
			if !lin {
				e.Weights += 4 * n
				continue
			}
			rows, cols := int64(t.Shape[0]), int64(t.Shape[1])
			r := int64(min(rank, t.Shape[0], t.Shape[1]))
			e.Int8Base += n
			for _, m := range []int64{rows * r, r * cols, n / 32} {
				e.Trainable += m
				e.Adapters += 4 * m
				e.States += moments(m, true)
			}
			maxLin = max(maxLin, n)
		}
	}
	e.Grads = 4 * e.Trainable
	e.Buffers += 2 * (8 + 2) * maxLin
	kv := int64(c.HeadDim() * c.KVHeads)
	perToken := int64(c.Layers)*(9*int64(c.Dim)+3*kv+3*int64(c.FFNHidden)) + 2*int64(c.Dim) + int64(c.Vocab)
	e.Activations = 4 * int64(batch*seq) * (2*perToken + int64(c.Vocab))
	return e
}

// median of the steps after the first (the first allocates the tape's
// buffers and the optimizer's moments).
func stepMedian(s []float64) float64 {
	if len(s) < 2 {
		return 0
	}
	t := slices.Clone(s[1:])
	slices.Sort(t)
	if len(t)%2 == 1 {
		return t[len(t)/2]
	}
	return (t[len(t)/2-1] + t[len(t)/2]) / 2
}

func writeFinetuneTable(w io.Writer, mc layers.Config, o ftOptions, rows []ftMeasured) {
	params, _ := mc.Params()
	f32 := 4 * int64(params)
	tokens := float64(o.Batch * o.Seq)
	fmt.Fprintf(w, "\n%-34s %13s %8s %9s %8s %8s %8s %9s %9s\n", "config", "trainable", "step s", "tokens/s", "GFLOP/s", "peak GB", "/f32", "load GB", "steps GB")
	for _, m := range rows {
		if m.Skipped != "" {
			fmt.Fprintf(w, "%-34s skipped: %s\n", m.Run.Label, m.Skipped)
			continue
		}
		st := stepMedian(m.Res.Steps)
		fmt.Fprintf(w, "%-34s %13d %8.2f %9.1f %8.1f %8.2f %7.2fx %9s %9s\n", m.Run.Label, m.Res.Trainable, st, tokens/st,
			mc.FLOPsPerToken(o.Seq)*tokens/st/1e9, gb(m.Peak), float64(m.Peak)/float64(f32), gbOrDash(m.Res.HWMOpen), gbOrDash(m.Res.StepPeak))
	}
	fmt.Fprintf(w, "(step s: median of steps 2..%d; GFLOP/s: the model's 6N + attention FLOPs per token; peak: the child's ru_maxrss;\n"+
		" /f32: peak over the float32 weights, %.2f GB; load: peak when the run was open; steps: largest RSS sampled during the steps)\n", o.Steps, gb(f32))
	fmt.Fprintf(w, "\nmemory estimate from the tensor sizes, GB (not measured: activations are a rough count of the tape's tensors)\n")
	fmt.Fprintf(w, "%-34s %8s %8s %8s %8s %8s %8s %8s %8s\n", "config", "weights", "int8", "grads", "states", "adapter", "buffers", "activ", "sum")
	for _, m := range rows {
		e := m.Est
		fmt.Fprintf(w, "%-34s %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f\n", m.Run.Label, gb(e.Weights), gb(e.Int8Base),
			gb(e.Grads), gb(e.States), gb(e.Adapters), gb(e.Buffers), gb(e.Activations), gb(e.Total()))
		if m.Skipped == "" && (int64(m.Res.Trainable) != e.Trainable || int64(m.Res.StateBytes) != e.States || int64(m.Res.FrozenInt8) != e.Int8Base) {
			fmt.Fprintf(w, "%-34s the run has %d trainable, %.2f GB states, %.2f GB int8: the estimate's layout is out of date\n", "",
				m.Res.Trainable, gb(int64(m.Res.StateBytes)), gb(int64(m.Res.FrozenInt8)))
		}
	}
	fmt.Fprintf(w, "(weights: float32 tensors, trained or frozen; int8: LR-QAT's frozen base; buffers: per-step fake-quant weights with\n"+
		" their gradients and masks (QAT) or LR-QAT's rebuilt weight; activations: block outputs and logits with gradients)\n")
}

func gbOrDash(n int64) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", gb(n))
}

func appendFinetuneJSON(path, model string, mc layers.Config, o ftOptions, rows []ftMeasured) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return inputf("--json: %v", err)
	}
	defer f.Close()
	params, _ := mc.Params()
	for _, m := range rows {
		rec := map[string]any{"kind": "finetune", "config": m.Run.Key, "label": m.Run.Label, "model": model, "params": params,
			"batch": o.Batch, "seq": o.Seq, "threads": o.Threads, "estimate": m.Est, "estimate_bytes": m.Est.Total()}
		if m.Skipped != "" {
			rec["skipped"] = m.Skipped
		} else {
			st := stepMedian(m.Res.Steps)
			rec["result"], rec["peak_rss_bytes"], rec["step_seconds_median"] = m.Res, m.Peak, st
			rec["tokens_per_s"] = float64(o.Batch*o.Seq) / st
		}
		b, _ := json.Marshal(rec)
		if _, err := f.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}

func memAvailable() int64 { return meminfo("MemAvailable") }
func memTotal() int64     { return meminfo("MemTotal") }

func meminfo(key string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	return meminfoField(b, key)
}

// loadAvg is /proc/loadavg's three averages, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
