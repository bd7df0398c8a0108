// Command faults is qat's fault suite (tools/faults.sh, `make faults`; a
// short version runs in `make test`). It does to a real bin/qat what
// clusters, people and disks do: kill -9 and SIGTERM at random steps, a
// second trainer on a live run directory, a full disk during checkpoints,
// exports and sweep tables, and hostile files of every format qat reads.
// It prints one line per case and one summary line per kind with its
// figure, and exits 1 if any case lost or corrupted data, panicked, took
// more than 200 MB or answered bad input with anything but exit 2.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	bin      = flag.String("qat", "bin/qat", "the qat binary")
	sotu     = flag.String("sotu", "../shared/data/sotu", "the State of the Union addresses")
	workFlag = flag.String("work", "", "working directory (default: a new temporary one, removed at the end)")
	kills    = flag.Int("kills", 20, "kill -9 cases")
	terms    = flag.Int("terms", 10, "SIGTERM/SIGINT cases")
	locks    = flag.Int("locks", 10, "second-trainer cases")
	full     = flag.Int("diskfull", 3, "disk-full cases of each kind (checkpoint, export, sweep collect)")
	hostile  = flag.Int("hostile", 50, "hostile files per format")
	seed     = flag.Uint64("seed", 0, "random seed (0: from the clock)")
	maxRSS   = flag.Int64("max-rss-mb", 200, "peak resident memory allowed to a command given a hostile file")
	report   = flag.String("report", "", "also write the summary lines, with the commit and settings, to this Markdown file")
	commit   = flag.String("commit", "", "the commit under test, for the report")
)

// summaries are the per-kind figures, for the report.
var summaries []string

// summary prints a kind's figure line (prefixed ==) and keeps it.
func summary(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	summaries = append(summaries, strings.TrimSuffix(s, "\n"))
	fmt.Print("== " + s)
}

func writeReport(s uint64, took time.Duration) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Fault suite\n\nWritten by `tools/faults.sh` (make faults) at commit %s on %s, seed %d, %s; %d faults.\n\n",
		*commit, time.Now().UTC().Format("2006-01-02"), s, took.Round(time.Second), fails)
	fmt.Fprintf(&b, "Command: `tools/faults.sh %s`\n\n", strings.Join(os.Args[1:], " "))
	for _, l := range summaries {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	if err := os.WriteFile(*report, []byte(b.String()), 0o644); err != nil {
		fatalf("--report: %v", err)
	}
}

var (
	work  string
	data  string
	rng   *rand.Rand
	fails int
)

// run is one qat command's outcome.
type run struct {
	code   int // exit status, or 128+n when killed by signal n
	out    string
	rssMB  float64
	wall   time.Duration
	killed bool // by the timeout
}

// qat runs bin/qat through a spawner: a second, small process of this
// program that starts qat and reports its peak memory. Linux's ru_maxrss
// of a child started by vfork, as Go starts every child, begins at the
// parent's high-water mark, so measured from here every qat would seem as
// large as this suite has ever been.
func qat(timeout time.Duration, args ...string) run {
	self, err := os.Executable()
	if err != nil {
		fatalf("%v", err)
	}
	cmd := exec.Command(self, append([]string{"-spawn", timeout.String(), *bin}, args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	pr, pw, err := os.Pipe()
	if err != nil {
		fatalf("%v", err)
	}
	cmd.ExtraFiles = []*os.File{pw}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		fatalf("starting the spawner: %v", err)
	}
	pw.Close()
	report, _ := io.ReadAll(pr)
	pr.Close()
	cmd.Wait()
	r := run{out: buf.String(), wall: time.Since(t0)}
	var rssKB int64
	var killed int
	if _, err := fmt.Sscan(string(report), &r.code, &rssKB, &killed); err != nil {
		fatalf("spawner of qat %s: no report (%v)\n%s", strings.Join(args, " "), err, r.out)
	}
	r.rssMB, r.killed = float64(rssKB)/1024, killed == 1
	return r
}

// spawn is the spawner's side of qat: run the command, kill it at the
// timeout, and write "status peak-RSS-KB killed" to file descriptor 3.
func spawn(args []string) {
	timeout, err := time.ParseDuration(args[0])
	if err != nil {
		fatalf("-spawn: %v", err)
	}
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fatalf("starting %s: %v", args[1], err)
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	cmd.Wait()
	killed := 0
	if !timer.Stop() {
		killed = 1
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss // kilobytes on Linux
	}
	report := os.NewFile(3, "report")
	fmt.Fprintf(report, "%d %d %d\n", status(cmd.ProcessState), rss, killed)
	report.Close()
	os.Exit(0)
}

func status(ps *os.ProcessState) int {
	ws := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func must(r run, what string) run {
	if r.code != 0 {
		fatalf("%s: exit %d\n%s", what, r.code, r.out)
	}
	return r
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "faults: "+format+"\n", a...)
	os.Exit(1)
}

// fail counts a case that lost data or misbehaved.
func fail(format string, a ...any) {
	fails++
	fmt.Printf("  FAULT: "+format+"\n", a...)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-spawn" {
		spawn(os.Args[2:])
	}
	flag.Parse()
	s := *seed
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	rng = rand.New(rand.NewPCG(s, 7))
	fmt.Printf("fault suite: %s, seed %d\n", *bin, s)
	var err error
	if work = *workFlag; work == "" {
		if work, err = os.MkdirTemp("", "qat-faults-"); err != nil {
			fatalf("%v", err)
		}
		defer os.RemoveAll(work)
	}
	prepareData()
	refs := references()
	t0 := time.Now()
	killCases(refs)
	termCases(refs)
	lockCases()
	diskFullCases(refs)
	hostileCases(refs)
	fmt.Printf("fault suite: %d faults (%s)\n", fails, time.Since(t0).Round(time.Second))
	if *report != "" {
		writeReport(s, time.Since(t0))
	}
	if fails > 0 {
		os.RemoveAll(work)
		os.Exit(1)
	}
}

// prepareData tokenizes 30 addresses with a 512-token vocabulary.
func prepareData() {
	files, _ := filepath.Glob(filepath.Join(*sotu, "18[0-2]*.txt"))
	if len(files) < 10 {
		fatalf("%s holds no addresses from 1800-1829", *sotu)
	}
	data = filepath.Join(work, "data")
	args := []string{"data", "prepare", "--vocab", "512", "--out", data}
	for _, f := range files {
		args = append(args, "--input", f)
	}
	must(qat(5*time.Minute, args...), "data prepare")
}

// The runs: the tiny test model, 40 steps, checkpoints every 7 (so kills
// land between checkpoints as often as not).
const tinyRun = `model:
  vocab: 512
  dim: 64
  layers: 2
  heads: 4
  kv_heads: 2
  ffn_hidden: 128
  rope_theta: 10000
  norm_eps: 1.0e-5
  tied_embeddings: true
  max_seq: 32
data:
  dir: DATA
train:
  steps: 40
  batch: 4
  seq: 32
  lr: 3.0e-3
  warmup: 5
  eval_every: 20
  eval_batches: 2
  ckpt_every: 7
  keep_ckpts: 2
  threads: 2
  log_every: 1
out_dir: OUT
`

var kinds = []struct{ name, extra string }{
	{"fp32", ""},
	{"int8", "optimizer:\n  state: int8\n  block: 64\n  min_8bit_size: 1000\n"},
	{"fp8", "optimizer:\n  state: fp8\n  block: 64\n  min_8bit_size: 1000\n"},
	{"lr-qat", `quant:
  rules:
    - match: "model.layers.*"
      weights: {format: int, bits: 4, symmetric: true, granularity: channel, scale: minmax}
      activations: {format: int, bits: 8, symmetric: false, granularity: token, scale: minmax}
lora:
  method: lr-qat
  rank: 8
  alpha: 8
`},
}

func config(kind int, out string) string {
	text := strings.NewReplacer("DATA", data, "OUT", out).Replace(tinyRun + kinds[kind].extra)
	p := out + ".yaml"
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		fatalf("%v", err)
	}
	return p
}

// outcome is what a finished run leaves: its logged metrics and its final
// checkpoint's files, byte for byte.
type outcome struct {
	metrics []string // lines of metrics.jsonl with a training loss
	loss    string   // the last step's
	files   map[string]string
}

func finished(out string) (outcome, error) {
	var o outcome
	f, err := os.Open(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		return o, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p struct {
			Loss *json.RawMessage `json:"loss"`
		}
		if json.Unmarshal(sc.Bytes(), &p) == nil && p.Loss != nil {
			o.metrics = append(o.metrics, sc.Text())
			o.loss = string(*p.Loss)
		}
	}
	o.files = map[string]string{}
	ck := filepath.Join(out, "ckpt-0000040")
	for _, name := range []string{"model.safetensors", "optimizer.safetensors"} {
		b, err := os.ReadFile(filepath.Join(ck, name))
		if err != nil {
			return o, err
		}
		sum := sha256.Sum256(b)
		o.files[name] = hex.EncodeToString(sum[:8])
	}
	return o, nil
}

// same compares a resumed run with the uninterrupted one: every logged
// step's line (loss, learning rate, gradient norm; times aside) and the
// final weights and optimizer state bit for bit.
func same(got, want outcome) string {
	strip := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			var m map[string]any
			json.Unmarshal([]byte(l), &m)
			delete(m, "tokens_per_s")
			b, _ := json.Marshal(m)
			out = append(out, string(b))
		}
		return out
	}
	g, w := strip(got.metrics), strip(want.metrics)
	if len(g) != len(w) {
		return fmt.Sprintf("%d steps logged, want %d", len(g), len(w))
	}
	for i := range g {
		if g[i] != w[i] {
			return fmt.Sprintf("step %d: %s, uninterrupted %s", i+1, g[i], w[i])
		}
	}
	for k, v := range want.files {
		if got.files[k] != v {
			return fmt.Sprintf("%s differs (%s, want %s)", k, got.files[k], v)
		}
	}
	return ""
}

func references() []outcome {
	refs := make([]outcome, len(kinds))
	for k := range kinds {
		out := filepath.Join(work, "ref-"+kinds[k].name)
		must(qat(10*time.Minute, "train", "--config", config(k, out)), "reference run "+kinds[k].name)
		o, err := finished(out)
		if err != nil {
			fatalf("reference run %s: %v", kinds[k].name, err)
		}
		refs[k] = o
		fmt.Printf("reference %-6s: 40 steps, final loss %s, weights %s\n", kinds[k].name, o.loss, o.files["model.safetensors"])
	}
	return refs
}

// stepsLogged counts the training steps in a run's metrics.jsonl.
func stepsLogged(out string) int {
	b, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	return bytes.Count(b, []byte(`"loss"`))
}

func latestStep(out string) int {
	b, _ := os.ReadFile(filepath.Join(out, "latest"))
	n, _ := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(b)), "ckpt-"))
	return n
}

// interrupt starts a run of kind k, sends sig once it has logged `at`
// steps, and returns the run directory, the step the log had reached and
// the exit status.
func interrupt(k, at int, sig syscall.Signal, name string) (string, int, int, error) {
	out := filepath.Join(work, name)
	cmd := exec.Command(*bin, "train", "--config", config(k, out))
	if err := cmd.Start(); err != nil {
		return out, 0, 0, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for stepsLogged(out) < at {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return out, 0, 0, fmt.Errorf("step %d not reached in 2 minutes", at)
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		cmd.Wait()
		return out, 0, 0, fmt.Errorf("the run ended before the signal: %v", err)
	}
	cmd.Wait()
	return out, stepsLogged(out), status(cmd.ProcessState), nil
}

func killCases(refs []outcome) {
	ok := 0
	for i := 0; i < *kills; i++ {
		k, at := i%len(kinds), 1+rng.IntN(39)
		out, logged, code, err := interrupt(k, at, syscall.SIGKILL, fmt.Sprintf("kill-%02d", i))
		if err != nil {
			fail("kill -9 #%02d %s: %v", i+1, kinds[k].name, err)
			continue
		}
		from := latestStep(out)
		if code != 128+int(syscall.SIGKILL) {
			fail("kill -9 #%02d: the run exited %d before the kill landed", i+1, code)
			continue
		}
		r := qat(10*time.Minute, "train", "--resume", out)
		got, err := finished(out)
		diff := same(got, refs[k])
		switch {
		case r.code != 0:
			fail("kill -9 #%02d %s: resume exited %d\n%s", i+1, kinds[k].name, r.code, r.out)
		case err != nil:
			fail("kill -9 #%02d %s: %v", i+1, kinds[k].name, err)
		case diff != "":
			fail("kill -9 #%02d %s: %s", i+1, kinds[k].name, diff)
		default:
			ok++
			fmt.Printf("kill -9  #%02d %-6s at step %2d (last checkpoint %2d): resumed to 40, final loss %s, weights and optimizer identical\n",
				i+1, kinds[k].name, logged, from, got.loss)
		}
		os.RemoveAll(out)
	}
	summary("kill -9 at random steps, then --resume: %d/%d bit-identical to the uninterrupted run\n", ok, *kills)
}

func termCases(refs []outcome) {
	ok := 0
	for i := 0; i < *terms; i++ {
		k, at := i%len(kinds), 1+rng.IntN(39)
		sig := syscall.SIGTERM
		if i%3 == 2 {
			sig = syscall.SIGINT
		}
		out, logged, code, err := interrupt(k, at, sig, fmt.Sprintf("term-%02d", i))
		if err != nil {
			fail("%v #%02d %s: %v", sig, i+1, kinds[k].name, err)
			continue
		}
		ck := latestStep(out)
		// a signal that lands during the last step stops nothing: the run
		// ends as it would have, exit 0, its final checkpoint written
		finishedAnyway := code == 0 && logged == 40 && ck == 40
		switch {
		case code != 128+int(sig) && !finishedAnyway:
			fail("%v #%02d %s at step %d: exit %d with %d steps logged, want %d", sig, i+1, kinds[k].name, at, code, logged, 128+int(sig))
			continue
		case ck != logged:
			fail("%v #%02d %s: checkpoint at step %d, the log reached %d: steps lost", sig, i+1, kinds[k].name, ck, logged)
			continue
		}
		r := qat(10*time.Minute, "train", "--resume", out)
		got, err := finished(out)
		diff := same(got, refs[k])
		switch {
		case r.code != 0:
			fail("%v #%02d %s: resume exited %d\n%s", sig, i+1, kinds[k].name, r.code, r.out)
		case err != nil:
			fail("%v #%02d %s: %v", sig, i+1, kinds[k].name, err)
		case diff != "":
			fail("%v #%02d %s: %s", sig, i+1, kinds[k].name, diff)
		default:
			ok++
			fmt.Printf("%-7s  #%02d %-6s at step %2d: exit %d with a checkpoint of step %2d, resumed to 40, final loss %s, identical\n",
				strings.ToUpper(sig.String()[:1])+sig.String()[1:], i+1, kinds[k].name, at, code, ck, got.loss)
		}
		os.RemoveAll(out)
	}
	summary("SIGTERM/SIGINT at random steps: %d/%d checkpointed the step reached, exited 143/130 (0 if it landed in the last step) and resumed exactly\n", ok, *terms)
}

// lockCases: while one trainer runs, a second on the same directory (a
// resume, a fresh start with the same out_dir, or a forced ptq over it)
// is refused with exit 2 naming the holder's pid, and the first runs on.
func lockCases() {
	ok := 0
	src := filepath.Join(work, "ref-fp32")
	for i := 0; i < *locks; i++ {
		out := filepath.Join(work, fmt.Sprintf("lock-%02d", i))
		cfg := config(0, out)
		b, _ := os.ReadFile(cfg)
		os.WriteFile(cfg, bytes.Replace(b, []byte("steps: 40"), []byte("steps: 100000"), 1), 0o644)
		first := exec.Command(*bin, "train", "--config", cfg)
		if err := first.Start(); err != nil {
			fatalf("%v", err)
		}
		for stepsLogged(out) < 1 {
			time.Sleep(time.Millisecond)
		}
		var second []string
		switch i % 3 {
		case 0:
			second = []string{"train", "--resume", out}
		case 1:
			second = []string{"train", "--config", cfg}
		default:
			second = []string{"ptq", "--model", src, "--preset", "w4a8", "--out", out, "--force"}
		}
		before := stepsLogged(out)
		r := qat(time.Minute, second...)
		pid := strconv.Itoa(first.Process.Pid)
		time.Sleep(50 * time.Millisecond)
		alive := first.Process.Signal(syscall.Signal(0)) == nil
		first.Process.Kill()
		first.Wait()
		switch {
		case r.code != 2 || !strings.Contains(r.out, "pid "+pid):
			fail("second process #%02d (%s): exit %d, want 2 naming pid %s\n%s", i+1, second[0], r.code, pid, r.out)
		case !alive:
			fail("second process #%02d: the first trainer stopped", i+1)
		default:
			ok++
			fmt.Printf("second   #%02d qat %-5s on a live run (pid %s, step %d): exit 2, %q; the first trains on\n",
				i+1, second[0], pid, before, firstLine(r.out))
		}
		os.RemoveAll(out)
	}
	summary("a second process on a live run directory: %d/%d refused with the holder's pid\n", ok, *locks)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// tmpfs mounts a file system of size bytes at dir (root only).
func tmpfs(dir string, size int64) error {
	os.MkdirAll(dir, 0o755)
	return syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size))
}

func remount(dir string, size int64) error {
	return syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, fmt.Sprintf("size=%d", size))
}

// fill leaves about `left` bytes free on dir's file system.
func fill(dir string, left int64) {
	var st syscall.Statfs_t
	syscall.Statfs(dir, &st)
	free := int64(st.Bavail) * st.Bsize
	if free > left {
		os.WriteFile(filepath.Join(dir, "filler"), make([]byte, free-left), 0o644)
	}
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// loads reports whether qat can evaluate model (a checkpoint, run
// directory or file).
func loads(model string) bool {
	return qat(time.Minute, "eval", "--model", model, "--data", data, "--seq", "32", "--batches", "1").code == 0
}

// diskFullCases: a full disk during a checkpoint, an export and a sweep
// table write fails the command, and leaves every output either whole
// (it loads) or absent, `latest` loadable, and a resumed run exact.
func diskFullCases(refs []outcome) {
	ckSize := dirSize(filepath.Join(work, "ref-fp32", "ckpt-0000040"))
	good, total := 0, 0
	for i := 0; i < *full; i++ {
		// checkpoint: the disk holds one to two and a half checkpoints'
		// worth; the run needs three (keep_ckpts 2 and the one written)
		total++
		mnt := filepath.Join(work, fmt.Sprintf("full-%d", i))
		size := ckSize + rng.Int64N(3*ckSize/2)
		if err := tmpfs(mnt, size); err != nil {
			fail("disk full: mounting a %d-byte tmpfs at %s: %v (the suite runs as root)", size, mnt, err)
			return
		}
		out := filepath.Join(mnt, "run")
		r := qat(10*time.Minute, "train", "--config", config(0, out))
		var bad []string
		cks, _ := filepath.Glob(filepath.Join(out, "ckpt-*"))
		for _, ck := range cks {
			if !loads(ck) {
				bad = append(bad, filepath.Base(ck))
			}
		}
		latest := latestStep(out)
		switch {
		case r.code == 0:
			fail("disk full #%d: a %d-byte disk held the whole run (checkpoints are %d bytes)", i+1, size, ckSize)
		case !strings.Contains(r.out, "no space left"):
			fail("disk full #%d: exit %d without naming the full disk\n%s", i+1, r.code, r.out)
		case len(bad) > 0:
			fail("disk full #%d: corrupt checkpoints %v", i+1, bad)
		case latest > 0 && !loads(out):
			fail("disk full #%d: latest (step %d) does not load", i+1, latest)
		default:
			// more room: the run resumes and ends as if never starved
			remount(mnt, 64<<20)
			rr := qat(10*time.Minute, "train", "--resume", out)
			got, err := finished(out)
			if rr.code != 0 || err != nil {
				fail("disk full #%d: resume with room exited %d (%v)\n%s", i+1, rr.code, err, rr.out)
			} else if d := same(got, refs[0]); d != "" {
				fail("disk full #%d: resumed run differs: %s", i+1, d)
			} else {
				good++
				fmt.Printf("disk full #%d: checkpoint on a %.1f MB disk: exit %d (%q); %d checkpoints left, all load, latest step %d; resumed with room, identical\n",
					i+1, float64(size)/1e6, r.code, qatLine(r.out), len(cks), latest)
			}
		}
		syscall.Unmount(mnt, 0)

		// export: an earlier export at the path survives a failed --force
		total++
		if err := tmpfs(mnt, 64<<20); err != nil {
			fail("disk full: %v", err)
			return
		}
		gg := filepath.Join(mnt, "model.gguf")
		must(qat(time.Minute, "export", "--model", filepath.Join(work, "ref-fp32"), "--quant", "q8_0", "--out", gg), "export")
		before, _ := os.ReadFile(gg)
		fill(mnt, int64(len(before))/int64(2+rng.IntN(8)))
		r = qat(time.Minute, "export", "--model", filepath.Join(work, "ref-fp32"), "--quant", "f32", "--out", gg, "--force")
		after, _ := os.ReadFile(gg)
		leftovers, _ := filepath.Glob(filepath.Join(mnt, ".model.gguf.tmp*"))
		switch {
		case r.code == 0:
			fail("disk full #%d: export succeeded on a full disk", i+1)
		case !bytes.Equal(before, after):
			fail("disk full #%d: the earlier export changed", i+1)
		case !loads(gg):
			fail("disk full #%d: the earlier export does not load", i+1)
		case len(leftovers) > 0:
			fail("disk full #%d: export left %v", i+1, leftovers)
		default:
			good++
			fmt.Printf("disk full #%d: export --force over an earlier GGUF: exit %d (%q); the earlier file intact and loads, no temporary left\n",
				i+1, r.code, qatLine(r.out))
		}
		syscall.Unmount(mnt, 0)

		// sweep collect: the table is whole or absent
		total++
		plan := sweepPlan()
		if err := tmpfs(mnt, 64<<20); err != nil {
			fail("disk full: %v", err)
			return
		}
		table := filepath.Join(mnt, "results.parquet")
		must(qat(time.Minute, "sweep", "collect", plan, "--out", table), "sweep collect")
		before, _ = os.ReadFile(table)
		os.Remove(table)
		fill(mnt, int64(rng.IntN(len(before))))
		r = qat(time.Minute, "sweep", "collect", plan, "--out", table)
		_, statErr := os.Stat(table)
		leftovers, _ = filepath.Glob(filepath.Join(mnt, ".results.parquet.tmp*"))
		switch {
		case r.code == 0:
			fail("disk full #%d: sweep collect succeeded on a full disk", i+1)
		case !errors.Is(statErr, os.ErrNotExist):
			fail("disk full #%d: sweep collect left a partial table", i+1)
		case len(leftovers) > 0:
			fail("disk full #%d: sweep collect left %v", i+1, leftovers)
		default:
			good++
			fmt.Printf("disk full #%d: sweep collect: exit %d (%q); no partial table, no temporary\n", i+1, r.code, qatLine(r.out))
		}
		syscall.Unmount(mnt, 0)
	}
	summary("full disk during checkpoint, export and sweep collect: %d/%d cases with 0 corrupt outputs\n", good, total)
}

// qatLine is the error line qat printed ("qat: ..."), else the last line.
func qatLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "qat: ") {
			return l
		}
	}
	return lines[len(lines)-1]
}

var planPath string

// sweepPlan runs a one-model sweep once and returns its plan.
func sweepPlan() string {
	if planPath != "" {
		return planPath
	}
	dir := filepath.Join(work, "sweep")
	os.MkdirAll(dir, 0o755)
	base := strings.NewReplacer("DATA", data, "OUT", filepath.Join(dir, "unused")).Replace(tinyRun)
	base = strings.Replace(base, "steps: 40", "steps: 4", 1)
	os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(base), 0o644)
	os.WriteFile(filepath.Join(dir, "sweep.yaml"), []byte(`name: faults
base: base.yaml
results: out
models:
  - {name: a, dim: 64, layers: 1, heads: 2, ffn_hidden: 128}
tokens: [512]
groups: [channel]
bits: [4]
seeds: [1]
`), 0o644)
	r := must(qat(time.Minute, "sweep", "plan", filepath.Join(dir, "sweep.yaml")), "sweep plan")
	planPath = filepath.Join(dir, "plan.json")
	os.WriteFile(planPath, []byte(r.out), 0o644)
	must(qat(10*time.Minute, "sweep", "run", planPath, "--workers", "1"), "sweep run")
	return planPath
}
