package sweep

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/schollz/progressbar/v3"

	"qat/checkpoint"
	"qat/cmd/internal/train"
	"qat/data/atomic"
	"qat/dist"
)

// Result is what one attempt at an entry measured. A success is written to
// RESULTS/ID/result.json; a failure to RESULTS/ID/failure.json, which does
// not make the entry done: the next `sweep run` (a cluster retry, the
// pool's next pass) runs it again, resuming from its checkpoints.
type Result struct {
	Entry
	// Status: ok, or failed (Error says why).
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Attempts counts the attempts that ended in a success or a recorded
	// failure, this one included (a run stopped by a signal is not one).
	Attempts  int     `json:"attempts"`
	TrainLoss float64 `json:"train_loss,omitempty"`
	ValLoss   float64 `json:"val_loss,omitempty"`
	WallS     float64 `json:"wall_s"`
	TokensSec float64 `json:"tokens_per_s,omitempty"`
}

// IndexFromEnv returns the entry index a cluster scheduler gives a task:
// JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs) or SLURM_ARRAY_TASK_ID.
func IndexFromEnv() (int, string, bool) {
	for _, k := range []string{"JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"} {
		if v := os.Getenv(k); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil {
				return -1, k, true
			}
			return i, k, true
		}
	}
	return 0, "", false
}

func (p *Plan) entryDir(e Entry) string { return filepath.Join(p.ResultsDir(), e.ID) }

// ResultPath is where entry i's result goes when it succeeds.
func (p *Plan) ResultPath(i int) string {
	return filepath.Join(p.entryDir(p.Entries[i]), "result.json")
}

// FailurePath is where entry i's last failed attempt is recorded.
func (p *Plan) FailurePath(i int) string {
	return filepath.Join(p.entryDir(p.Entries[i]), "failure.json")
}

// Done reports whether entry i succeeded: it has a result.json with
// status ok. A failure record (or a failed result.json of an older qat)
// leaves it to be run again.
func (p *Plan) Done(i int) bool {
	r, ok, err := readResult(p.ResultPath(i))
	return err == nil && ok && r.Status == "ok"
}

// FailedError is a recorded failure of an entry. It does not unwrap to
// its cause: whatever failed (a missing data directory included), the
// entry's exit status is 1, the one that cluster retries and the pool
// read as "run it again".
type FailedError struct {
	Index    int
	ID       string
	Attempts int
	// Record is the failure record's path.
	Record string
	Err    error
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("entry %d (%s) failed (attempt %d), recorded in %s: %v", e.Index, e.ID, e.Attempts, e.Record, e.Err)
}

// Run trains entry i unless it has succeeded, resuming from the entry's
// last checkpoint when an earlier attempt was stopped. It holds the
// entry directory's lock throughout: a second process running the same
// entry gets a *atomic.BusyError. A SIGTERM or SIGINT finishes the step,
// writes a checkpoint and returns an error matching train.ErrInterrupted,
// recording nothing (the next attempt resumes). Any other failure (a bad
// data directory, a non-finite loss, a panic) is recorded in
// FailurePath(i) with the attempt count and returned as a *FailedError;
// skipped reports an entry that had already succeeded.
func (p *Plan) Run(i int, log io.Writer) (skipped bool, err error) { return p.RunIn(i, log, nil) }

// RunIn is Run as one process of a data-parallel job (comm; nil: Run):
// the lead (rank 0) holds the entry's lock, decides for all whether it is
// done, and writes its run directory, result and failure record; every
// process trains (train.Options.Comm).
func (p *Plan) RunIn(i int, log io.Writer, comm dist.Comm) (skipped bool, err error) {
	if i < 0 || i >= len(p.Entries) {
		return false, fmt.Errorf("entry %d: the plan has entries 0 to %d", i, len(p.Entries)-1)
	}
	e := p.Entries[i]
	lead := comm == nil || comm.Rank() == 0
	done := []byte{0}
	if lead {
		lock, err := atomic.Lock(p.entryDir(e))
		if err != nil {
			return false, err
		}
		defer lock.Unlock()
		if p.Done(i) {
			done[0] = 1
		}
	}
	if comm != nil {
		if err := comm.Bcast(done, 0); err != nil {
			return false, err
		}
	}
	if done[0] == 1 {
		return true, nil
	}
	if !lead {
		// the lead records; this process trains with it
		log = io.Discard
	}
	attempts := p.failedAttempts(i) + 1
	t0 := time.Now()
	res := Result{Entry: e, Status: "ok", Attempts: attempts}
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		c := e.Config
		c.OutDir = filepath.Join(p.entryDir(e), "run")
		latest, err := checkpoint.Latest(c.OutDir)
		if err != nil {
			return err
		}
		r, err := train.OpenWith(&c, train.Options{Resume: latest != "", Comm: comm}, log)
		if err != nil {
			return err
		}
		defer r.Close()
		if !lead {
			defer train.HandleSignals(r, log, false)()
			return r.Loop()
		}
		if b, err := yaml.Marshal(c); err == nil {
			// the effective config, for people reading the results
			if err := atomic.WriteFile(filepath.Join(c.OutDir, "config.yaml"), b); err != nil {
				return err
			}
		}
		start := r.State.Step
		r.AddHook(train.Progress(log, c.Train.Steps, start, c.Train.LogEvery))
		defer train.HandleSignals(r, log, false)()
		if err := r.Loop(); err != nil {
			return err
		}
		res.TrainLoss, res.ValLoss = r.Final()
		if s := time.Since(t0).Seconds(); s > 0 && r.State.Step > start {
			res.TokensSec = float64(int64(r.State.Step-start)*int64(c.Train.Batch*c.Train.Seq*c.Train.GradAccum)) / s
		}
		return nil
	}()
	res.WallS = time.Since(t0).Seconds()
	if !lead {
		return false, err
	}
	var busy *atomic.BusyError
	switch {
	case err == nil:
		if err := writeJSON(p.ResultPath(i), res); err != nil {
			return false, err
		}
		if err := os.Remove(p.FailurePath(i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
		return false, atomic.SyncDir(p.entryDir(e))
	case errors.Is(err, train.ErrInterrupted), errors.As(err, &busy):
		// Not the entry's failure: checkpointed, or another process (a
		// `qat train` of the run directory) holds it.
		return false, err
	}
	res.Status, res.Error = "failed", err.Error()
	if werr := writeJSON(p.FailurePath(i), res); werr != nil {
		return false, fmt.Errorf("entry %d (%s) failed: %v; recording it: %w", i, e.ID, err, werr)
	}
	return false, &FailedError{Index: i, ID: e.ID, Attempts: attempts, Record: p.FailurePath(i), Err: err}
}

// failedAttempts is the attempt count of entry i's failure record, 0
// without one.
func (p *Plan) failedAttempts(i int) int {
	r, ok, err := readResult(p.FailurePath(i))
	if err != nil || !ok {
		return 0
	}
	return max(r.Attempts, 1)
}

func writeJSON(path string, r Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomic.WriteFile(path, b)
}

func readResult(path string) (Result, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return Result{}, false, fmt.Errorf("%s: %w", path, err)
	}
	return r, true, nil
}

// LoadResult reads entry i's outcome: its result, else its failure record
// (status failed); ok is false when it has neither.
func (p *Plan) LoadResult(i int) (Result, bool, error) {
	r, ok, err := readResult(p.ResultPath(i))
	if err != nil || (ok && r.Status == "ok") {
		return r, ok, err
	}
	if f, fok, err := readResult(p.FailurePath(i)); err != nil || fok {
		f.Status = "failed"
		return f, fok, err
	}
	return r, ok, nil
}

// PoolOptions are Pool's settings.
type PoolOptions struct {
	// Workers is how many entries run at once.
	Workers int
	// Self is this binary and Args the arguments before the index (e.g.
	// "sweep run plan.json --index"): each entry runs as Self Args... I.
	Self string
	Args []string
	// Progress receives the progress bar.
	Progress io.Writer
	// Signals, when not nil, delivers the signals the pool is to pass on
	// (the caller's signal.Notify of SIGTERM and SIGINT): the first stops
	// new entries from starting and is forwarded to the running ones,
	// which checkpoint and exit; a second kills them (their last
	// checkpoints intact).
	Signals <-chan os.Signal
}

// PoolReport is what a Pool call did.
type PoolReport struct {
	// Ran counts the entries started; OK and Failed how they ended.
	Ran, OK, Failed int
	// Interrupted counts entries stopped by a signal (checkpointed, not
	// failures); Busy entries another process held.
	Interrupted, Busy int
	// FailedIDs are the failed entries' ids, in plan order.
	FailedIDs []string
	// Signal is the first signal the pool received, nil if none.
	Signal os.Signal
}

// outcome is how one child ended.
type outcome int

const (
	succeeded outcome = iota
	failed
	interrupted
	busy
)

// Pool runs every entry that has not succeeded (failed ones included),
// o.Workers at a time, each in a child process so that one that crashes
// or runs out of memory is recorded as failed and the others go on. Each
// child's output goes to RESULTS/ID/log.txt. Children run in their own
// process groups (a terminal's Ctrl-C reaches them once, through the
// pool) and die with the pool (Pdeathsig) if it is killed.
func (p *Plan) Pool(o PoolOptions) (PoolReport, error) {
	var todo []int
	for i := range p.Entries {
		if !p.Done(i) {
			todo = append(todo, i)
		}
	}
	bar := progressbar.NewOptions(len(todo), progressbar.OptionSetWriter(o.Progress), progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true), progressbar.OptionSetDescription("sweep runs"),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(o.Progress) }))
	var (
		mu       sync.Mutex
		rep      PoolReport
		firstErr error
		running  = map[int]*os.Process{}
		signals  int
		stopped  = make(chan struct{})
		done     = make(chan struct{})
		outcomes = make([]outcome, len(p.Entries))
		started  = make([]bool, len(p.Entries))
	)
	// forward signals to the running children
	go func() {
		for {
			select {
			case sig := <-o.Signals:
				mu.Lock()
				signals++
				if signals == 1 {
					rep.Signal = sig
					close(stopped)
				}
				for _, pr := range running {
					if signals == 1 {
						pr.Signal(sig)
					} else {
						pr.Kill()
					}
				}
				mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < max(o.Workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				select {
				case <-stopped:
					continue // dispatched as the signal came: not started
				default:
				}
				start := func(pr *os.Process) {
					mu.Lock()
					defer mu.Unlock()
					running[i] = pr
					started[i] = true
					if signals > 0 { // a signal came between dispatch and start
						pr.Signal(rep.Signal)
					}
				}
				out, cerr := p.child(i, o.Self, o.Args, start, stopped)
				mu.Lock()
				delete(running, i)
				outcomes[i] = out
				if cerr != nil && firstErr == nil {
					firstErr = cerr
				}
				bar.Add(1)
				mu.Unlock()
			}
		}()
	}
dispatch:
	for _, i := range todo {
		select {
		case jobs <- i:
		case <-stopped:
			break dispatch
		}
	}
	close(jobs)
	wg.Wait()
	close(done)
	for i, s := range started {
		if !s {
			continue
		}
		rep.Ran++
		switch outcomes[i] {
		case succeeded:
			rep.OK++
		case failed:
			rep.Failed++
			rep.FailedIDs = append(rep.FailedIDs, p.Entries[i].ID)
		case interrupted:
			rep.Interrupted++
		case busy:
			rep.Busy++
		}
	}
	return rep, firstErr
}

// child runs entry i in a child process and says how it ended; started
// receives the process once it runs. A child that died without a result
// or a new failure record (killed, out of memory) gets a failure record
// here, unless it was stopped by a signal (stopped closed, or its exit
// status 128+SIGTERM/SIGINT), which leaves nothing to record, or another
// process holds the entry.
func (p *Plan) child(i int, self string, args []string, started func(*os.Process), stopped <-chan struct{}) (outcome, error) {
	e := p.Entries[i]
	dir := p.entryDir(e)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return failed, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "log.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return failed, err
	}
	defer logf.Close()
	before := p.failedAttempts(i)
	t0 := time.Now()
	cmd := exec.Command(self, append(append([]string(nil), args...), strconv.Itoa(i))...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the thread that started the child ends: keep
	// this goroutine on its thread until the child is reaped.
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		runtime.UnlockOSThread()
		return failed, err
	}
	started(cmd.Process)
	runErr := cmd.Wait()
	runtime.UnlockOSThread()
	if p.Done(i) {
		return succeeded, nil
	}
	if p.failedAttempts(i) > before {
		return failed, nil // the child recorded its failure
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	code := cmd.ProcessState.ExitCode()
	byStop := code == 128+int(syscall.SIGTERM) || code == 128+int(syscall.SIGINT) ||
		ws.Signaled() && (ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGINT)
	select {
	case <-stopped:
		byStop = true
	default:
	}
	if byStop {
		return interrupted, nil
	}
	// Record the failure under the entry's lock: the child is gone, and
	// a live holder is another process running this entry.
	lock, err := atomic.Lock(dir)
	var be *atomic.BusyError
	if errors.As(err, &be) {
		return busy, nil
	}
	if err != nil {
		return failed, err
	}
	defer lock.Unlock()
	if held, _ := atomic.Held(filepath.Join(dir, "run")); held {
		return busy, nil
	}
	r := Result{Entry: e, Status: "failed", Attempts: before + 1, WallS: time.Since(t0).Seconds(),
		Error: fmt.Sprintf("the run exited without a result or a failure record (%v); see %s", runErr, logf.Name())}
	if err := writeJSON(p.FailurePath(i), r); err != nil {
		return failed, err
	}
	return failed, nil
}
