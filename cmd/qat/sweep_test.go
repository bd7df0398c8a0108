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

// results reads every entry's outcome: result.json, else failure.json.
func results(t *testing.T, plan string) map[string]sweep.Result {
	t.Helper()
	out := map[string]sweep.Result{}
	for _, name := range []string{"failure.json", "result.json"} {
		files, _ := filepath.Glob(filepath.Join(filepath.Dir(plan), "out", "*", name))
		for _, f := range files {
			var r sweep.Result
			b, _ := os.ReadFile(f)
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out[r.ID] = r
		}
	}
	return out
}

// editPlan applies edit to the plan file's entries (as JSON objects).
func editPlan(t *testing.T, plan string, edit func(entries []any)) {
	t.Helper()
	var p map[string]any
	b, _ := os.ReadFile(plan)
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	edit(p["entries"].([]any))
	b, _ = json.Marshal(p)
	os.WriteFile(plan, b, 0o644)
}

// entryConfig is entry i's config section (JSON object).
func entryConfig(entries []any, i int, section string) map[string]any {
	return entries[i].(map[string]any)["config"].(map[string]any)[section].(map[string]any)
}

const brokenData = "/nonexistent/qat-sweep-data"

// TestSweepKillRestartAndFailure: a local pool killed mid-way (SIGKILL to
// it, its children dying with it) and restarted finishes every entry
// without re-running finished ones; an entry forced to fail (its data
// directory missing) leaves a failure record, not a result, while the
// others finish, and the pool exits 1; collect writes one row per entry
// and names the failure; the next pool runs only the failed entry again
// (its attempt count rising), and once its data is back it succeeds.
func TestSweepKillRestartAndFailure(t *testing.T) {
	data := smallData(t)
	plan := writeSweep(t, data)
	// Break entry 4's config (a-d4096-w4g32-minmax-s1).
	const bad = "a-d4096-w4g32-minmax-s1"
	editPlan(t, plan, func(e []any) { entryConfig(e, 4, "Data")["Dir"] = brokenData })

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
	for id, r := range before {
		if r.Status != "ok" {
			continue
		}
		st, _ := os.Stat(filepath.Join(filepath.Dir(plan), "out", id, "result.json"))
		mtimes[id] = st.ModTime()
	}
	msg, code := qat(t, "sweep", "run", plan, "--workers", "1")
	if code != 1 || !strings.Contains(msg, "12 rows (11 ok, 1 failed, 0 missing)") || !strings.Contains(msg, "failed: "+bad+" (attempt ") ||
		!strings.Contains(msg, "1 entries failed ("+bad+")") {
		t.Fatalf("restart: exit %d, want 1 with one failed entry\n%s", code, msg)
	}
	after := results(t, plan)
	for id, mt := range mtimes {
		st, _ := os.Stat(filepath.Join(filepath.Dir(plan), "out", id, "result.json"))
		if !st.ModTime().Equal(mt) {
			t.Errorf("%s was run again after the restart", id)
		}
	}
	for id, r := range after {
		failed := id == bad
		if (r.Status == "failed") != failed || (failed && !strings.Contains(r.Error, brokenData)) {
			t.Errorf("%s: status %s, error %q", id, r.Status, r.Error)
		}
		if !failed && (r.ValLoss <= 0 || r.TrainLoss <= 0 || r.Attempts != 1) {
			t.Errorf("%s: losses %g %g, attempts %d", id, r.TrainLoss, r.ValLoss, r.Attempts)
		}
	}
	dir := filepath.Join(filepath.Dir(plan), "out", bad)
	if _, err := os.Stat(filepath.Join(dir, "result.json")); err == nil {
		t.Errorf("the failed entry wrote result.json")
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
	// The next pool runs the failed entry again, and only it.
	n := after[bad].Attempts
	if msg, code := qat(t, "sweep", "run", plan, "--workers", "2"); code != 1 || !strings.Contains(msg, "ran 1 entries: 0 ok, 1 failed") {
		t.Errorf("third run: exit %d, want 1 after running the failed entry\n%s", code, msg)
	}
	if got := results(t, plan)[bad]; got.Status != "failed" || got.Attempts != n+1 {
		t.Errorf("third run: %s has status %s, attempts %d; want failed, %d", bad, got.Status, got.Attempts, n+1)
	}
	// Its data back, it succeeds: result.json counts every attempt, the
	// failure record is gone, and the pool exits 0.
	editPlan(t, plan, func(e []any) { entryConfig(e, 4, "Data")["Dir"] = entryConfig(e, 3, "Data")["Dir"] })
	if msg, code := qat(t, "sweep", "run", plan, "--workers", "1"); code != 0 || !strings.Contains(msg, "ran 1 entries: 1 ok, 0 failed") ||
		!strings.Contains(msg, "12 rows (12 ok, 0 failed, 0 missing)") {
		t.Errorf("fourth run: exit %d\n%s", code, msg)
	}
	if got := results(t, plan)[bad]; got.Status != "ok" || got.Attempts != n+2 {
		t.Errorf("fourth run: %s has status %s, attempts %d; want ok, %d", bad, got.Status, got.Attempts, n+2)
	}
	if _, err := os.Stat(filepath.Join(dir, "failure.json")); !os.IsNotExist(err) {
		t.Errorf("failure.json left beside a result: %v", err)
	}
}

// TestSweepIndexFailure: `sweep run --index` of an entry that fails exits
// 1 (so a cluster's retry runs it again) and leaves a failure record
// whose attempt count rises with each try, also when the index comes from
// JOB_COMPLETION_INDEX; a plan with an id that would leave the results
// directory, or an entry config that is invalid (keep_ckpts 0), is exit
// 2 naming the entry and field before anything runs.
func TestSweepIndexFailure(t *testing.T) {
	data := smallData(t)
	plan := writeSweep(t, data)
	editPlan(t, plan, func(e []any) { entryConfig(e, 4, "Data")["Dir"] = brokenData })
	for attempt := 1; attempt <= 2; attempt++ {
		cmd := exec.Command(qatBin, "sweep", "run", plan, "--index", "4")
		if attempt == 2 {
			cmd = exec.Command(qatBin, "sweep", "run", plan)
			cmd.Env = append(os.Environ(), "JOB_COMPLETION_INDEX=4")
		}
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "failure.json") {
			t.Errorf("attempt %d: exit %d, want 1 naming the failure record\n%s", attempt, code, out)
		}
		r := results(t, plan)["a-d4096-w4g32-minmax-s1"]
		if r.Status != "failed" || r.Attempts != attempt || !strings.Contains(r.Error, brokenData) {
			t.Errorf("attempt %d: record %+v", attempt, r)
		}
	}
	for _, c := range []struct {
		edit func(e []any)
		want string
	}{
		{func(e []any) { e[0].(map[string]any)["id"] = "../../escape" }, `entries[0].id: "../../escape"`},
		{func(e []any) { e[2].(map[string]any)["model"] = "a;rm -rf ~" }, `entries[2].model: "a;rm -rf ~"`},
		{func(e []any) { entryConfig(e, 7, "Train")["KeepCkpts"] = 0 }, "entries[7] (b-d2048-w4g32-minmax-s1).config: train.keep_ckpts: 0"},
	} {
		bad := filepath.Join(t.TempDir(), "plan.json")
		b, _ := os.ReadFile(plan)
		os.WriteFile(bad, b, 0o644)
		editPlan(t, bad, c.edit)
		for _, args := range [][]string{{"sweep", "run", bad, "--index", "1"}, {"sweep", "run", bad, "--workers", "1"},
			{"sweep", "emit", bad, "--slurm"}} {
			if msg, code := qat(t, args...); code != 2 || !strings.Contains(msg, c.want) || !strings.Contains(msg, bad) {
				t.Errorf("%v: exit %d, want 2 naming %s and %q\n%s", args, code, bad, c.want, msg)
			}
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(bad), "out")); err == nil {
			t.Errorf("%q: an entry ran", c.want)
		}
	}
}

// TestSweepSIGTERM: a pool stopped by SIGTERM while an entry trains
// passes the signal on; the entry writes a checkpoint and records no
// failure, the pool starts nothing more and exits 143, and the entry's
// next run (--index, as a cluster retry) resumes from the checkpoint and
// finishes.
func TestSweepSIGTERM(t *testing.T) {
	data := smallData(t)
	plan := writeSweep(t, data)
	// entry 0 long enough to be stopped mid-run
	editPlan(t, plan, func(e []any) {
		entryConfig(e, 0, "Train")["Steps"] = 150
		entryConfig(e, 0, "Train")["CkptEvery"] = 2
	})
	dir := filepath.Join(filepath.Dir(plan), "out", "a-d2048-fp-s1")
	cmd := exec.Command(qatBin, "sweep", "run", plan, "--workers", "1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "run", "latest")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no checkpoint after 60 s\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 143 || !strings.Contains(out.String(), "1 stopped") {
		t.Fatalf("pool: exit %d, want 143 with the entry stopped\n%s", code, out.String())
	}
	if got := results(t, plan); len(got) != 0 {
		t.Fatalf("a stopped pool recorded %v (the SIGTERM should land mid-entry, before any result)", got)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "log.txt"))
	if !strings.Contains(string(log), "terminated: finishing the step and writing a checkpoint") {
		t.Errorf("the entry did not get the SIGTERM:\n%s", log)
	}
	msg, code := qat(t, "sweep", "run", plan, "--index", "0")
	if code != 0 || !strings.Contains(msg, "resuming from") {
		t.Fatalf("rerun: exit %d, want 0 after resuming\n%s", code, msg)
	}
	if r := results(t, plan)["a-d2048-fp-s1"]; r.Status != "ok" || r.Attempts != 1 {
		t.Errorf("after the rerun: %+v", r)
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
