package sweep

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/schollz/progressbar/v3"

	"qat/cmd/internal/train"
	"qat/data/atomic"
)

// Result is what one entry measured, written to RESULTS/ID/result.json.
type Result struct {
	Entry
	// Status: ok or failed (Error says why).
	Status    string  `json:"status"`
	Error     string  `json:"error,omitempty"`
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

// ResultPath is where entry i's result goes.
func (p *Plan) ResultPath(i int) string {
	return filepath.Join(p.entryDir(p.Entries[i]), "result.json")
}

// Done reports whether entry i has a result (ok or failed).
func (p *Plan) Done(i int) bool {
	_, err := os.Stat(p.ResultPath(i))
	return err == nil
}

// Run trains entry i unless it has a result, resuming from the entry's
// last checkpoint when an earlier attempt was killed. A failure (a bad
// config, a non-finite loss, a panic) is recorded as a failed result and
// also returned; skipped reports an entry that already had a result.
func (p *Plan) Run(i int, log io.Writer) (skipped bool, err error) {
	if i < 0 || i >= len(p.Entries) {
		return false, fmt.Errorf("entry %d: the plan has entries 0 to %d", i, len(p.Entries)-1)
	}
	if p.Done(i) {
		return true, nil
	}
	e := p.Entries[i]
	t0 := time.Now()
	res := Result{Entry: e, Status: "ok"}
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		c := e.Config
		c.OutDir = filepath.Join(p.entryDir(e), "run")
		latest, err := train.LatestCheckpoint(c.OutDir)
		if err != nil {
			return err
		}
		r, err := train.Open(&c, latest != "", log)
		if err != nil {
			return err
		}
		if b, err := yaml.Marshal(c); err == nil {
			// the effective config, for people reading the results
			if err := atomic.WriteFile(filepath.Join(c.OutDir, "config.yaml"), b); err != nil {
				return err
			}
		}
		start := r.State.Step
		r.AddHook(train.Progress(log, c.Train.Steps, start, c.Train.LogEvery))
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
	if err != nil {
		res.Status, res.Error = "failed", err.Error()
	}
	if werr := p.writeResult(i, res); werr != nil {
		return false, werr
	}
	return false, err
}

func (p *Plan) writeResult(i int, r Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.ResultPath(i)), 0o755); err != nil {
		return err
	}
	return atomic.WriteFile(p.ResultPath(i), b)
}

// LoadResult reads entry i's result; ok is false when it has none.
func (p *Plan) LoadResult(i int) (Result, bool, error) {
	b, err := os.ReadFile(p.ResultPath(i))
	if errors.Is(err, os.ErrNotExist) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return Result{}, false, fmt.Errorf("%s: %w", p.ResultPath(i), err)
	}
	return r, true, nil
}

// Pool runs every entry without a result, `workers` at a time, each in a
// child process (self: this binary; args before the index, e.g. "sweep
// run plan.json --index") so that one that crashes or runs out of memory
// is recorded as failed and the others go on. Each child's output goes to
// RESULTS/ID/log.txt. It returns how many entries ran and failed.
func (p *Plan) Pool(workers int, self string, args []string, progress io.Writer) (ran, failed int, err error) {
	var todo []int
	for i := range p.Entries {
		if !p.Done(i) {
			todo = append(todo, i)
		}
	}
	bar := progressbar.NewOptions(len(todo), progressbar.OptionSetWriter(progress), progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true), progressbar.OptionSetDescription("sweep runs"),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(progress) }))
	jobs := make(chan int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < max(workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ok, cerr := p.child(i, self, args)
				mu.Lock()
				ran++
				if !ok {
					failed++
				}
				if cerr != nil && err == nil {
					err = cerr
				}
				bar.Add(1)
				mu.Unlock()
			}
		}()
	}
	for _, i := range todo {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return ran, failed, err
}

// child runs entry i in a child process and reports whether it succeeded;
// a child that died without a result gets a failed one.
func (p *Plan) child(i int, self string, args []string) (bool, error) {
	dir := p.entryDir(p.Entries[i])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "log.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer logf.Close()
	t0 := time.Now()
	cmd := exec.Command(self, append(append([]string(nil), args...), strconv.Itoa(i))...)
	cmd.Stdout, cmd.Stderr = logf, logf
	runErr := cmd.Run()
	r, ok, err := p.LoadResult(i)
	if err != nil {
		return false, err
	}
	if !ok {
		r = Result{Entry: p.Entries[i], Status: "failed", WallS: time.Since(t0).Seconds(),
			Error: fmt.Sprintf("the run exited without a result (%v); see %s", runErr, logf.Name())}
		if err := p.writeResult(i, r); err != nil {
			return false, err
		}
	}
	return r.Status == "ok", nil
}
