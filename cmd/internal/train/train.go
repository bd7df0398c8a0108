// Package train runs training: one Step at a time over a model, an
// optimizer and a data loader, with hooks for logging and progress,
// evaluation, checkpoints and plots (the shape of gomlx's train loop).
// Checkpoints hold everything needed to continue bit for bit.
package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"qat/autograd"
	"qat/checkpoint"
	"qat/cmd/internal/config"
	"qat/data"
	"qat/data/atomic"
	"qat/data/bpe"
	"qat/dist"
	"qat/engine"
	"qat/engine/device"
	"qat/engine/dp"
	_ "qat/engine/gorgonia" // registers the gorgonia engine
	_ "qat/engine/tape"     // registers the tape engine
	"qat/eval"
	"qat/kernels"
	"qat/layers"
	"qat/lora"
	"qat/optim"
	"qat/qat"
	"qat/qat/ptq"
	"qat/qat/rotate"
)

// Run is one training run.
type Run struct {
	Cfg    *config.Config
	Model  *layers.Model
	Tok    *bpe.Tokenizer
	Opt    *optim.AdamW
	Loader *data.Loader
	Val    *data.Dataset
	State  State
	Log    io.Writer

	params   []layers.Param
	vars     []*autograd.Var
	eng      engine.Engine // computes each micro-batch's loss and gradients
	ids, tgt []int32
	metrics  *os.File
	curve    []point
	hooks    []Hook // AddHook's
	own      []Hook // evaluation, checkpoints and plots, after the others
	taps     map[string]*qat.Kurtosis

	lock      *atomic.RunLock // held on Cfg.OutDir until Close (by the lead process)
	comm      dist.Comm       // the job's processes (nil: this one alone)
	dp        *dp.Engine      // the data-parallel engine of a --distributed run
	sharded   bool            // optimizer.shard: this process holds its part of the moments
	savedStep int             // the step of the newest checkpoint written or loaded
	stop      chan os.Signal  // Interrupt's signal, taken by Loop
}

// StepResult is what one step measured.
type StepResult struct {
	Step      int
	Loss      float64
	LR        float64
	GradNorm  float64
	TokensSec float64
}

// Hook is called after every step; an error stops the run.
type Hook func(r *Run, s StepResult) error

type point struct {
	Step      int     `json:"step"`
	Loss      float64 `json:"loss,omitempty"`
	LR        float64 `json:"lr,omitempty"`
	GradNorm  float64 `json:"grad_norm,omitempty"`
	TokensSec float64 `json:"tokens_per_s,omitempty"`
	ValLoss   float64 `json:"val_loss,omitempty"`
	ValPPL    float64 `json:"val_ppl,omitempty"`
	ValBPB    float64 `json:"val_bpb,omitempty"`
	// The whole validation split, at the end of a run.
	FullValLoss float64 `json:"full_val_loss,omitempty"`
	FullValBPB  float64 `json:"full_val_bpb,omitempty"`
	// Mean kurtosis of each linear layer's input (or, with
	// quant.kurtosis.on: output, its product) over the evaluation.
	Kurtosis map[string]float64 `json:"kurtosis,omitempty"`
}

func inputErr(err error) error {
	var ie *data.InputError
	if errors.As(err, &ie) || config.IsInput(err) {
		return &config.InputError{Err: err}
	}
	return err
}

// Options are Open's choices beyond the config.
type Options struct {
	// Resume continues from out_dir's latest checkpoint (a run without one
	// starts fresh).
	Resume bool
	// Overrides are the --set key=value pairs applied to the config: a
	// resumed run may change what its checkpoint's data position depends
	// on (data.dir, train.batch, train.seq, train.seed) only where one of
	// them names the key.
	Overrides []string
	// Comm is the job this process is one of (a --distributed run): every
	// process builds the same model, the lead (rank 0) alone owns and
	// writes out_dir, which must be a directory all of them read (they
	// resume from its checkpoints).
	Comm dist.Comm
}

// Open prepares a run from its config: data, tokenizer, model (fresh,
// from init_from, or, with resume, from the latest checkpoint in out_dir).
func Open(cfg *config.Config, resume bool, log io.Writer) (*Run, error) {
	return OpenWith(cfg, Options{Resume: resume}, log)
}

// OpenWith is Open with Options. The run holds out_dir's exclusive lock
// until Close (a second process gets a *atomic.BusyError); a fresh run
// starts only in a new, empty or qat run directory.
func OpenWith(cfg *config.Config, opt Options, log io.Writer) (r *Run, err error) {
	resume := opt.Resume
	comm := opt.Comm
	lead := comm == nil || comm.Rank() == 0
	if cfg.Optimizer.Shard && comm == nil {
		return nil, &config.InputError{Err: errors.New("optimizer.shard: true shards the moments over the processes of a --distributed run; this run is one process")}
	}
	var lock *atomic.RunLock
	if lead {
		if err := claimOutDir(cfg.OutDir); err != nil {
			return nil, err
		}
		lock, err = atomic.Lock(cfg.OutDir)
		if err != nil {
			var be *atomic.BusyError
			if errors.As(err, &be) {
				return nil, err
			}
			return nil, &config.InputError{Err: fmt.Errorf("out_dir: %w", err)}
		}
		defer func() {
			if err != nil {
				lock.Unlock()
			}
		}()
		// temporaries of a killed attempt (half-written checkpoints)
		atomic.CleanTemps(cfg.OutDir)
	}
	kernels.SetThreads(cfg.Train.Threads)
	tok, err := bpe.Load(filepath.Join(cfg.Data.Dir, "tokenizer.json"))
	if err != nil {
		return nil, &config.InputError{Err: fmt.Errorf("data.dir: %w", err)}
	}
	// Hugging Face models often pad the embedding past the tokenizer
	// (Qwen2: 151,936 rows for 151,665 tokens): more rows are fine, fewer
	// would leave ids without one.
	if tok.VocabSize() > cfg.Model.Vocab || (cfg.InitFrom == "" && tok.VocabSize() != cfg.Model.Vocab) {
		return nil, &config.InputError{Err: fmt.Errorf("model.vocab %d does not match the tokenizer of %s (%d tokens)",
			cfg.Model.Vocab, cfg.Data.Dir, tok.VocabSize())}
	}
	train, err := data.LoadSplit(cfg.Data.Dir, "train", cfg.Model.Vocab)
	if err != nil {
		return nil, inputErr(err)
	}
	val, err := data.LoadSplit(cfg.Data.Dir, "validation", cfg.Model.Vocab)
	if err != nil {
		return nil, inputErr(err)
	}
	loader, err := data.NewLoader(train, cfg.Train.Batch, cfg.Train.Seq, cfg.Train.Seed)
	if err != nil {
		return nil, inputErr(err)
	}
	latest, err := checkpoint.Latest(cfg.OutDir)
	if err != nil {
		return nil, &config.InputError{Err: err}
	}
	if comm != nil {
		// every process starts from the lead's checkpoint, read where it is
		if err := agree(comm, "out_dir's latest checkpoint", latest,
			"out_dir must be a directory every process reads (a shared filesystem)"); err != nil {
			return nil, &config.InputError{Err: err}
		}
	}
	// quant.rotate: a fresh run rotates init_from's model, which is built
	// as init_from has it (a run whose config.yaml already records the
	// rotated model, resumed before its first checkpoint, starts over from
	// init_from too); a resumed run loads its rotated checkpoint
	rotateNow := cfg.Quant.Rotate != "" && !(resume && latest != "") && cfg.InitFrom != ""
	mc := cfg.Model
	if rotateNow {
		if mc, err = unrotated(cfg); err != nil {
			return nil, &config.InputError{Err: fmt.Errorf("init_from: %w", err)}
		}
	}
	m := layers.New(mc)
	m.Init(cfg.Train.Seed)
	switch {
	case resume && latest != "":
	case latest != "":
		return nil, &config.InputError{Err: fmt.Errorf("out_dir %s already holds checkpoints: use --resume or another out_dir", cfg.OutDir)}
	case resume && cfg.InitFrom == "":
		fmt.Fprintf(log, "no checkpoint in %s: starting fresh\n", cfg.OutDir)
	case cfg.InitFrom != "":
		// a fresh run, or a resumed one killed before its first
		// checkpoint, which starts as the fresh run did
		if resume {
			fmt.Fprintf(log, "no checkpoint in %s: starting fresh\n", cfg.OutDir)
		}
		dir, err := checkpoint.Resolve(cfg.InitFrom)
		if err != nil {
			return nil, &config.InputError{Err: fmt.Errorf("init_from: %w", err)}
		}
		if err := checkpoint.LoadWeights(dir, m); err != nil {
			return nil, &config.InputError{Err: fmt.Errorf("init_from: %w", err)}
		}
		fmt.Fprintf(log, "initialised from %s\n", dir)
		if rotateNow {
			rep, err := rotate.Hadamard(m, cfg.Train.Seed, log)
			if err != nil {
				return nil, &config.InputError{Err: fmt.Errorf("quant.rotate: %w", err)}
			}
			// the run's model is the rotated one: its config.yaml, and
			// so a resume, builds that (untied, with the online transform)
			cfg.Model = m.Config
			untied := ""
			if rep.Untied {
				untied = "; the tied head was untied"
			}
			fmt.Fprintf(log, "rotated: residual stream by %s, down_proj input by the %s Hadamard transform of size %d%s\n",
				rep.Residual, rep.Online, m.FFNHidden, untied)
		}
	}
	// Quantizers go on after the starting weights are in place: LSQ steps
	// start from them (a resumed run then loads its trained steps).
	var taps map[string]*qat.Kurtosis
	fresh := !(resume && latest != "")
	calib := ptq.Calibration{Data: train, Batch: cfg.Train.Batch, Seq: cfg.Train.Seq, Batches: cfg.Quant.CalibBatches,
		Seed: cfg.Train.Seed, Progress: log}
	if rules := cfg.QuantRules(); len(rules) > 0 || cfg.Quant.Kurtosis.Coef > 0 {
		// a post-training start (a resumed run has its trained state)
		if init := cfg.Quant.Init; fresh && (init == ptq.GPTQ || init == ptq.QQQ || init == ptq.GWQ) {
			_, rep, err := ptq.Quantize(m, rules, ptq.Options{Method: init, GWQBase: ptq.RTN, GPTQ: qat.DefaultGPTQ}, calib)
			if err != nil {
				return nil, &config.InputError{Err: fmt.Errorf("quant.init %s: %w", init, err)}
			}
			switch init {
			case ptq.GWQ:
				fmt.Fprintf(log, "gwq: kept %d weights of %d linear layers in fp16 (the largest |dL/dW|); QAT starts from them\n", rep.Kept, rep.Outliers)
			case ptq.QQQ:
				fmt.Fprintf(log, "qqq: smoothed the inputs of %d linear groups\n", rep.Smoothed)
				fallthrough
			default:
				fmt.Fprintf(log, "%s: quantized %d linear layers on %d batches; QAT starts from them\n", init, rep.Quantized, calib.Batches)
			}
		} else if err := qat.Prepare(m, rules); err != nil {
			return nil, &config.InputError{Err: err}
		}
		// Every linear's input (or output: quant.kurtosis.on) kurtosis is
		// measured, and regularised where quant.kurtosis says, so
		// evaluations can log it per layer.
		if taps, err = qat.Taps(m, cfg.Quant.Kurtosis); err != nil {
			return nil, &config.InputError{Err: fmt.Errorf("quant.kurtosis.match: %w", err)}
		}
		// training steps do not measure (before the replicas copy the taps)
		qat.Measure(taps, false)
	}
	// Adapters go on last: LR-QAT takes its grid and initial scales from
	// the weight quantizers, and its frozen base from the loaded weights.
	if cfg.Lora != nil {
		n, err := lora.Prepare(m, *cfg.Lora, cfg.Train.Seed)
		if err != nil {
			return nil, &config.InputError{Err: err}
		}
		fmt.Fprintf(log, "%s adapters (rank %d) on %d linear layers\n", cfg.Lora.Method, cfg.Lora.Defaults().Rank, n)
	}
	r = &Run{Cfg: cfg, Model: m, Tok: tok, Loader: loader, Val: val, Log: log, params: m.Params(),
		State: State{Seed: cfg.Train.Seed}, taps: taps, lock: lock, comm: comm, stop: make(chan os.Signal, 1)}
	r.own = []Hook{Every(cfg.Train.EvalEvery, (*Run).evaluate), Every(cfg.Train.CkptEvery, (*Run).checkpointAndPlot)}
	var ops []optim.Param
	var trainable, frozen int
	for _, p := range r.params {
		if cfg.Lora != nil && !lora.Trainable(p) {
			p.Var.SetRequiresGrad(false)
			frozen += p.Var.Size()
			continue
		}
		op := optim.Param{Name: p.Name, Var: p.Var, Decay: len(p.Var.Shape()) > 1 && !p.Quant}
		if cfg.Lora != nil {
			op.LRScale = cfg.Lora.LRScale(p)
		}
		ops = append(ops, op)
		r.vars = append(r.vars, p.Var)
		trainable += p.Var.Size()
	}
	o := cfg.Optimizer
	moments := o.States.Factory()
	if o.Shard {
		// ZeRO-1: this process keeps the moments of the tensors whose
		// gradients it sums (engine/dp's partition), whole tensors
		mine := map[*autograd.Var]bool{}
		for _, i := range dp.Owners(m, comm.Size())[comm.Rank()] {
			mine[r.params[i].Var] = true
		}
		moments = optim.Shard(moments, func(p optim.Param) bool { return mine[p.Var] })
		r.sharded = true
	}
	r.Opt = optim.NewAdamW(optim.AdamWConfig{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay}, ops, moments)
	fb := frozenBytes(m)
	where := ""
	if r.sharded {
		where = fmt.Sprintf(" (this process's share, 1 of %d)", comm.Size())
	}
	fmt.Fprintf(log, "parameters: %d trainable, %d frozen float32 + %d frozen int8; bytes: weights %s, gradients %s, optimizer states %s%s\n",
		trainable, frozen, fb, mib(4*(trainable+frozen)+fb), mib(4*trainable), mib(r.Opt.StateBytes()), where)
	r.ids, r.tgt = make([]int32, cfg.Train.Batch*cfg.Train.Seq), make([]int32, cfg.Train.Batch*cfg.Train.Seq)
	if qat.NeedsCalibration(m) && !(resume && latest != "") {
		n, err := ptq.Calibrate(m, calib)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "calibrated %d activation quantizers on %d batches\n", n, cfg.Quant.CalibBatches)
	}
	if resume && latest != "" {
		if err := r.loadCheckpoint(latest, opt.Overrides); err != nil {
			return nil, &config.InputError{Err: err}
		}
		r.savedStep = r.State.Step
		fmt.Fprintf(log, "resuming from %s at step %d\n", latest, r.State.Step)
	}
	if comm != nil {
		// the lead's weights, whatever each process loaded or drew
		for _, p := range r.params {
			if err := comm.BcastF32(p.Var.Data(), 0); err != nil {
				return nil, err
			}
		}
	}
	// The engine is built last, over the loaded, prepared and calibrated
	// model (the Gorgonia graph binds the weights' memory).
	name := EngineName(cfg.Train)
	eo := engine.Options{Batch: cfg.Train.Batch, Seq: cfg.Train.Seq, Threads: cfg.Train.Threads}
	switch {
	case comm != nil && name == "cuda":
		return nil, &config.InputError{Err: errors.New("train.device cuda: a --distributed run computes on the CPU engines (tape, gorgonia)")}
	case comm != nil:
		if r.dp, err = dp.New(comm, name, m, eo); err == nil {
			r.eng = r.dp
		}
	default:
		r.eng, err = engine.New(name, m, eo)
	}
	if err != nil {
		key := "train.engine " + name // named as the config selects it
		if name == "cuda" {
			key = "train.device cuda"
		}
		return nil, &config.InputError{Err: fmt.Errorf("%s: %w", key, err)}
	}
	switch name {
	case "gorgonia":
		fmt.Fprintf(log, "engine: gorgonia (ExprGraph + TapeMachine, %d trained tensors)\n", len(r.vars))
	case "cuda":
		fmt.Fprintf(log, "device: %s (the step on the GPU; optimizer on the CPU)\n", device.DeviceName(r.eng))
	}
	if comm != nil {
		fmt.Fprintf(log, "data parallel: %d processes, %d rows of each %d-row batch on the lead, %d threads each\n",
			comm.Size(), cfg.Train.Batch/comm.Size(), cfg.Train.Batch, cfg.Train.Threads)
	}
	if !lead {
		return r, nil
	}
	if err := r.openMetrics(); err != nil {
		return nil, err
	}
	return r, nil
}

// lead says whether this process writes the run's files: the only one,
// or rank 0 of a --distributed job.
func (r *Run) lead() bool { return r.comm == nil || r.comm.Rank() == 0 }

// agree checks that every process of comm holds the lead's value of what
// (each process gets the same verdict, so none waits for another that
// gave up); hint says what to fix.
func agree(comm dist.Comm, what, value, hint string) error {
	n := len(value)
	size := []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}
	if err := comm.Bcast(size, 0); err != nil {
		return err
	}
	lead := make([]byte, int(size[0])|int(size[1])<<8|int(size[2])<<16|int(size[3])<<24)
	copy(lead, value)
	if err := comm.Bcast(lead, 0); err != nil {
		return err
	}
	same := float32(1)
	if string(lead) != value {
		same = 0
	}
	all, err := dist.AllgatherOne(comm, same)
	if err != nil {
		return err
	}
	for p, ok := range all {
		if ok == 0 {
			return fmt.Errorf("process %d of %d sees another %s than the lead (%q): %s", p, comm.Size(), what, string(lead), hint)
		}
	}
	return nil
}

// openMetrics keeps the lines of metrics.jsonl up to the resumed step (a
// killed run may have logged past its last checkpoint) and appends after.
func (r *Run) openMetrics() error {
	path := filepath.Join(r.Cfg.OutDir, "metrics.jsonl")
	var keep []byte
	if b, err := os.ReadFile(path); err == nil {
		for _, line := range splitLines(b) {
			var p point
			if json.Unmarshal(line, &p) == nil && p.Step <= r.State.Step {
				keep = append(append(keep, line...), '\n')
				r.curve = append(r.curve, p)
			}
		}
	}
	if err := atomic.WriteFile(path, keep); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	r.metrics = f
	return err
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if i > 0 {
			out = append(out, b[:i])
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}

func (r *Run) record(p point) error {
	r.curve = append(r.curve, p)
	if r.metrics == nil { // not the lead of a --distributed run
		return nil
	}
	b, _ := json.Marshal(p)
	_, err := r.metrics.Write(append(b, '\n'))
	return err
}

// LR is the learning rate at step (0-based): linear warmup, then cosine
// decay from train.lr to train.min_lr at the last step.
func LR(t config.Train, step int) float64 {
	if step < t.Warmup {
		return t.LR * float64(step+1) / float64(t.Warmup)
	}
	span := max(1, t.Steps-t.Warmup)
	p := math.Min(1, float64(step-t.Warmup)/float64(span))
	return t.MinLR + 0.5*(t.LR-t.MinLR)*(1+math.Cos(math.Pi*p))
}

// ErrNonFinite is returned when the loss or gradient norm is NaN or Inf.
var ErrNonFinite = errors.New("loss is not finite")

// Step runs one optimizer step (grad_accum micro-batches) and returns what
// it measured. A NaN or Inf loss or gradient norm returns ErrNonFinite
// before the weights change.
func (r *Run) Step() (StepResult, error) {
	t0 := time.Now()
	tc := r.Cfg.Train
	autograd.ZeroGrad(r.vars...)
	var loss float64
	for a := 0; a < tc.GradAccum; a++ {
		r.Loader.Next(r.ids, r.tgt)
		l, err := r.eng.LossBackward(r.ids, r.tgt)
		if err != nil {
			return StepResult{Step: r.State.Step + 1}, err
		}
		loss += float64(l)
	}
	loss /= float64(tc.GradAccum)
	if tc.GradAccum > 1 {
		s := float32(1 / float64(tc.GradAccum))
		for _, v := range r.vars {
			kernels.Active.Scale(v.GradData(), v.GradData(), s)
		}
	}
	norm := optim.ClipGradNorm(r.vars, tc.GradClip)
	step := r.State.Step
	if math.IsNaN(loss) || math.IsInf(loss, 0) || math.IsNaN(norm) || math.IsInf(norm, 0) {
		return StepResult{Step: step + 1, Loss: loss}, fmt.Errorf("step %d: %w (loss %g, gradient norm %g); the last checkpoint in %s is intact",
			step+1, ErrNonFinite, loss, norm, r.Cfg.OutDir)
	}
	lr := LR(tc, step)
	r.Opt.Update(lr)
	if r.sharded {
		// each process updated its own tensors: share them
		if err := r.dp.AllgatherWeights(); err != nil {
			return StepResult{Step: step + 1, Loss: loss}, err
		}
	}
	r.State.Step++
	r.State.Data = r.Loader.Position()
	r.State.Tokens += int64(tc.GradAccum * tc.Batch * tc.Seq)
	r.State.LastLoss = loss
	return StepResult{Step: r.State.Step, Loss: loss, LR: lr, GradNorm: norm,
		TokensSec: float64(tc.GradAccum*tc.Batch*tc.Seq) / time.Since(t0).Seconds()}, nil
}

// AddHook appends a hook run after every step, in order.
func (r *Run) AddHook(h Hook) { r.hooks = append(r.hooks, h) }

// Close releases the engine and the run directory's lock.
func (r *Run) Close() error {
	err := r.eng.Close()
	if r.lock != nil {
		err = errors.Join(err, r.lock.Unlock())
	}
	return err
}

// EngineName is the registered engine a run's train section selects:
// train.device cuda runs the "cuda" engine, else train.engine ("tape" by
// default).
func EngineName(t config.Train) string {
	switch {
	case t.Device == "cuda":
		return "cuda"
	case t.Engine == "":
		return "tape"
	}
	return t.Engine
}

// Interrupt asks Loop to stop after the step in progress, write a
// checkpoint and return an *Interrupted error carrying sig. It does not
// wait, and is safe from a signal handler's goroutine.
func (r *Run) Interrupt(sig os.Signal) {
	select {
	case r.stop <- sig:
	default:
	}
}

// ErrInterrupted matches (errors.Is) the error Loop returns when it stopped
// early on Interrupt, its checkpoint written.
var ErrInterrupted = errors.New("interrupted")

// Interrupted is Loop's error after an Interrupt: the run stopped at Step
// with a checkpoint there (when a step had run), and `qat train --resume`
// continues it exactly.
type Interrupted struct {
	Signal os.Signal
	Step   int
	Dir    string // the run directory
}

func (e *Interrupted) Error() string {
	return fmt.Sprintf("stopped by %v at step %d; checkpoint written: qat train --resume %s continues the run", e.Signal, e.Step, e.Dir)
}

func (e *Interrupted) Is(target error) bool { return target == ErrInterrupted }

// ExitCode is the shell's status for a process killed by the signal:
// 128+n (143 for SIGTERM, 130 for SIGINT), as schedulers expect.
func (e *Interrupted) ExitCode() int {
	if s, ok := e.Signal.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// HandleSignals turns the first SIGTERM or SIGINT into r.Interrupt (the
// step finishes and is checkpointed). With exitOnRepeat, a second signal a
// second or more later exits at once, the last checkpoint intact (a person
// at a terminal); without, repeats are logged and ignored (a scheduler's
// grace period ends in SIGKILL anyway). A repeat within a second is always
// the same request: Slurm signals every process of a job and its batch
// script passes the signal on too. The returned function stops handling.
func HandleSignals(r *Run, log io.Writer, exitOnRepeat bool) (stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		var first time.Time
		for {
			select {
			case sig := <-ch:
				if !first.IsZero() && (!exitOnRepeat || time.Since(first) < time.Second) {
					fmt.Fprintf(log, "\n%v again: already stopping after this step\n", sig)
					continue
				}
				if !first.IsZero() {
					fmt.Fprintf(log, "\n%v again: exiting now; the last checkpoint is intact\n", sig)
					os.Exit(128 + int(sig.(syscall.Signal)))
				}
				first = time.Now()
				if exitOnRepeat {
					fmt.Fprintf(log, "\n%v: finishing step %d and writing a checkpoint (again to exit at once)\n", sig, r.State.Step+1)
				} else {
					fmt.Fprintf(log, "\n%v: finishing the step and writing a checkpoint\n", sig)
				}
				r.Interrupt(sig)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// Loop runs steps until train.steps, calling the hooks after each: those
// of AddHook, then the run's evaluation (every train.eval_every steps and
// at the end) and checkpoint with its loss plot (every train.ckpt_every
// and at the end). After an Interrupt it checkpoints the
// step it finished and returns an *Interrupted.
func (r *Run) Loop() error {
	if r.metrics != nil {
		defer r.metrics.Close()
	}
	tc := r.Cfg.Train
	for r.State.Step < tc.Steps {
		sig, err := r.stopping()
		if err != nil {
			return err
		}
		if sig != nil {
			if r.State.Step > r.savedStep {
				if err := r.saveCheckpoint(); err != nil {
					return err
				}
			}
			return &Interrupted{Signal: sig, Step: r.State.Step, Dir: r.Cfg.OutDir}
		}
		s, err := r.Step()
		if err != nil {
			return err
		}
		if err := r.record(point{Step: s.Step, Loss: s.Loss, LR: s.LR, GradNorm: s.GradNorm, TokensSec: s.TokensSec}); err != nil {
			return err
		}
		// the caller's hooks (progress), then the run's own: evaluation,
		// then the checkpoint and its plot
		for _, h := range r.hooks {
			if err := h(r, s); err != nil {
				return err
			}
		}
		for _, h := range r.own {
			if err := h(r, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// stopping returns the signal of an Interrupt, if one came. The processes
// of a --distributed run stop together, at the same step: each says
// whether it was signalled (a launcher may signal them a step apart), and
// all stop if one was.
func (r *Run) stopping() (os.Signal, error) {
	var sig os.Signal
	select {
	case sig = <-r.stop:
	default:
	}
	if r.comm == nil {
		return sig, nil
	}
	me := float32(0)
	if s, ok := sig.(syscall.Signal); ok {
		me = float32(s)
	} else if sig != nil {
		me = float32(syscall.SIGTERM)
	}
	flags, err := dist.AllgatherOne(r.comm, me)
	if err != nil {
		return nil, err
	}
	for _, f := range flags {
		if f != 0 && sig == nil {
			sig = syscall.Signal(int(f))
		}
	}
	return sig, nil
}

// checkpointAndPlot writes a checkpoint, then the loss plot beside it (a
// plot that fails is a warning).
func (r *Run) checkpointAndPlot(bool) error {
	if err := r.saveCheckpoint(); err != nil {
		return err
	}
	if !r.lead() {
		return nil
	}
	if err := r.plot(); err != nil {
		fmt.Fprintf(r.Log, "warning: loss plot: %v\n", err)
	}
	return nil
}

// evaluate scores eval_batches batches spread over the validation split
// (the same ones every time, so the curve compares like with like) and, at
// the end of the run, the whole split.
func (r *Run) evaluate(final bool) error {
	if !r.lead() {
		return nil // the lead evaluates and logs for the job
	}
	tc := r.Cfg.Train
	for _, k := range r.taps {
		k.ResetStats()
	}
	qat.Measure(r.taps, true) // measure during evaluation only
	res := eval.Evaluate(r.Model, r.Tok, r.Val, tc.Batch, tc.Seq, tc.EvalBatches)
	qat.Measure(r.taps, false)
	p := point{Step: r.State.Step, ValLoss: res.Loss, ValPPL: res.PPL, ValBPB: res.BPB}
	if len(r.taps) > 0 {
		p.Kurtosis = map[string]float64{}
		var sum, mx float64
		for name, k := range r.taps {
			p.Kurtosis[name] = k.Mean()
			sum += k.Mean()
			mx = math.Max(mx, k.Mean())
		}
		where := "input"
		if r.Cfg.Quant.Kurtosis.Output() {
			where = "output"
		}
		fmt.Fprintf(r.Log, "step %d: linear %s kurtosis mean %.2f, max %.2f\n", r.State.Step, where, sum/float64(len(r.taps)), mx)
	}
	what := "validation"
	if tc.EvalBatches > 0 {
		what = fmt.Sprintf("validation (%d batches)", tc.EvalBatches)
	}
	fmt.Fprintf(r.Log, "step %d: %s loss %.4f, perplexity %.2f, %.3f bits per byte\n", r.State.Step, what, res.Loss, res.PPL, res.BPB)
	if final && tc.EvalBatches > 0 && !tc.NoFinalEval {
		full := eval.Evaluate(r.Model, r.Tok, r.Val, tc.Batch, tc.Seq, 0)
		p.FullValLoss, p.FullValBPB = full.Loss, full.BPB
		fmt.Fprintf(r.Log, "step %d: whole validation split loss %.4f, perplexity %.2f, %.3f bits per byte\n", r.State.Step, full.Loss, full.PPL, full.BPB)
	}
	return r.record(p)
}

// frozenBytes is the size of the quantizers' and adapters' frozen tensors
// (LR-QAT's int8 base weights).
func frozenBytes(m *layers.Model) int {
	n := 0
	for _, nl := range m.Linears() {
		for _, q := range []any{nl.Linear.WeightQuant, nl.Linear.Adapter} {
			if f, ok := q.(layers.FrozenState); ok {
				for _, t := range f.Frozen() {
					n += len(t.Data)
				}
			}
		}
	}
	return n
}

func mib(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Final returns the run's mean training loss over its last tenth of steps
// (at least its last step) and its last validation loss: the whole split
// when the run ended with one.
func (r *Run) Final() (trainLoss, valLoss float64) {
	from := r.State.Step - max(1, r.Cfg.Train.Steps/10)
	var sum float64
	var n int
	for _, p := range r.curve {
		if p.Loss > 0 && p.Step > from {
			sum += p.Loss
			n++
		}
		if p.FullValLoss > 0 {
			valLoss = p.FullValLoss
		} else if p.ValLoss > 0 {
			valLoss = p.ValLoss
		}
	}
	if n > 0 {
		trainLoss = sum / float64(n)
	}
	return trainLoss, valLoss
}

// unrotated is the model config of init_from as the run's model section
// gives it (max_seq may be lower), before quant.rotate: tied as init_from
// is, without the online transform.
func unrotated(cfg *config.Config) (layers.Config, error) {
	dir, err := checkpoint.Resolve(cfg.InitFrom)
	if err != nil {
		return layers.Config{}, err
	}
	init, err := checkpoint.HFConfig(dir)
	if err != nil {
		return layers.Config{}, err
	}
	if init.DownHadamard != "" {
		return layers.Config{}, fmt.Errorf("%s is rotated already (qat_down_hadamard %q): leave quant.rotate out", dir, init.DownHadamard)
	}
	c := cfg.Model
	c.Tied, c.DownHadamard = init.Tied, ""
	return c, nil
}
