package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"qat/checkpoint"
	"qat/cmd/internal/config"
	"qat/data"
	"qat/data/atomic"
)

// State is what a checkpoint holds besides weights and optimizer moments:
// enough to continue the run exactly.
type State struct {
	Step     int           `json:"step"`
	Data     data.Position `json:"data_position"`
	Seed     uint64        `json:"seed"`
	Tokens   int64         `json:"tokens_seen"`
	LastLoss float64       `json:"last_loss"`
	// What the data position means: a resumed run that reads other data,
	// or cuts it in other batches, would not continue the same run (Open
	// refuses such a change unless --set names it). Absent (zero) in
	// checkpoints from before they were recorded.
	DataDir string `json:"data_dir,omitempty"`
	Batch   int    `json:"batch,omitempty"`
	Seq     int    `json:"seq,omitempty"`
	// The --set overrides given on resumes, in order.
	Overrides []string `json:"overrides,omitempty"`
}

// saveCheckpoint writes out/ckpt-N (weights with Hugging Face names,
// config.json, tokenizer.json, optimizer moments, state.json) through a
// temporary directory and rename, points out/latest at it and removes all
// but the newest keep checkpoints.
func (r *Run) saveCheckpoint() error {
	// a sharded optimizer's parts come to the lead, which writes the file
	// one process would (a run resumes on any number of processes)
	var parts [][]byte
	if r.sharded {
		b, err := r.Opt.Encode()
		if err != nil {
			return err
		}
		if parts, err = r.comm.GatherBytes(b, 0); err != nil {
			return err
		}
	}
	if !r.lead() {
		r.savedStep = r.State.Step
		return nil
	}
	dir := filepath.Join(r.Cfg.OutDir, checkpoint.Name(r.State.Step))
	r.State.DataDir, r.State.Batch, r.State.Seq = r.Cfg.Data.Dir, r.Cfg.Train.Batch, r.Cfg.Train.Seq
	// the run directory is ours and locked: a checkpoint of this step left
	// by a killed attempt is replaced
	err := atomic.Dir(dir, true, func(tmp string) error {
		if err := checkpoint.Write(tmp, r.Model, r.Tok, r.Cfg.QuantRules()); err != nil {
			return err
		}
		if r.Cfg.Lora != nil {
			b, _ := json.MarshalIndent(r.Cfg.Lora.Defaults(), "", "  ")
			if err := atomic.WriteFile(filepath.Join(tmp, "lora.json"), b); err != nil {
				return err
			}
		}
		save := r.Opt.Save
		if r.sharded {
			save = func(path string) error { return r.Opt.SaveParts(path, parts) }
		}
		if err := save(filepath.Join(tmp, "optimizer.safetensors")); err != nil {
			return err
		}
		st, _ := json.MarshalIndent(r.State, "", "  ")
		return atomic.WriteFile(filepath.Join(tmp, "state.json"), st)
	})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	if err := atomic.WriteFile(filepath.Join(r.Cfg.OutDir, "latest"), []byte(checkpoint.Name(r.State.Step)+"\n")); err != nil {
		return err
	}
	r.savedStep = r.State.Step
	return pruneCheckpoints(r.Cfg.OutDir, r.Cfg.Train.KeepCkpts)
}

// claimOutDir refuses to start a run in a directory that holds files qat
// did not write: a run writes config.yaml, metrics.jsonl, loss.png and
// `latest` there and would replace a user's files of those names.
func claimOutDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &config.InputError{Err: fmt.Errorf("out_dir: %w", err)}
	}
	if len(ents) == 0 || atomic.IsRunDir(dir) {
		return nil
	}
	// a run directory from before the lock file was written
	if _, err := os.Stat(filepath.Join(dir, "latest")); err == nil {
		return nil
	}
	return &config.InputError{Err: fmt.Errorf("out_dir %s holds files that no qat run wrote: choose another out_dir", dir)}
}

// pruneCheckpoints removes all but the newest keep checkpoints (at least
// one), never the one `latest` names.
func pruneCheckpoints(out string, keep int) error {
	latest, _ := checkpoint.Latest(out)
	dirs := checkpoint.List(out)
	for i := 0; i+max(keep, 1) < len(dirs); i++ {
		if latest != "" && filepath.Clean(dirs[i]) == filepath.Clean(latest) {
			continue
		}
		if err := os.RemoveAll(dirs[i]); err != nil {
			return err
		}
	}
	return atomic.SyncDir(out)
}

// loadCheckpoint restores weights, optimizer moments and state from dir,
// refusing a config whose data, batch, seq or seed differ from the
// checkpoint's unless overrides (--set key=value) name the key.
func (r *Run) loadCheckpoint(dir string, overrides []string) error {
	path := filepath.Join(dir, "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	st, err := ParseState(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := st.Matches(r.Cfg, overrides); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := r.Model.Load(filepath.Join(dir, "model.safetensors")); err != nil {
		return err
	}
	if err := r.Opt.Load(filepath.Join(dir, "optimizer.safetensors")); err != nil {
		return err
	}
	st.Overrides = append(st.Overrides, overrides...)
	r.State = st
	r.State.Seed = r.Cfg.Train.Seed
	if err := r.Loader.Seek(r.State.Data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ParseState reads a checkpoint's state.json, checking each field's range.
func ParseState(b []byte) (State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, err
	}
	switch {
	case st.Step < 0:
		return State{}, fmt.Errorf("step %d is negative", st.Step)
	case st.Data.Epoch < 0 || st.Data.Next < 0:
		return State{}, fmt.Errorf("data_position %+v is negative", st.Data)
	case st.Tokens < 0:
		return State{}, fmt.Errorf("tokens_seen %d is negative", st.Tokens)
	case st.Batch < 0 || st.Seq < 0:
		return State{}, fmt.Errorf("batch %d or seq %d is negative", st.Batch, st.Seq)
	}
	return st, nil
}

// Matches checks that resuming st under cfg continues the same run: the
// data directory, batch, seq and seed it recorded are cfg's, except where
// an override names the key (the change is then deliberate, and recorded).
func (st State) Matches(cfg *config.Config, overrides []string) error {
	named := map[string]bool{}
	for _, o := range overrides {
		k, _, _ := strings.Cut(o, "=")
		named[strings.TrimSpace(k)] = true
	}
	type field struct {
		key      string
		was, is  any
		recorded bool
	}
	for _, f := range []field{
		{"data.dir", st.DataDir, cfg.Data.Dir, st.DataDir != ""},
		{"train.batch", st.Batch, cfg.Train.Batch, st.Batch != 0},
		{"train.seq", st.Seq, cfg.Train.Seq, st.Seq != 0},
		{"train.seed", st.Seed, cfg.Train.Seed, true},
	} {
		if f.recorded && f.was != f.is && !named[f.key] {
			return &config.InputError{Err: fmt.Errorf("the checkpoint was trained with %s %v, the config now says %v: resuming would not continue the same run; pass --set %s=%v to change it deliberately",
				f.key, f.was, f.is, f.key, f.is)}
		}
	}
	return nil
}
