package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"qat/data/safetensors"
	"qat/layers"
)

// childEnv makes the test binary a child: "load:DIR" loads the model
// directory DIR (LoadHFModel) and exits ("load:-" loads nothing, the
// baseline); "spawn:X" is a small process that runs the binary as
// "load:X" and prints that child's peak resident memory. The spawner is
// there because ru_maxrss of a child started by vfork (as Go starts every
// child) begins at its parent's high-water mark: measured from the test
// process, the child would seem as large as the tests have been.
const childEnv = "QAT_TEST_IMPORT_CHILD"

func TestMain(m *testing.M) {
	switch v := os.Getenv(childEnv); {
	case strings.HasPrefix(v, "load:"):
		if dir := strings.TrimPrefix(v, "load:"); dir != "-" {
			if _, err := LoadHFModel(dir); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		os.Exit(0)
	case strings.HasPrefix(v, "spawn:"):
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), childEnv+"=load:"+strings.TrimPrefix(v, "spawn:"))
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10) // kilobytes on Linux
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childRSS returns the peak resident memory (bytes) of a process that
// loads dir ("-": nothing), measured through a spawner.
func childRSS(t *testing.T, dir string) int64 {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=spawn:"+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child loading %s: %v\n%s", dir, err, stderr.String())
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("spawner printed %q", out)
	}
	return n
}

// rssConfig is a ~220 MB (float32) model: big next to the Go runtime, so
// the file's pages would show if the loader kept them.
var rssConfig = layers.Config{Vocab: 8192, Dim: 1024, Layers: 4, Heads: 8, KVHeads: 4, FFNHidden: 2816,
	RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 64}

// TestImportRSS: loading a sharded BF16 checkpoint (two shards, 110 MB)
// into a float32 model (220 MB) peaks, above a child that loads nothing,
// within 1.3x the float32 weights: the loader holds the model and about
// one tensor of the mapped file, never the file beside the model (that
// would be 1.5x). The values loaded are the generator's, rounded to
// bfloat16.
func TestImportRSS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "synthetic")
	const seed = 11
	if err := WriteSynthetic(dir, rssConfig, 2, seed); err != nil {
		t.Fatal(err)
	}
	m, err := LoadHFModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	for k, p := range m.Params() {
		want := SyntheticValues(seed, k, p.Var.Shape(), 1000)
		for i, x := range want {
			if got := p.Var.Data()[i]; got != bf16(x) {
				t.Fatalf("%s[%d] = %g, want bf16(%g) = %g", p.Name, i, got, x, bf16(x))
			}
		}
	}
	total, _ := rssConfig.Params()
	f32 := int64(4 * total)
	base := childRSS(t, "-")
	peak := childRSS(t, dir)
	ratio := float64(peak-base) / float64(f32)
	t.Logf("float32 weights %.0f MB; child peak RSS %.0f MB, baseline %.0f MB: %.3fx the weights", float64(f32)/1e6, float64(peak)/1e6, float64(base)/1e6, ratio)
	if ratio > 1.3 {
		t.Errorf("loading peaked at %.0f MB over the baseline, %.2fx the %.0f MB of float32 weights (bound 1.3x)", float64(peak-base)/1e6, ratio, float64(f32)/1e6)
	}
	if _, err := os.Stat(filepath.Join(dir, safetensors.IndexName)); err != nil {
		t.Errorf("not sharded: %v", err)
	}
	if err := WriteSynthetic(filepath.Join(t.TempDir(), "x"), rssConfig, 0, 1); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("0 shards: %v", err)
	}
}
