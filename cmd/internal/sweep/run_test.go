package sweep

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/cmd/internal/config"
	"qat/data/atomic"
	"qat/layers"
)

// writePlan writes p as a plan file in a new directory and loads it back.
func writePlan(t *testing.T, p *Plan) (*Plan, string) {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "plan.json")
	os.WriteFile(path, b, 0o644)
	q, err := LoadPlan(path)
	if err != nil {
		t.Fatal(err)
	}
	return q, path
}

// TestFailureRecord: an entry that fails (its data directory missing)
// leaves failure.json with its attempt count, not result.json; it is not
// done, a second attempt counts 2, its row reads failed with the error,
// and Run returns a *FailedError naming the record. A result.json with
// status failed (an older qat's) does not make an entry done either.
func TestFailureRecord(t *testing.T) {
	p := testPlan(t)
	for i := range p.Entries {
		p.Entries[i].Config.Data.Dir = filepath.Join(t.TempDir(), "no-data")
	}
	p, _ = writePlan(t, p)
	for attempt := 1; attempt <= 2; attempt++ {
		skipped, err := p.Run(1, io.Discard)
		var fe *FailedError
		if skipped || !errors.As(err, &fe) || fe.Attempts != attempt || fe.Record != p.FailurePath(1) || !strings.Contains(err.Error(), "no-data") {
			t.Fatalf("attempt %d: skipped %v, error %v", attempt, skipped, err)
		}
		if p.Done(1) {
			t.Fatalf("attempt %d: a failed entry counts as done", attempt)
		}
		if _, err := os.Stat(p.ResultPath(1)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("attempt %d: a failure wrote result.json (%v)", attempt, err)
		}
		r, ok, err := p.LoadResult(1)
		if err != nil || !ok || r.Status != "failed" || r.Attempts != attempt || !strings.Contains(r.Error, "no-data") {
			t.Errorf("attempt %d: record %+v, %v, %v", attempt, r, ok, err)
		}
	}
	rows, err := p.Rows()
	if err != nil {
		t.Fatal(err)
	}
	if rows[1].Status != "failed" || !strings.Contains(rows[1].Error, "no-data") || rows[0].Status != "missing" {
		t.Errorf("rows %+v", rows[:2])
	}
	// an older qat's failed result.json
	b, _ := json.Marshal(Result{Entry: p.Entries[2], Status: "failed", Error: "old"})
	os.MkdirAll(filepath.Dir(p.ResultPath(2)), 0o755)
	os.WriteFile(p.ResultPath(2), b, 0o644)
	if p.Done(2) {
		t.Error("a failed result.json counts as done")
	}
	b, _ = json.Marshal(Result{Entry: p.Entries[3], Status: "ok"})
	os.MkdirAll(filepath.Dir(p.ResultPath(3)), 0o755)
	os.WriteFile(p.ResultPath(3), b, 0o644)
	if !p.Done(3) {
		t.Error("an ok result.json does not count as done")
	}
	if skipped, err := p.Run(3, io.Discard); !skipped || err != nil {
		t.Errorf("a done entry: skipped %v, %v", skipped, err)
	}
}

// TestRunBusy: an entry another process holds (its directory's lock) is
// refused with a *atomic.BusyError, and nothing is recorded.
func TestRunBusy(t *testing.T) {
	p, _ := writePlan(t, testPlan(t))
	// A lock of this process's own on another descriptor: flock locks
	// open files, so it is refused as another process's would be.
	l, err := atomic.Lock(p.entryDir(p.Entries[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	_, err = p.Run(0, io.Discard)
	var be *atomic.BusyError
	if !errors.As(err, &be) {
		t.Fatalf("error %v, want a BusyError", err)
	}
	if _, ok, _ := p.LoadResult(0); ok {
		t.Error("a busy entry recorded a result")
	}
}

// TestBadPlans: a plan whose ids or model names would leave the results
// directory or carry shell syntax, or whose entry config is invalid
// (keep_ckpts 0, a bad lr, a model over the size limits), is refused at
// load with an input error naming the entry and field.
func TestBadPlans(t *testing.T) {
	for _, c := range []struct {
		edit func(p *Plan)
		want string
	}{
		{func(p *Plan) { p.Entries[3].ID = "../escape" }, `entries[3].id: "../escape"`},
		{func(p *Plan) { p.Entries[3].ID = ".." }, `entries[3].id: ".."`},
		{func(p *Plan) { p.Entries[0].ID = "a b" }, `entries[0].id: "a b"`},
		{func(p *Plan) { p.Entries[2].ID = "" }, "entries[2].id: missing"},
		{func(p *Plan) { p.Entries[2].ID = p.Entries[1].ID }, "entries[2].id"},
		{func(p *Plan) { p.Entries[5].Model = "$(reboot)" }, `entries[5].model: "$(reboot)"`},
		{func(p *Plan) { p.Entries[5].Model = "../../x" }, "entries[5].model"},
		{func(p *Plan) { p.Entries[4].Index = 7 }, "entries[4].index: 7"},
		{func(p *Plan) { p.Entries[4].Kind = "int4" }, "entries[4].kind"},
		{func(p *Plan) { p.Entries[4].Pair = "nope" }, "entries[4].pair"},
		{func(p *Plan) { p.Entries[4].Pair = p.Entries[5].ID }, "entries[4].pair"},
		{func(p *Plan) { p.Name = "a\nb" }, "name"},
		{func(p *Plan) { p.Results = "" }, "results: missing"},
		{func(p *Plan) { p.Entries[6].Config.Train.KeepCkpts = 0 }, "entries[6] (b-d2048-fp-s1).config: train.keep_ckpts: 0"},
		{func(p *Plan) { p.Entries[7].Config.Train.LR = -1 }, "entries[7] (b-d2048-w4g32-minmax-s1).config: train.lr"},
		{func(p *Plan) { p.Entries[8].Config.Model.Dim = 1 << 20 }, "entries[8] (b-d2048-w4ch-minmax-s1).config: model.dim"},
		{func(p *Plan) { p.Entries[8].Config.Data.Dir = "" }, "entries[8] (b-d2048-w4ch-minmax-s1).config: data.dir"},
	} {
		p := testPlan(t)
		c.edit(p)
		b, _ := p.Marshal()
		path := filepath.Join(t.TempDir(), "plan.json")
		os.WriteFile(path, b, 0o644)
		_, err := LoadPlan(path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("want an error naming %s and %q, got %v", path, c.want, err)
		} else if !config.IsInput(err) {
			t.Errorf("%v: not an input error", err)
		}
	}
	// a sweep file's model name
	dir := t.TempDir()
	b, _ := os.ReadFile(filepath.Join("testdata", "base.yaml"))
	os.WriteFile(filepath.Join(dir, "base.yaml"), b, 0o644)
	good, _ := os.ReadFile(filepath.Join("testdata", "sweep.yaml"))
	for _, name := range []string{"../a", "a/b", ".", "a'b"} {
		s := strings.Replace(string(good), "{name: b,", "{name: \""+name+"\",", 1)
		if _, err := ParseSpec(filepath.Join(dir, "s.yaml"), []byte(s)); err == nil || !strings.Contains(err.Error(), "models[1].name") {
			t.Errorf("model name %q: %v", name, err)
		}
	}
}

// FuzzParsePlan: no plan file makes the plan reader panic, and a plan it
// accepts has names that stay inside the results directory. The model
// size limits are lowered so that a fuzzed dimension cannot make the
// config check allocate gigabytes.
func FuzzParsePlan(f *testing.F) {
	defer layers.SetLimits(layers.SetLimits(layers.Limits{Vocab: 1 << 12, Dim: 1 << 10, Layers: 8, Heads: 64, KVHeads: 64,
		FFN: 1 << 12, Seq: 1 << 12, HeadDim: 256, Params: 1 << 22, Rope: 1 << 16}))
	s, err := LoadSpec(filepath.Join("testdata", "sweep.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	p, err := s.Expand()
	if err != nil {
		f.Fatal(err)
	}
	p.Entries = p.Entries[:3]
	b, _ := p.Marshal()
	f.Add(b)
	f.Add([]byte(`{"name": "x", "results": "r", "entries": [{"index": 0, "id": "..", "kind": "fp", "model": "a"}]}`))
	f.Add([]byte(`{"name": "x", "results": "r", "entries": []}{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePlan("fuzz.json", b)
		if err != nil {
			return
		}
		for _, e := range p.Entries {
			if CheckName(e.ID) != nil || CheckName(e.Model) != nil || filepath.Base(p.entryDir(e)) != e.ID {
				t.Fatalf("accepted entry id %q, model %q", e.ID, e.Model)
			}
		}
	})
}
