// Package checkpoint reads and writes models in every format qat knows,
// so that no command sniffs formats itself: a run directory (its latest
// checkpoint), a checkpoint directory (model.safetensors with Hugging Face
// names, config.json, tokenizer.json, and quant.json / lora.json for QAT
// and adapter checkpoints), a Hugging Face model directory as downloaded
// (config.json of a Llama, Mistral or Qwen2; model.safetensors or shards
// under model.safetensors.index.json, in F32, F16 or BF16;
// tokenizer.json), a packed safetensors directory
// (compressed-tensors' pack-quantized layout) and a GGUF file. Load opens
// any of them; Write writes a checkpoint directory. A run directory holds
// checkpoints named Name(step) and a file `latest` naming the newest.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"

	"qat/autograd"
	"qat/data/atomic"
	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/export"
	"qat/layers"
	"qat/lora"
	"qat/qat"
)

// Kind is a model format.
type Kind int

const (
	Dir    Kind = iota // a checkpoint directory
	Packed             // packed safetensors
	GGUF               // a GGUF file
	HF                 // a Hugging Face model directory (IsHF)
)

func (k Kind) String() string {
	return [...]string{"checkpoint", "packed safetensors", "GGUF", "Hugging Face model"}[k]
}

// Model is a loaded model with what came with it.
type Model struct {
	*layers.Model
	Tok  *bpe.Tokenizer
	Path string // the checkpoint directory or file read
	Kind Kind
	// Rules are a checkpoint's quant.json (nil: full precision).
	Rules []qat.Rule
	// Adapters is set for a checkpoint with lora.json.
	Adapters bool
	// PackedWeights are the linears packed for the packed kernels (from
	// LoadPacked), nil otherwise.
	PackedWeights map[*autograd.Var]layers.PackedWeight
}

// Load opens a model: a .gguf file, or a directory Resolve accepts.
func Load(path string) (*Model, error) {
	if strings.HasSuffix(path, ".gguf") {
		m, tok, _, err := export.LoadGGUF(path)
		if err != nil {
			return nil, err
		}
		return &Model{Model: m, Tok: tok, Path: path, Kind: GGUF}, nil
	}
	dir, err := Resolve(path)
	if err != nil {
		return nil, err
	}
	if isPacked(dir) {
		m, tok, err := export.LoadPackedSafetensors(dir)
		if err != nil {
			return nil, err
		}
		return &Model{Model: m, Tok: tok, Path: dir, Kind: Packed}, nil
	}
	// the config first: an impossible model is named before anything
	// else is looked for
	if _, err := layers.ReadHFConfig(filepath.Join(dir, "config.json")); err != nil {
		return nil, &layers.InputError{Err: err}
	}
	if tp := filepath.Join(dir, "tokenizer.json"); !exists(tp) {
		return nil, &layers.InputError{Err: fmt.Errorf("%s: %s is missing", dir, tp)}
	}
	if IsHF(dir) {
		return loadHF(dir)
	}
	m, rules, adapters, err := loadCheckpointDir(dir)
	if err != nil {
		return nil, err
	}
	tok, err := bpe.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() != m.Vocab {
		return nil, fmt.Errorf("%s: tokenizer has %d tokens, model %d", dir, tok.VocabSize(), m.Vocab)
	}
	return &Model{Model: m, Tok: tok, Path: dir, Kind: Dir, Rules: rules, Adapters: adapters}, nil
}

// LoadPacked opens a model whose linears run on the packed kernels: a GGUF
// file (its weights stay packed) or packed safetensors with per-channel
// int4/int8 weights and int8 per-token activations (w4a8, w8a8), or int4
// weights and 4-bit per-token activations (w4a4).
func LoadPacked(path string) (*Model, error) {
	if strings.HasSuffix(path, ".gguf") {
		m, f, err := export.LoadGGUFModel(path, false)
		if err != nil {
			return nil, err
		}
		tok, err := export.TokenizerOf(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &Model{Model: m, Tok: tok, Path: path, Kind: GGUF, PackedWeights: export.Packed(m, f)}, nil
	}
	dir, err := Resolve(path)
	if err != nil {
		return nil, err
	}
	if !isPacked(dir) {
		return nil, fmt.Errorf("%s: no packed kernel for a float checkpoint: packed kernels run .gguf files and packed safetensors (qat export --format safetensors-packed)", dir)
	}
	m, tok, pw, err := export.LoadPackedSafetensorsKernels(dir)
	if err != nil {
		return nil, err
	}
	if pw == nil {
		return nil, fmt.Errorf("%s: no packed kernel for its quantization: packed kernels run .gguf files and packed safetensors with per-channel int4/int8 weights and int8 per-token activations (w4a8, w8a8) or int4 weights and 4-bit per-token activations (w4a4)", dir)
	}
	return &Model{Model: m, Tok: tok, Path: dir, Kind: Packed, PackedWeights: pw}, nil
}

// IsPacked reports whether path is a model LoadPacked can open.
func IsPacked(path string) bool {
	if strings.HasSuffix(path, ".gguf") {
		return true
	}
	dir, err := Resolve(path)
	return err == nil && isPacked(dir)
}

// isPacked reports whether a checkpoint directory holds packed safetensors
// (qat's safetensors-packed, or a compressed-tensors export: int8 and fp8
// weights too).
func isPacked(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	return err == nil && (strings.Contains(string(b), `"pack-quantized"`) || strings.Contains(string(b), `"int-quantized"`) ||
		strings.Contains(string(b), `"float-quantized"`))
}

// readRules reads a checkpoint's quant.json, nil when it has none.
func readRules(dir string) ([]qat.Rule, error) {
	p := filepath.Join(dir, "quant.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rules []qat.Rule
	if err := json.Unmarshal(b, &rules); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return rules, nil
}

// Name is the directory name of a run's checkpoint at step.
func Name(step int) string { return fmt.Sprintf("ckpt-%07d", step) }

// Step parses a checkpoint directory's name; ok is false for anything
// else (temporaries, files of the user's).
func Step(name string) (int, bool) {
	v, ok := strings.CutPrefix(name, "ckpt-")
	if !ok || v == "" {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' || n > 1<<40 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// Write writes what Load reads into dir: model.safetensors
// (weights and quantizer state, Hugging Face names), config.json,
// tokenizer.json and, for a quantized model, its rules in quant.json.
func Write(dir string, m *layers.Model, tok *bpe.Tokenizer, rules []qat.Rule) error {
	if err := m.Save(filepath.Join(dir, "model.safetensors")); err != nil {
		return err
	}
	hf, _ := m.Config.HFConfig()
	if err := atomic.WriteFile(filepath.Join(dir, "config.json"), hf); err != nil {
		return err
	}
	// tokenizer.json and tokenizer_config.json: an imported tokenizer's
	// roles (bos, eos) live in the latter
	if err := tok.WriteFiles(dir); err != nil {
		return err
	}
	if len(rules) == 0 {
		return nil
	}
	b, _ := json.MarshalIndent(rules, "", "  ")
	return atomic.WriteFile(filepath.Join(dir, "quant.json"), b)
}

// List returns out's checkpoint directories in step order (by
// number: a run past step 9,999,999 has longer names).
func List(out string) []string {
	ents, _ := os.ReadDir(out)
	type ck struct {
		dir  string
		step int
	}
	var cks []ck
	for _, e := range ents {
		if n, ok := Step(e.Name()); ok && e.IsDir() {
			cks = append(cks, ck{filepath.Join(out, e.Name()), n})
		}
	}
	sort.Slice(cks, func(i, j int) bool { return cks[i].step < cks[j].step })
	dirs := make([]string, len(cks))
	for i, c := range cks {
		dirs[i] = c.dir
	}
	return dirs
}

// Latest returns the directory out/latest names, or "" if none.
func Latest(out string) (string, error) {
	b, err := os.ReadFile(filepath.Join(out, "latest"))
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(b))
	if _, ok := Step(name); !ok {
		return "", fmt.Errorf("%s/latest names %q, which is not a checkpoint name (ckpt-NNNNNNN)", out, name)
	}
	dir := filepath.Join(out, name)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		return "", fmt.Errorf("%s/latest names %s, which is not a checkpoint: %v", out, dir, err)
	}
	return dir, nil
}

// Resolve resolves a model argument: a checkpoint directory (a Hugging
// Face model directory, sharded or not, is one), or a run's output
// directory whose latest checkpoint is taken.
func Resolve(path string) (string, error) {
	if weightsPath(path) != "" {
		return path, nil
	}
	d, err := Latest(path)
	if err != nil {
		return "", err // a run directory whose latest is broken: say how
	}
	if d != "" {
		return d, nil
	}
	if exists(filepath.Join(path, "config.json")) {
		// a model directory short of its weights: name what is missing
		hint := ""
		if exists(filepath.Join(path, "pytorch_model.bin")) || exists(filepath.Join(path, "pytorch_model.bin.index.json")) {
			hint = " (pytorch_model.bin, a pickle, is not read: save the model with safe_serialization=True)"
		}
		return "", &layers.InputError{Err: fmt.Errorf("%s: config.json but no weights: %s (or %s) is missing%s",
			path, filepath.Join(path, "model.safetensors"), filepath.Join(path, safetensors.IndexName), hint)}
	}
	return "", fmt.Errorf("%s: neither a checkpoint (no model.safetensors) nor a run directory with checkpoints", path)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// weightsPath is a checkpoint directory's weights: model.safetensors,
// else the index of a sharded checkpoint (transformers' order), "" when
// neither is there.
func weightsPath(dir string) string {
	for _, name := range []string{"model.safetensors", safetensors.IndexName} {
		if p := filepath.Join(dir, name); exists(p) {
			return p
		}
	}
	return ""
}

// openWeights maps a checkpoint directory's weights (model.safetensors,
// or every shard of model.safetensors.index.json), checked against their
// headers and index before any tensor is read; the caller Closes it. path
// is what errors name: the file, or the index.
func openWeights(dir string) (f *safetensors.File, path string, err error) {
	path = weightsPath(dir)
	switch {
	case path == "":
		return nil, "", &layers.InputError{Err: fmt.Errorf("%s: %s (or %s) is missing", dir, "model.safetensors", safetensors.IndexName)}
	case strings.HasSuffix(path, safetensors.IndexName):
		f, err = safetensors.OpenSharded(path)
	default:
		f, err = safetensors.Open(path)
	}
	return f, path, err // the errors name the file
}

// qatMarkers are the files qat writes beside a checkpoint's weights and
// Hugging Face never does: a QAT or adapter checkpoint, a run's
// checkpoint, a run directory.
var qatMarkers = []string{"quant.json", "lora.json", "state.json", "latest"}

// IsHF reports whether dir is a Hugging Face model directory as
// downloaded: config.json, weights (model.safetensors or
// model.safetensors.index.json) and tokenizer.json, and none of the files
// qat writes beside its own checkpoints (quant.json, lora.json,
// state.json, latest) nor packed weights. A float checkpoint qat wrote
// without them is one too, and loads the same way.
func IsHF(dir string) bool {
	if !exists(filepath.Join(dir, "config.json")) || !exists(filepath.Join(dir, "tokenizer.json")) || weightsPath(dir) == "" {
		return false
	}
	for _, m := range qatMarkers {
		if exists(filepath.Join(dir, m)) {
			return false
		}
	}
	return !isPacked(dir)
}

// HFConfig reads a float model directory's config.json
// (layers.ReadHFConfig): the architecture a fine-tune from it builds. A
// missing config.json is an error naming it, and so is a
// quantization_config (GPTQ, AWQ, bitsandbytes checkpoints store integers
// this loader does not read; qat's own packed exports load through Load).
func HFConfig(dir string) (layers.Config, error) {
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return layers.Config{}, &layers.InputError{Err: fmt.Errorf("%s: not a model directory: %s is missing", dir, p)}
	}
	if err != nil {
		return layers.Config{}, err
	}
	var q struct {
		Q json.RawMessage `json:"quantization_config"`
	}
	if json.Unmarshal(b, &q) == nil && len(q.Q) > 0 && string(q.Q) != "null" {
		return layers.Config{}, &layers.InputError{Err: fmt.Errorf("%s: quantization_config: a quantized checkpoint; qat imports float weights (F32, F16, BF16)", p)}
	}
	c, err := layers.ParseHFConfig(b)
	if err != nil {
		return c, &layers.InputError{Err: fmt.Errorf("%s: %w", p, err)}
	}
	return c, nil
}

// loadHF loads a Hugging Face model directory: its model (LoadHFModel)
// and its tokenizer, which may have fewer tokens than the embedding has
// rows (Qwen2 pads its vocabulary), never more.
func loadHF(dir string) (*Model, error) {
	c, err := HFConfig(dir)
	if err != nil {
		return nil, err
	}
	tok, err := bpe.LoadDir(dir) // tokenizer.json with its tokenizer_config.json, generation_config.json
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() > c.Vocab {
		return nil, &layers.InputError{Err: fmt.Errorf("%s: tokenizer has %d tokens, more than config.json's vocab_size %d", dir, tok.VocabSize(), c.Vocab)}
	}
	m, err := LoadHFModel(dir)
	if err != nil {
		return nil, err
	}
	return &Model{Model: m, Tok: tok, Path: dir, Kind: HF}, nil
}

// LoadHFModel loads the model of a Hugging Face model directory, without
// its tokenizer: config.json (HFConfig: refused unless the model computes
// what transformers does), then the weights, mapped (one file or every
// shard of the index) and checked against the config before the model is
// allocated, then converted to float32 tensor by tensor, each tensor's
// file pages released once read: the peak memory is the float32 model
// plus about one tensor of the file.
func LoadHFModel(dir string) (*layers.Model, error) {
	c, err := HFConfig(dir)
	if err != nil {
		return nil, err
	}
	f, path, err := openWeights(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := c.CheckFile(f); err != nil {
		return nil, &layers.InputError{Err: fmt.Errorf("%s: %w", path, err)}
	}
	m := newModel(c)
	if err := m.LoadFrom(path, f); err != nil {
		return nil, err
	}
	return m, nil
}

// newModel is layers.New(c) with the memory it leaves behind returned to
// the OS before the weights are read in: New builds each parameter, then
// packs them into one arena and drops the per-parameter slices (never
// touched, since autograd.PackNew does not read them, but returned anyway
// so that nothing of a second float32 model waits on the runtime's
// background scavenger). Loading then peaks at the model plus about one
// tensor of the file, not twice the model (TestImportRSS).
func newModel(c layers.Config) *layers.Model {
	m := layers.New(c)
	debug.FreeOSMemory()
	return m
}

// loadCheckpointDir reads config.json and model.safetensors of a checkpoint, and
// attaches its quantizers when it has a quant.json (a QAT checkpoint runs
// fake-quantized, as it was trained).
func loadCheckpointDir(dir string) (m *layers.Model, rules []qat.Rule, adapters bool, err error) {
	c, err := layers.ReadHFConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, nil, false, err
	}
	// the weights are checked against the config before the model is
	// allocated: a config.json within the limits may still claim a model
	// the file does not hold
	f, path, err := openWeights(dir) // its errors name the file
	if err != nil {
		return nil, nil, false, err
	}
	defer f.Close()
	// An adapter checkpoint keeps LR-QAT layers' weights as their int8
	// frozen base instead of .weight, so the tensors are checked after the
	// adapters are prepared (LoadFrom); before, the file must at least
	// hold a byte per parameter the config claims.
	loraPath := filepath.Join(dir, "lora.json")
	lb, err := os.ReadFile(loraPath)
	adapters = err == nil
	if !adapters {
		if err := c.CheckFile(f); err != nil {
			return nil, nil, false, fmt.Errorf("%s: %w", path, err)
		}
	} else {
		var held int
		for _, t := range f.Tensors {
			held += len(t.Data)
		}
		if total, _ := c.Params(); total > held {
			return nil, nil, false, fmt.Errorf("%s: config.json describes %d parameters, the file holds %d bytes of tensors", path, total, held)
		}
	}
	if rules, err = readRules(dir); err != nil {
		return nil, nil, false, err
	}
	m = newModel(c)
	if rules != nil {
		if err := qat.Prepare(m, rules); err != nil {
			return nil, nil, false, fmt.Errorf("%s: %w", filepath.Join(dir, "quant.json"), err)
		}
	}
	// adapters: their tensors (and LR-QAT's frozen base) come from the
	// checkpoint below
	if adapters {
		var lc lora.Config
		if err := json.Unmarshal(lb, &lc); err != nil {
			return nil, nil, false, fmt.Errorf("%s: %w", loraPath, err)
		}
		if _, err := lora.Prepare(m, lc, 0); err != nil {
			return nil, nil, false, fmt.Errorf("%s: %w", loraPath, err)
		}
	}
	if err := m.LoadFrom(path, f); err != nil {
		return nil, nil, false, err
	}
	return m, rules, adapters, nil
}
