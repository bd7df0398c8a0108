package train

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/cmd/internal/config"
	"qat/data"
)

// FuzzParseState: any bytes give a state whose fields are in range, or an
// error; never a panic.
func FuzzParseState(f *testing.F) {
	good, _ := json.Marshal(State{Step: 40, Data: data.Position{Epoch: 1, Next: 8}, Seed: 1, Tokens: 5120, LastLoss: 5.3,
		DataDir: "runs/data/sotu", Batch: 4, Seq: 32, Overrides: []string{"train.steps=80"}})
	f.Add(good)
	f.Add([]byte(`{"step": -1}`))
	f.Add([]byte(`{"data_position": {"epoch": 1e300}}`))
	f.Add([]byte(`{"overrides": "x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b)
		if err != nil {
			return
		}
		if st.Step < 0 || st.Data.Epoch < 0 || st.Data.Next < 0 || st.Tokens < 0 || st.Batch < 0 || st.Seq < 0 {
			t.Fatalf("accepted out-of-range state %+v", st)
		}
	})
}

// TestStateMatches: a resume may change data dir, batch, seq or seed only
// where an override names the key; checkpoints that did not record a
// field are not held to it.
func TestStateMatches(t *testing.T) {
	cfg := &config.Config{Data: config.Data{Dir: "d"}, Train: config.Train{Batch: 4, Seq: 32, Seed: 1}}
	st := State{DataDir: "d", Batch: 4, Seq: 32, Seed: 1}
	if err := st.Matches(cfg, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key  string
		edit func(*config.Config)
	}{
		{"data.dir", func(c *config.Config) { c.Data.Dir = "e" }},
		{"train.batch", func(c *config.Config) { c.Train.Batch = 8 }},
		{"train.seq", func(c *config.Config) { c.Train.Seq = 64 }},
		{"train.seed", func(c *config.Config) { c.Train.Seed = 2 }},
	} {
		changed := *cfg
		c.edit(&changed)
		err := st.Matches(&changed, []string{"train.steps=80"})
		if err == nil || !strings.Contains(err.Error(), c.key) || !config.IsInput(err) {
			t.Errorf("%s changed silently: %v", c.key, err)
		}
		if err := st.Matches(&changed, []string{c.key + "=x"}); err != nil {
			t.Errorf("%s changed by --set: %v", c.key, err)
		}
		old := State{Seed: 1} // a checkpoint from before the fields
		if err := old.Matches(&changed, nil); err != nil && c.key != "train.seed" {
			t.Errorf("%s on an old checkpoint: %v", c.key, err)
		}
	}
}

// TestPruneByStep: checkpoints are ordered by step number, not name, and
// the one `latest` names is never removed.
func TestPruneByStep(t *testing.T) {
	out := t.TempDir()
	for _, name := range []string{"ckpt-0000900", "ckpt-10000000", "ckpt-9999999", "ckpt-0000950.tmp123", "ckpt-notes"} {
		os.MkdirAll(filepath.Join(out, name), 0o755)
		os.WriteFile(filepath.Join(out, name, "state.json"), []byte("{}"), 0o644)
	}
	os.WriteFile(filepath.Join(out, "latest"), []byte("ckpt-0000900\n"), 0o644)
	if err := pruneCheckpoints(out, 1); err != nil {
		t.Fatal(err)
	}
	var left []string
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := "ckpt-0000900 ckpt-0000950.tmp123 ckpt-10000000 ckpt-notes latest"
	if got := strings.Join(left, " "); got != want {
		t.Errorf("left %s, want %s", got, want)
	}
}
