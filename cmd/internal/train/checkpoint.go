package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"qat/data"
	"qat/data/atomic"
	"qat/data/bpe"
	"qat/layers"
	"qat/lora"
	"qat/qat"
)

// State is what a checkpoint holds besides weights and optimizer moments:
// enough to continue the run exactly.
type State struct {
	Step     int           `json:"step"`
	Data     data.Position `json:"data_position"`
	Seed     uint64        `json:"seed"`
	Tokens   int64         `json:"tokens_seen"`
	LastLoss float64       `json:"last_loss"`
}

func ckptName(step int) string { return fmt.Sprintf("ckpt-%07d", step) }

// saveCheckpoint writes out/ckpt-N (weights with Hugging Face names,
// config.json, tokenizer.json, optimizer moments, state.json) through a
// temporary directory and rename, points out/latest at it and removes all
// but the newest keep checkpoints.
func (r *Run) saveCheckpoint() error {
	dir := filepath.Join(r.Cfg.OutDir, ckptName(r.State.Step))
	err := atomic.Dir(dir, func(tmp string) error {
		if err := WriteModel(tmp, r.Model, r.Tok, r.Cfg.QuantRules()); err != nil {
			return err
		}
		if r.Cfg.Lora != nil {
			b, _ := json.MarshalIndent(r.Cfg.Lora.Defaults(), "", "  ")
			if err := atomic.WriteFile(filepath.Join(tmp, "lora.json"), b); err != nil {
				return err
			}
		}
		if err := r.Opt.Save(filepath.Join(tmp, "optimizer.safetensors")); err != nil {
			return err
		}
		st, _ := json.MarshalIndent(r.State, "", "  ")
		return atomic.WriteFile(filepath.Join(tmp, "state.json"), st)
	})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	if err := atomic.WriteFile(filepath.Join(r.Cfg.OutDir, "latest"), []byte(ckptName(r.State.Step)+"\n")); err != nil {
		return err
	}
	return pruneCheckpoints(r.Cfg.OutDir, r.Cfg.Train.KeepCkpts)
}

// WriteModel writes what LoadModel reads into dir: model.safetensors
// (weights and quantizer state, Hugging Face names), config.json,
// tokenizer.json and, for a quantized model, its rules in quant.json.
func WriteModel(dir string, m *layers.Model, tok *bpe.Tokenizer, rules []qat.Rule) error {
	if err := m.Save(filepath.Join(dir, "model.safetensors")); err != nil {
		return err
	}
	hf, _ := m.Config.HFConfig()
	if err := atomic.WriteFile(filepath.Join(dir, "config.json"), hf); err != nil {
		return err
	}
	if err := tok.Save(filepath.Join(dir, "tokenizer.json")); err != nil {
		return err
	}
	if len(rules) == 0 {
		return nil
	}
	b, _ := json.MarshalIndent(rules, "", "  ")
	return atomic.WriteFile(filepath.Join(dir, "quant.json"), b)
}

func listCheckpoints(out string) []string {
	m, _ := filepath.Glob(filepath.Join(out, "ckpt-*"))
	var dirs []string
	for _, d := range m {
		if st, err := os.Stat(d); err == nil && st.IsDir() && !strings.Contains(filepath.Base(d), ".") {
			dirs = append(dirs, d)
		}
	}
	sort.Strings(dirs)
	return dirs
}

func pruneCheckpoints(out string, keep int) error {
	dirs := listCheckpoints(out)
	for i := 0; i+keep < len(dirs); i++ {
		if err := os.RemoveAll(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

// LatestCheckpoint returns the directory out/latest names, or "" if none.
func LatestCheckpoint(out string) (string, error) {
	b, err := os.ReadFile(filepath.Join(out, "latest"))
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	dir := filepath.Join(out, strings.TrimSpace(string(b)))
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		return "", fmt.Errorf("%s/latest names %s, which is not a checkpoint: %v", out, dir, err)
	}
	return dir, nil
}

// ModelDir resolves a model argument: a checkpoint directory, or a run's
// output directory whose latest checkpoint is taken.
func ModelDir(path string) (string, error) {
	if _, err := os.Stat(filepath.Join(path, "model.safetensors")); err == nil {
		return path, nil
	}
	if d, err := LatestCheckpoint(path); err == nil && d != "" {
		return d, nil
	}
	return "", fmt.Errorf("%s: neither a checkpoint (no model.safetensors) nor a run directory with checkpoints", path)
}

// LoadModel reads config.json and model.safetensors of a checkpoint, and
// attaches its quantizers when it has a quant.json (a QAT checkpoint runs
// fake-quantized, as it was trained).
func LoadModel(dir string) (*layers.Model, error) {
	c, err := layers.ReadHFConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	m := layers.New(c)
	if b, err := os.ReadFile(filepath.Join(dir, "quant.json")); err == nil {
		var rules []qat.Rule
		if err := json.Unmarshal(b, &rules); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "quant.json"), err)
		}
		if err := qat.Prepare(m, rules); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "quant.json"), err)
		}
	}
	// adapters: their tensors (and LR-QAT's frozen base) come from the
	// checkpoint below
	if b, err := os.ReadFile(filepath.Join(dir, "lora.json")); err == nil {
		var lc lora.Config
		if err := json.Unmarshal(b, &lc); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "lora.json"), err)
		}
		if _, err := lora.Prepare(m, lc, 0); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "lora.json"), err)
		}
	}
	if err := m.Load(filepath.Join(dir, "model.safetensors")); err != nil {
		return nil, err
	}
	return m, nil
}

// loadCheckpoint restores weights, optimizer moments and state from dir.
func (r *Run) loadCheckpoint(dir string) error {
	if err := r.Model.Load(filepath.Join(dir, "model.safetensors")); err != nil {
		return err
	}
	if err := r.Opt.Load(filepath.Join(dir, "optimizer.safetensors")); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &r.State); err != nil {
		return fmt.Errorf("%s: state.json: %w", dir, err)
	}
	return r.Loader.Seek(r.State.Data)
}
