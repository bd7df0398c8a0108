package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMCheckpointsAndResumes: SIGTERM (a scheduler's preemption) or
// SIGINT at a random moment finishes the step, writes a checkpoint of it
// and exits 128+n; the resumed run logs exactly the uninterrupted run's
// losses, and its checkpoint is the step the log reached.
func TestSIGTERMCheckpointsAndResumes(t *testing.T) {
	data := smallData(t)
	ref := filepath.Join(t.TempDir(), "ref")
	if msg, code := qat(t, "train", "--config", writeConfig(t, tinyRun, data, ref)); code != 0 {
		t.Fatalf("reference run: %d\n%s", code, msg)
	}
	want := losses(t, ref)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		out := filepath.Join(t.TempDir(), "stopped")
		cmd := exec.Command(qatBin, "train", "--config", writeConfig(t, tinyRun, data, out))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logged := stopAfterCheckpoint(t, cmd, out, sig, rng)
		b, err := os.ReadFile(filepath.Join(out, "latest"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != "ckpt-"+pad7(logged) {
			t.Errorf("%v: latest is %s, the log reached step %d\n%s", sig, got, logged, stderr.String())
		}
		if msg, code := qat(t, "train", "--resume", out); code != 0 {
			t.Fatalf("resume after %v: %d\n%s", sig, code, msg)
		}
		got := losses(t, out)
		t.Logf("%v after %d steps", sig, logged)
		for step := 1; step <= 40; step++ {
			if got[step] != want[step] {
				t.Errorf("%v: step %d: loss %s after resume, %s uninterrupted", sig, step, got[step], want[step])
			}
		}
	}
}

func pad7(n int) string {
	s := strconv.Itoa(n)
	return strings.Repeat("0", max(0, 7-len(s))) + s
}

// TestRunDirectoryLock: a second trainer on a run directory in use exits 2
// naming the holder's pid, and changes nothing there.
func TestRunDirectoryLock(t *testing.T) {
	data := smallData(t)
	out := filepath.Join(t.TempDir(), "run")
	cfg := strings.Replace(tinyRun, "steps: 40", "steps: 400", 1)
	cmd := exec.Command(qatBin, "train", "--config", writeConfig(t, cfg, data, out))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "latest")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint after 60 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	for _, args := range [][]string{{"train", "--resume", out}, {"train", "--config", filepath.Join(out, "config.yaml")}} {
		msg, code := qat(t, args...)
		if code != 2 || !strings.Contains(msg, "pid "+pid) {
			t.Errorf("%v while pid %s trains: exit %d, want 2 naming the pid\n%s", args, pid, code, msg)
		}
	}
	if cmd.ProcessState != nil {
		t.Fatal("the first trainer stopped")
	}
}

// TestOutputSafety: --out never replaces the input, nor without --force a
// directory or file qat did not write; a refusal is exit 2 naming the path
// and changes nothing. Its own outputs are replaced when asked.
func TestOutputSafety(t *testing.T) {
	data := smallData(t)
	run := filepath.Join(t.TempDir(), "tiny")
	cfg := strings.Replace(tinyRun, "steps: 40", "steps: 5", 1)
	if msg, code := qat(t, "train", "--config", writeConfig(t, cfg, data, run)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	before := tree(t, run)
	user := filepath.Join(t.TempDir(), "mine")
	os.MkdirAll(user, 0o755)
	os.WriteFile(filepath.Join(user, "thesis.tex"), []byte("years of work"), 0o644)
	userFile := filepath.Join(t.TempDir(), "notes.gguf")
	os.WriteFile(userFile, []byte("not a model"), 0o644)
	ptq := func(out string, extra ...string) (string, int) {
		return qat(t, append([]string{"ptq", "--model", run, "--preset", "w4a8", "--out", out, "--data", data, "--seq", "32", "--batches", "1", "--calib-batches", "1"}, extra...)...)
	}
	for _, c := range []struct {
		what string
		args []string
	}{
		{"ptq onto its input run", []string{"ptq", "--model", run, "--preset", "w4a8", "--out", run}},
		{"ptq onto its input run, forced", []string{"ptq", "--model", run, "--preset", "w4a8", "--out", run, "--force"}},
		{"ptq onto the input's checkpoint", []string{"ptq", "--model", run, "--preset", "w4a8", "--out", filepath.Join(run, "ckpt-0000005"), "--force"}},
		{"ptq onto a parent of the input", []string{"ptq", "--model", run, "--preset", "w4a8", "--out", filepath.Dir(run), "--force"}},
		{"ptq onto a user's directory", []string{"ptq", "--model", run, "--preset", "w4a8", "--out", user}},
		{"merge onto its input", []string{"merge", "--model", run, "--out", run, "--force"}},
		{"export onto a user's file", []string{"export", "--model", run, "--out", userFile}},
		{"export packed onto a user's directory", []string{"export", "--model", run, "--format", "safetensors-packed", "--out", user}},
		{"export onto its input", []string{"export", "--model", run, "--format", "safetensors-packed", "--out", run, "--force"}},
	} {
		msg, code := qat(t, c.args...)
		out := c.args[len(c.args)-1]
		if out == "--force" {
			out = c.args[len(c.args)-2]
		}
		if code != 2 || !strings.Contains(msg, filepath.Clean(out)) {
			t.Errorf("%s: exit %d, want 2 naming %s\n%s", c.what, code, out, msg)
		}
	}
	if after := tree(t, run); after != before {
		t.Errorf("the run changed:\n%s\nbefore:\n%s", after, before)
	}
	if b, _ := os.ReadFile(filepath.Join(user, "thesis.tex")); string(b) != "years of work" {
		t.Error("the user's directory changed")
	}
	if b, _ := os.ReadFile(userFile); string(b) != "not a model" {
		t.Error("the user's file changed")
	}
	// its own output is replaced; a user's only with --force
	out := filepath.Join(t.TempDir(), "ptq")
	for i := 0; i < 2; i++ {
		if msg, code := ptq(out); code != 0 {
			t.Fatalf("ptq run %d: %d\n%s", i, code, msg)
		}
	}
	if msg, code := ptq(user, "--force"); code != 0 {
		t.Fatalf("ptq --force onto a user's directory: %d\n%s", code, msg)
	}
	if _, err := os.Stat(filepath.Join(user, "model.safetensors")); err != nil {
		t.Error("--force did not write")
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left %s beside the output", e.Name())
		}
	}
}

// TestResumeRefusesSilentChanges: a resume whose --set changes the data,
// batch, seq or seed is refused unless it names the key; a named change is
// kept in config.yaml for the next resume.
func TestResumeRefusesSilentChanges(t *testing.T) {
	data := smallData(t)
	out := filepath.Join(t.TempDir(), "run")
	cfg := strings.Replace(tinyRun, "steps: 40", "steps: 5", 1)
	if msg, code := qat(t, "train", "--config", writeConfig(t, cfg, data, out)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	// config.yaml edited by hand behind the checkpoint's back
	p := filepath.Join(out, "config.yaml")
	orig, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(orig, []byte("batch: 4"), []byte("batch: 2"), 1), 0o644)
	msg, code := qat(t, "train", "--resume", out, "--set", "train.steps=10")
	if code != 2 || !strings.Contains(msg, "train.batch") {
		t.Errorf("a changed batch: exit %d, want 2 naming train.batch\n%s", code, msg)
	}
	os.WriteFile(p, orig, 0o644)
	msg, code = qat(t, "train", "--resume", out, "--set", "train.steps=10", "--set", "train.seed=7")
	if code != 0 {
		t.Fatalf("a named seed change: %d\n%s", code, msg)
	}
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), "seed: 7") || !strings.Contains(string(b), "steps: 10") {
		t.Errorf("config.yaml does not keep the overrides:\n%s", b)
	}
	st, _ := os.ReadFile(filepath.Join(out, "ckpt-0000010", "state.json"))
	if !strings.Contains(string(st), "train.seed=7") {
		t.Errorf("state.json does not record the override:\n%s", st)
	}
	// a fresh run refuses a directory of someone else's files
	user := t.TempDir()
	os.WriteFile(filepath.Join(user, "metrics.jsonl"), []byte("mine"), 0o644)
	msg, code = qat(t, "train", "--config", writeConfig(t, cfg, data, user))
	if code != 2 || !strings.Contains(msg, user) {
		t.Errorf("fresh run in a user's directory: exit %d\n%s", code, msg)
	}
	if b, _ := os.ReadFile(filepath.Join(user, "metrics.jsonl")); string(b) != "mine" {
		t.Error("the user's file changed")
	}
}

// tree lists the files under dir with their sizes and times.
func tree(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(p + " " + strconv.FormatInt(info.Size(), 10) + " " + info.ModTime().String() + "\n")
		}
		return nil
	})
	return b.String()
}
