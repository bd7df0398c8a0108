package main

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qat/cmd/internal/sweep"
	"qat/qat/scaling"
)

// writeSweep writes the test sweep (2 model sizes x 2 token budgets x
// group 32 and per channel: 8 QAT runs and 4 full-precision ones, a few
// seconds each) and its plan; it returns the plan's path.
func writeSweep(t *testing.T, data string) string {
	t.Helper()
	dir := t.TempDir()
	base, _ := os.ReadFile(filepath.Join("..", "internal", "sweep", "testdata", "base.yaml"))
	os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(strings.ReplaceAll(string(base), "DATA", data)), 0o644)
	spec, _ := os.ReadFile(filepath.Join("..", "internal", "sweep", "testdata", "sweep.yaml"))
	os.WriteFile(filepath.Join(dir, "sweep.yaml"), spec, 0o644)
	msg, code := qat(t, "sweep", "plan", filepath.Join(dir, "sweep.yaml"))
	if code != 0 {
		t.Fatalf("sweep plan: %d\n%s", code, msg)
	}
	plan := filepath.Join(dir, "plan.json")
	os.WriteFile(plan, []byte(msg), 0o644)
	return plan
}

func results(t *testing.T, plan string) map[string]sweep.Result {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(plan), "out", "*", "result.json"))
	out := map[string]sweep.Result{}
	for _, f := range files {
		var r sweep.Result
		b, _ := os.ReadFile(f)
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[r.ID] = r
	}
	return out
}

// TestSweepKillRestartAndFailure: a local pool killed mid-way (SIGKILL to
// it and its child) and restarted finishes every entry without re-running
// finished ones; an entry forced to fail (its data directory missing) is
// recorded as a failed row and the others finish; collect writes one row
// per entry.
func TestSweepKillRestartAndFailure(t *testing.T) {
	data := smallData(t)
	plan := writeSweep(t, data)
	// Break entry 4's config (a-d4096-w4g32-minmax-s1).
	var p map[string]any
	b, _ := os.ReadFile(plan)
	json.Unmarshal(b, &p)
	bad := p["entries"].([]any)[4].(map[string]any)
	bad["config"].(map[string]any)["Data"].(map[string]any)["Dir"] = "/nonexistent/qat-sweep-data"
	b, _ = json.Marshal(p)
	os.WriteFile(plan, b, 0o644)

	cmd := exec.Command(qatBin, "sweep", "run", plan, "--workers", "1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(120 * time.Second)
	for len(results(t, plan)) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	before := results(t, plan)
	if len(before) < 3 || len(before) == 12 {
		t.Fatalf("killed with %d of 12 results; the kill should land mid-sweep", len(before))
	}
	mtimes := map[string]time.Time{}
	for id := range before {
		st, _ := os.Stat(filepath.Join(filepath.Dir(plan), "out", id, "result.json"))
		mtimes[id] = st.ModTime()
	}
	msg, code := qat(t, "sweep", "run", plan, "--workers", "1")
	if code != 0 || !strings.Contains(msg, "12 rows (11 ok, 1 failed, 0 missing)") {
		t.Fatalf("restart: exit %d\n%s", code, msg)
	}
	after := results(t, plan)
	for id, mt := range mtimes {
		st, _ := os.Stat(filepath.Join(filepath.Dir(plan), "out", id, "result.json"))
		if !st.ModTime().Equal(mt) {
			t.Errorf("%s was run again after the restart", id)
		}
	}
	for id, r := range after {
		failed := id == "a-d4096-w4g32-minmax-s1"
		if (r.Status == "failed") != failed || (failed && !strings.Contains(r.Error, "/nonexistent/qat-sweep-data")) {
			t.Errorf("%s: status %s, error %q", id, r.Status, r.Error)
		}
		if !failed && (r.ValLoss <= 0 || r.TrainLoss <= 0) {
			t.Errorf("%s: losses %g %g", id, r.TrainLoss, r.ValLoss)
		}
	}
	rows, err := sweep.ReadParquet(filepath.Join(filepath.Dir(plan), "out", "results.parquet"))
	if err != nil || len(rows) != 12 {
		t.Fatalf("results table: %d rows, %v", len(rows), err)
	}
	for _, r := range rows {
		if r.Kind == "qat" && r.Status == "ok" && (r.Delta == 0 || r.FPValLoss <= 0 || math.Abs(r.ValLoss-r.FPValLoss-r.Delta) > 1e-12) {
			t.Errorf("%s: delta %g, fp loss %g", r.ID, r.Delta, r.FPValLoss)
		}
		if r.Kind == "qat" && r.G != 32 && r.G != 64 {
			t.Errorf("%s: G %d, want 32 or the row length 64", r.ID, r.G)
		}
	}
	// A second run of the pool has nothing to do.
	if msg, code := qat(t, "sweep", "run", plan, "--workers", "2"); code != 0 || !strings.Contains(msg, "ran 0 entries") {
		t.Errorf("third run: exit %d\n%s", code, msg)
	}
}

// TestSweepIndexFromScheduler: JOB_COMPLETION_INDEX and
// SLURM_ARRAY_TASK_ID pick the entry `qat sweep run` runs; a bad index is
// exit status 2.
func TestSweepIndexFromScheduler(t *testing.T) {
	data := smallData(t)
	plan := writeSweep(t, data)
	for _, c := range []struct {
		env string
		i   int
	}{{"JOB_COMPLETION_INDEX", 2}, {"SLURM_ARRAY_TASK_ID", 7}} {
		cmd := exec.Command(qatBin, "sweep", "run", plan)
		cmd.Env = append(os.Environ(), c.env+"="+strconv.Itoa(c.i))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s=%d: %v\n%s", c.env, c.i, err, out)
		}
	}
	got := results(t, plan)
	if len(got) != 2 || got["a-d2048-w4ch-minmax-s1"].Index != 2 || got["b-d2048-w4g32-minmax-s1"].Index != 7 {
		t.Errorf("results %v, want entries 2 and 7", got)
	}
	for _, args := range [][]string{{"sweep", "run", plan, "--index", "12"}, {"sweep", "run", plan}} {
		if msg, code := qat(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, msg)
		}
	}
}

// TestFitCommand: qat fit on a table drawn from known constants (5%
// noise) reports them within 0.1, with the paper's signs, held-out error
// and three plots; a file that is not a table is exit status 2.
func TestFitCommand(t *testing.T) {
	law := scaling.Law{K: 2.5, GN: 0.3, GD: 0.25, GG: 0.9}
	rng := rand.New(rand.NewPCG(1, 2))
	var rows []sweep.Row
	for _, n := range []float64{3e5, 1e6, 3e6} {
		for _, d := range []float64{1e5, 3e5, 1e6} {
			for _, g := range []float64{32, 128, 256} {
				delta := law.Delta(n, d, g) * math.Exp(0.05*rng.NormFloat64())
				// two seeds whose mean is the law's value
				rows = append(rows, sweep.Row{ID: "x", Kind: "qat", Status: "ok", N: int64(n), D: int64(d), G: int64(g), Delta: delta + 0.5, FPValLoss: 5, Seed: 1},
					sweep.Row{ID: "y", Kind: "qat", Status: "ok", N: int64(n), D: int64(d), G: int64(g), Delta: delta - 0.5, FPValLoss: 5, Seed: 2})
			}
		}
	}
	rows = append(rows, sweep.Row{ID: "f", Kind: "fp", Status: "ok"}, sweep.Row{ID: "z", Kind: "qat", Status: "ok", N: 1e6, D: 1e6, G: 64, Delta: -0.01, FPValLoss: 5})
	dir := t.TempDir()
	table := filepath.Join(dir, "results.parquet")
	if err := sweep.WriteParquet(table, rows); err != nil {
		t.Fatal(err)
	}
	msg, code := qat(t, "fit", table, "--holdout", "1")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, msg)
	}
	for _, want := range []string{"27 usable (N, D, G) points, seeds averaged (1 with mean delta <= 0 skipped)", "gN is positive", "gD is positive", "gG is positive", "held out (N=3M D=1M): 3 points"} {
		if !strings.Contains(msg, want) {
			t.Errorf("output lacks %q:\n%s", want, msg)
		}
	}
	var f map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "fit.json"))
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]float64{"gN": law.GN, "gD": law.GD, "gG": law.GG} {
		if got, _ := f[k].(float64); math.Abs(got-v) > 0.1 {
			t.Errorf("%s = %g, want %g", k, got, v)
		}
	}
	for _, png := range []string{"delta_vs_d.png", "delta_vs_g.png", "fitted_vs_measured.png"} {
		if st, err := os.Stat(filepath.Join(dir, png)); err != nil || st.Size() < 1000 {
			t.Errorf("%s: %v", png, err)
		}
	}
	os.WriteFile(table, []byte("not parquet"), 0o644)
	if msg, code := qat(t, "fit", table); code != 2 || !strings.Contains(msg, table) {
		t.Errorf("bad table: exit %d\n%s", code, msg)
	}
}
