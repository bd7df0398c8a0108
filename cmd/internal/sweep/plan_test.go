package sweep

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func testPlan(t *testing.T) *Plan {
	t.Helper()
	s, err := LoadSpec(filepath.Join("testdata", "sweep.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Expand()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExpand: the grid expands in a fixed order into stable, unique ids;
// every QAT run names an existing full-precision pair at its N and D;
// token budgets round up to whole steps; two expansions are identical.
func TestExpand(t *testing.T) {
	p := testPlan(t)
	wantIDs := []string{
		"a-d2048-fp-s1", "a-d2048-w4g32-minmax-s1", "a-d2048-w4ch-minmax-s1",
		"a-d4096-fp-s1", "a-d4096-w4g32-minmax-s1", "a-d4096-w4ch-minmax-s1",
		"b-d2048-fp-s1", "b-d2048-w4g32-minmax-s1", "b-d2048-w4ch-minmax-s1",
		"b-d4096-fp-s1", "b-d4096-w4g32-minmax-s1", "b-d4096-w4ch-minmax-s1",
	}
	var ids []string
	byID := map[string]Entry{}
	for i, e := range p.Entries {
		if e.Index != i {
			t.Errorf("entry %d has index %d", i, e.Index)
		}
		ids = append(ids, e.ID)
		byID[e.ID] = e
	}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Errorf("ids %v\nwant %v", ids, wantIDs)
	}
	for _, e := range p.Entries {
		if e.Steps*4*32 != int(e.D) || e.Config.Train.Steps != e.Steps {
			t.Errorf("%s: %d steps for %d tokens", e.ID, e.Steps, e.D)
		}
		if e.Kind == "fp" {
			if len(e.Config.Quant.Rules) != 0 {
				t.Errorf("%s: full precision run with quantizers", e.ID)
			}
			continue
		}
		fp, ok := byID[e.Pair]
		if !ok || fp.Kind != "fp" || fp.N != e.N || fp.D != e.D || fp.Seed != e.Seed {
			t.Errorf("%s: pair %q is not its full-precision run", e.ID, e.Pair)
		}
		w := e.Config.Quant.Rules[0].Weights
		if w.Bits != 4 || (e.Group == 0) != (w.Granularity == "channel") || (e.Group > 0 && w.GroupSize != e.Group) {
			t.Errorf("%s: weights %+v", e.ID, *w)
		}
	}
	if byID["a-d2048-fp-s1"].N >= byID["b-d2048-fp-s1"].N {
		t.Errorf("model b (2 layers) is not larger than a (1 layer)")
	}
	a, _ := p.Marshal()
	b, _ := testPlan(t).Marshal()
	if !bytes.Equal(a, b) {
		t.Error("two expansions differ")
	}
	// The plan reads back.
	path := filepath.Join(t.TempDir(), "plan.json")
	os.WriteFile(path, a, 0o644)
	q, err := LoadPlan(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(q.Entries, p.Entries) {
		t.Error("plan does not read back")
	}
}

// TestBadSpecs: each mistake names its field.
func TestBadSpecs(t *testing.T) {
	good, _ := os.ReadFile(filepath.Join("testdata", "sweep.yaml"))
	for _, c := range []struct{ from, to, want string }{
		{"name: Test Sweep\n", "", "name"},
		{"tokens: [2048, 4096]", "tokens: [2048, -1]", "tokens[1]"},
		{`groups: ["32", channel]`, `groups: ["32", row]`, "groups[1]"},
		{`groups: ["32", channel]`, `groups: ["+32", channel]`, "groups[0]"},
		{"{name: b,", "{name: ../b,", "models[1].name"},
		{"seeds: [1]", "seeds: [1]\nmethods: [gptq]", "methods[0]"},
		{"{name: b,", "{name: a,", "models[1].name"},
		{"bits: [4]", "bits: [4]\nbogus: 1", "bogus"},
		{"bits: [4]", "bits: [9]", "bits"},
	} {
		dir := t.TempDir()
		b, _ := os.ReadFile(filepath.Join("testdata", "base.yaml"))
		os.WriteFile(filepath.Join(dir, "base.yaml"), b, 0o644)
		p := filepath.Join(dir, "s.yaml")
		os.WriteFile(p, []byte(strings.Replace(string(good), c.from, c.to, 1)), 0o644)
		s, err := LoadSpec(p)
		if err == nil {
			_, err = s.Expand()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q -> %q: error %v, want one naming %s", c.from, c.to, err, c.want)
		}
	}
}

// TestIndexFromEnv: the schedulers' variables pick the entry.
func TestIndexFromEnv(t *testing.T) {
	for _, c := range []struct {
		k, v string
		i    int
	}{{"JOB_COMPLETION_INDEX", "7", 7}, {"SLURM_ARRAY_TASK_ID", "3", 3}, {"SLURM_ARRAY_TASK_ID", "x", -1}} {
		t.Setenv("JOB_COMPLETION_INDEX", "")
		t.Setenv("SLURM_ARRAY_TASK_ID", "")
		t.Setenv(c.k, c.v)
		i, from, ok := IndexFromEnv()
		if !ok || i != c.i || from != c.k {
			t.Errorf("%s=%s: %d from %s (%v)", c.k, c.v, i, from, ok)
		}
	}
	t.Setenv("JOB_COMPLETION_INDEX", "")
	t.Setenv("SLURM_ARRAY_TASK_ID", "")
	if _, _, ok := IndexFromEnv(); ok {
		t.Error("an index without the variables")
	}
}

// TestParquetRoundTrip: rows written read back equal; a file that is not
// a results table is an error naming it.
func TestParquetRoundTrip(t *testing.T) {
	rows := []Row{{ID: "a", Kind: "qat", Model: "s1", Method: "minmax", Status: "ok", N: 100, D: 2000, G: 32, GroupName: "32",
		Bits: 4, Seed: 1, TrainLoss: 3.5, ValLoss: 3.7, FPValLoss: 3.6, Delta: 0.1, WallS: 12, TokensSec: 900},
		{ID: "b", Kind: "fp", Status: "failed", Error: "boom"}}
	path := filepath.Join(t.TempDir(), "r.parquet")
	if err := WriteParquet(path, rows); err != nil {
		t.Fatal(err)
	}
	got, err := ReadParquet(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rows) {
		t.Errorf("read %+v\nwant %+v", got, rows)
	}
	os.WriteFile(path, []byte("PAR1 not really"), 0o644)
	if _, err := ReadParquet(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("bad file: %v", err)
	}
}

// FuzzDecodeParquet: no input makes the results reader panic or hang.
func FuzzDecodeParquet(f *testing.F) {
	path := filepath.Join(f.TempDir(), "r.parquet")
	WriteParquet(path, []Row{{ID: "a", Kind: "qat", Status: "ok", N: 1, D: 2, G: 32, Delta: 0.1}})
	b, _ := os.ReadFile(path)
	f.Add(b)
	f.Add([]byte("PAR1PAR1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		DecodeParquet("fuzz", b)
	})
}

// FuzzParseSpec: no sweep file makes the parser panic.
func FuzzParseSpec(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("testdata", "sweep.yaml"))
	f.Add(b)
	f.Add([]byte("models: [{name: a}, {name: a}]\ntokens: [-1]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseSpec("fuzz.yaml", b)
	})
}
