// Package config reads qat's YAML run configurations strictly: an unknown
// key, a wrong type or an impossible value is an error naming the file, the
// line and the field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"

	"qat/kernels"
	"qat/layers"
	"qat/lora"
	"qat/optim"
	"qat/qat"
)

// Data names the prepared dataset (`qat data prepare` writes it).
type Data struct {
	Dir string `yaml:"dir"`
}

// Train holds the schedule of a run.
type Train struct {
	Steps       int     `yaml:"steps"`
	Batch       int     `yaml:"batch"`
	Seq         int     `yaml:"seq"`
	GradAccum   int     `yaml:"grad_accum"`
	LR          float64 `yaml:"lr"`
	MinLR       float64 `yaml:"min_lr"`
	Warmup      int     `yaml:"warmup"`
	GradClip    float64 `yaml:"grad_clip"`
	Seed        uint64  `yaml:"seed"`
	EvalEvery   int     `yaml:"eval_every"`
	EvalBatches int     `yaml:"eval_batches"` // 0: the whole validation split
	// NoFinalEval skips the whole-split evaluation after the last step
	// (runs that only measure speed or memory).
	NoFinalEval bool `yaml:"no_final_eval"`
	CkptEvery   int  `yaml:"ckpt_every"`
	KeepCkpts   int  `yaml:"keep_ckpts"`
	Threads     int  `yaml:"threads"`
	LogEvery    int  `yaml:"log_every"`
	// Engine computes the loss and gradients: tape (our eager autograd,
	// the default) or gorgonia (the same model as a Gorgonia ExprGraph on
	// its TapeMachine; see docs/gorgonia.md). Optimizer, checkpoints and
	// evaluation are the same for both.
	Engine string `yaml:"engine"`
	// Device runs the tape engine's loss and gradients on cpu (the
	// default) or cuda: the explicit Llama step of layers/device on the
	// GPU, in a binary built with the gpu tag (docs/cuda.md); full
	// precision or quantizers with minmax scales, no adapters. Optimizer
	// and checkpoints stay on the CPU.
	Device string `yaml:"device"`
}

// Optimizer holds AdamW's settings.
type Optimizer struct {
	Name        string  `yaml:"name"`
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`
	Eps         float64 `yaml:"eps"`
	WeightDecay float64 `yaml:"weight_decay"`
	// States: how the moments are stored (state: fp32, int8 or fp8;
	// block, min_8bit_size, fp32_states).
	optim.States `yaml:",inline"`
	// Shard keeps each process's share of the moments only (ZeRO-1, in a
	// --distributed run): the processes own whole tensors, update their
	// weights and gather the others'.
	Shard bool `yaml:"shard"`
}

// Quant selects quantization-aware training: a preset (qat.Presets) and
// rules of their own, which take precedence over the preset's.
type Quant struct {
	Preset   string             `yaml:"preset"`
	Rules    []qat.Rule         `yaml:"rules"`
	Kurtosis qat.KurtosisConfig `yaml:"kurtosis"`
	// CalibBatches is how many training batches set the steps of
	// activation quantizers with mse or lsq scales before training.
	CalibBatches int `yaml:"calib_batches"`
	// Init starts QAT from a post-training quantization of the starting
	// weights: rtn (default: the quantizers as attached), gptq, qqq
	// (smoothing + gptq), or gwq (1% of each weight, by loss gradient,
	// kept in fp16 unless the rules give a fraction). gptq and qqq keep
	// their scales as learned steps.
	Init string `yaml:"init"`
	// Rotate rotates the init_from model before its quantizers are
	// attached and calibrated: "hadamard" (QuaRot: package qat/rotate,
	// the residual stream's signs from train.seed), "" none. A resumed
	// run's checkpoint is rotated already and is not rotated again.
	Rotate string `yaml:"rotate"`
}

// Config is a run configuration.
type Config struct {
	Model     layers.Config `yaml:"model"`
	Data      Data          `yaml:"data"`
	Train     Train         `yaml:"train"`
	Optimizer Optimizer     `yaml:"optimizer"`
	Quant     Quant         `yaml:"quant"`
	// Lora adds low-rank adapters (LR-QAT or LoRA + QAT); nil: none.
	Lora   *lora.Config `yaml:"lora"`
	OutDir string       `yaml:"out_dir"`
	// InitFrom starts training from a model: a Hugging Face model
	// directory, a checkpoint or a run directory. Its config.json gives
	// the architecture (modelFromInit).
	InitFrom string `yaml:"init_from"`

	// resumed: the config a run saved, whose model section is already the
	// checkpoint's (init_from need not exist any more).
	resumed bool
}

// QuantRules returns the rules of the quant section, nil when the run is
// full precision: the config's own rules, then the preset's rules for
// globs the config does not name itself.
func (c *Config) QuantRules() []qat.Rule {
	rules := append([]qat.Rule(nil), c.Quant.Rules...)
	own := map[string]bool{}
	for _, r := range rules {
		own[r.Match] = true
	}
	for _, r := range qat.Presets[c.Quant.Preset] {
		if !own[r.Match] {
			rules = append(rules, r)
		}
	}
	switch c.Quant.Init {
	case "gptq", "qqq":
		rules = qat.FixedWeightSteps(rules)
	case "gwq":
		rules = qat.WithOutliers(rules, 0.01)
	}
	return rules
}

// Defaults fills what a config may leave out.
func Defaults() Config {
	return Config{
		Train: Train{GradAccum: 1, LR: 3e-3, MinLR: 3e-4, Warmup: 100, GradClip: 1, Seed: 1, EvalEvery: 200,
			CkptEvery: 200, KeepCkpts: 2, Threads: 2, LogEvery: 10},
		Optimizer: Optimizer{Name: "adamw", Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, States: optim.DefaultStates},
		Quant:     Quant{CalibBatches: 4},
		OutDir:    "runs/out",
	}
}

// MaxThreads bounds train.threads: every thread of the tape engine holds a
// replica's gradients, so a mistyped count would exhaust memory.
const MaxThreads = 1024

// InputError marks errors caused by the user's files or flags (exit
// status 2 from the CLI).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// IsInput reports whether err is an InputError.
func IsInput(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// fieldError is a validation failure at a YAML path such as "train.lr".
type fieldError struct {
	path string
	msg  string
}

// Parse decodes b over Defaults, applies overrides ("train.lr=1e-3", as
// torchtune's key=value arguments) and validates; name is used in messages.
func Parse(name string, b []byte, overrides ...string) (*Config, error) {
	return parse(name, b, false, overrides...)
}

func parse(name string, b []byte, resumed bool, overrides ...string) (*Config, error) {
	c := Defaults()
	c.resumed = resumed
	if err := Unmarshal(name, b, &c); err != nil {
		return nil, err
	}
	for _, o := range overrides {
		if err := set(&c, o); err != nil {
			return nil, &InputError{fmt.Errorf("--set %s: %w", o, err)}
		}
	}
	// train.min_lr left out is a tenth of train.lr, so a fine-tune that
	// lowers lr (1e-5 for a pretrained model) needs no min_lr.
	if !trainKeyGiven(b, overrides, "min_lr") {
		c.Train.MinLR = c.Train.LR / 10
	}
	var fe *fieldError
	if c.InitFrom != "" && !c.resumed {
		fe = c.modelFromInit(modelKeys(b, overrides))
	}
	if fe == nil {
		fe = c.validate()
	}
	if fe == nil {
		// Quantizer specs and rules are checked against the model's shapes,
		// without building the model (its sizes are within the limits, but
		// a config need not fit in memory to be checked).
		if rules := c.QuantRules(); len(rules) > 0 {
			if err := qat.CheckRules(c.Model, rules); err != nil {
				where := name
				if line := lineOf(b, "quant"); line > 0 {
					where = fmt.Sprintf("%s:%d", name, line)
				}
				return nil, &InputError{fmt.Errorf("%s: %w", where, err)}
			}
		}
	} else {
		where := name
		if line := lineOf(b, fe.path); line > 0 {
			where = fmt.Sprintf("%s:%d", name, line)
		}
		return nil, &InputError{fmt.Errorf("%s: %s: %s", where, fe.path, fe.msg)}
	}
	return &c, nil
}

// Unmarshal decodes YAML strictly into v. The YAML library panics on some
// malformed input (a tagged scalar where a list belongs): that is the
// file's fault, so it is an InputError naming the file, not a crash.
func Unmarshal(name string, b []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &InputError{fmt.Errorf("%s: malformed YAML (%v)", name, r)}
		}
	}()
	if err := yaml.UnmarshalWithOptions(b, v, yaml.Strict()); err != nil {
		return &InputError{fmt.Errorf("%s: %s", name, yaml.FormatError(err, false, true))}
	}
	return nil
}

// lineOf finds the line of a dotted key in the YAML source, 0 if absent.
func lineOf(b []byte, path string) int {
	p, err := yaml.PathString("$." + path)
	if err != nil {
		return 0
	}
	n, err := p.ReadNode(bytes.NewReader(b))
	if err != nil || n == nil || n.GetToken() == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

func (c *Config) validate() *fieldError {
	if err := c.Model.Validate(); err != nil {
		var fe *layers.FieldError
		if errors.As(err, &fe) {
			return &fieldError{"model." + fe.Field, fe.Msg}
		}
		path, rest, _ := strings.Cut(err.Error(), ": ")
		return &fieldError{path, rest}
	}
	t := c.Train
	pos := func(path string, v int) *fieldError {
		if v <= 0 {
			return &fieldError{path, fmt.Sprintf("%d, must be positive", v)}
		}
		return nil
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	for _, f := range []*fieldError{
		pos("train.batch", t.Batch), pos("train.seq", t.Seq), pos("train.grad_accum", t.GradAccum),
		pos("train.threads", t.Threads),
	} {
		if f != nil {
			return f
		}
	}
	switch {
	case t.Seq > c.Model.MaxSeq:
		return &fieldError{"train.seq", fmt.Sprintf("%d exceeds model.max_seq %d", t.Seq, c.Model.MaxSeq)}
	case t.Threads > MaxThreads:
		// each thread of the tape engine keeps a replica's gradients
		return &fieldError{"train.threads", fmt.Sprintf("%d exceeds %d", t.Threads, MaxThreads)}
	case t.Steps < 0:
		return &fieldError{"train.steps", fmt.Sprintf("%d, must not be negative", t.Steps)}
	case !(t.LR > 0) || !finite(t.LR):
		return &fieldError{"train.lr", fmt.Sprintf("%g, must be positive", t.LR)}
	case t.MinLR < 0 || t.MinLR > t.LR || !finite(t.MinLR):
		return &fieldError{"train.min_lr", fmt.Sprintf("%g, must be in [0, train.lr]", t.MinLR)}
	case t.Warmup < 0:
		return &fieldError{"train.warmup", fmt.Sprintf("%d, must not be negative", t.Warmup)}
	case t.GradClip < 0 || !finite(t.GradClip):
		return &fieldError{"train.grad_clip", fmt.Sprintf("%g, must not be negative (0: off)", t.GradClip)}
	case t.EvalEvery < 0 || t.CkptEvery < 0 || t.LogEvery < 0 || t.EvalBatches < 0:
		return &fieldError{"train", "eval_every, ckpt_every, log_every and eval_batches must not be negative"}
	case t.KeepCkpts < 1:
		return &fieldError{"train.keep_ckpts", fmt.Sprintf("%d, must be at least 1", t.KeepCkpts)}
	case t.Engine != "" && t.Engine != "tape" && t.Engine != "gorgonia":
		return &fieldError{"train.engine", fmt.Sprintf("%q, want tape or gorgonia", t.Engine)}
	case t.Device != "" && t.Device != "cpu" && t.Device != "cuda":
		return &fieldError{"train.device", fmt.Sprintf("%q, want cpu or cuda", t.Device)}
	case t.Device == "cuda" && t.Engine == "gorgonia":
		return &fieldError{"train.device", "cuda runs the tape's step, not train.engine gorgonia"}
	case t.Device == "cuda" && c.Lora != nil:
		return &fieldError{"train.device", "cuda does not train adapters (lora) yet: train them on the cpu"}
	}
	o := c.Optimizer
	switch {
	case o.Name != "adamw":
		return &fieldError{"optimizer.name", fmt.Sprintf("%q, want adamw", o.Name)}
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return &fieldError{"optimizer.beta1", fmt.Sprintf("%g, must be in [0, 1)", o.Beta1)}
	case !(o.Beta2 >= 0 && o.Beta2 < 1):
		return &fieldError{"optimizer.beta2", fmt.Sprintf("%g, must be in [0, 1)", o.Beta2)}
	case !(o.Eps > 0) || !finite(o.Eps):
		return &fieldError{"optimizer.eps", fmt.Sprintf("%g, must be positive", o.Eps)}
	case o.WeightDecay < 0 || !finite(o.WeightDecay):
		return &fieldError{"optimizer.weight_decay", fmt.Sprintf("%g, must not be negative", o.WeightDecay)}
	case o.Kind != "fp32" && o.Kind != "int8" && o.Kind != "fp8":
		return &fieldError{"optimizer.state", fmt.Sprintf("%q, want fp32, int8 or fp8", o.Kind)}
	case o.Block < 0 || o.Block > kernels.MaxBlock8:
		return &fieldError{"optimizer.block", fmt.Sprintf("%d, must be 1 to %d (0: 256 for int8, 128 for fp8)", o.Block, kernels.MaxBlock8)}
	case o.MinSize < 0:
		return &fieldError{"optimizer.min_8bit_size", fmt.Sprintf("%d, must not be negative", o.MinSize)}
	case o.States.Validate("optimizer") != nil:
		return &fieldError{"optimizer.fp32_states", o.States.Validate("optimizer").Error()}
	case c.Quant.Preset != "" && qat.Presets[c.Quant.Preset] == nil:
		return &fieldError{"quant.preset", fmt.Sprintf("%q, want one of %s", c.Quant.Preset, qat.PresetNames())}
	case c.Quant.Init != "" && c.Quant.Init != "rtn" && c.Quant.Init != "gptq" && c.Quant.Init != "qqq" && c.Quant.Init != "gwq":
		return &fieldError{"quant.init", fmt.Sprintf("%q, want rtn, gptq, qqq or gwq", c.Quant.Init)}
	case c.Quant.Rotate != "" && c.Quant.Rotate != "hadamard":
		return &fieldError{"quant.rotate", fmt.Sprintf("%q, want hadamard (or leave it out)", c.Quant.Rotate)}
	case c.Quant.Rotate != "" && c.InitFrom == "":
		// a rotation preserves a trained model's function while it
		// spreads the outlier channels training grew; random weights have
		// none, and training from scratch would grow them in any basis
		return &fieldError{"quant.rotate", "rotates a trained model: set init_from (a model trained from scratch has no outliers to spread yet)"}
	case c.Quant.Rotate != "" && c.Model.DownHadamard != "" && !c.resumed:
		return &fieldError{"quant.rotate", fmt.Sprintf("init_from %s is rotated already (qat_down_hadamard %q): leave quant.rotate out", c.InitFrom, c.Model.DownHadamard)}
	case c.Quant.Rotate != "" && c.Quant.Init == "qqq":
		return &fieldError{"quant.init", "qqq smooths down_proj's input into up_proj, which quant.rotate's online Hadamard transform separates from it: use rtn or gptq"}
	case c.Model.DownHadamard != "" && c.InitFrom == "" && !c.resumed:
		return &fieldError{"model.down_hadamard", "is set by a rotation (quant.rotate, qat ptq --rotate) of a trained model, not by hand"}
	case c.Quant.CalibBatches < 1:
		return &fieldError{"quant.calib_batches", fmt.Sprintf("%d, must be at least 1", c.Quant.CalibBatches)}
	case c.Quant.Kurtosis.Coef < 0 || math.IsNaN(c.Quant.Kurtosis.Coef):
		return &fieldError{"quant.kurtosis.coef", fmt.Sprintf("%g, must not be negative", c.Quant.Kurtosis.Coef)}
	case c.Quant.Kurtosis.Coef > 0 && c.Quant.Kurtosis.Match == "":
		return &fieldError{"quant.kurtosis.match", "missing: a glob of the linear layers whose input (or output, with on: output) kurtosis is regularised"}
	case c.Quant.Kurtosis.Validate("quant.kurtosis") != nil:
		return &fieldError{"quant.kurtosis.on", fmt.Sprintf("%q, want input or output", c.Quant.Kurtosis.On)}
	case c.Lora != nil && c.Lora.Defaults().Validate("lora") != nil:
		path, rest, _ := strings.Cut(c.Lora.Defaults().Validate("lora").Error(), ": ")
		return &fieldError{path, rest}
	case c.Lora != nil && c.Lora.Method == "lr-qat" && len(c.QuantRules()) == 0:
		return &fieldError{"lora.method", "lr-qat needs int weight quantizers on its targets: set quant.preset or quant.rules"}
	case c.Data.Dir == "":
		return &fieldError{"data.dir", "missing: the directory `qat data prepare` wrote"}
	case c.OutDir == "":
		return &fieldError{"out_dir", "missing"}
	}
	return nil
}

// set applies one "a.b.c=value" override through the yaml tags.
// field finds the field of struct v whose yaml name is name, looking into
// inlined structs too.
func field(v reflect.Value, name string) (reflect.Value, bool) {
	for i := 0; i < v.NumField(); i++ {
		sf := v.Type().Field(i)
		if !sf.IsExported() || sf.Tag.Get("yaml") == "-" {
			continue // not a key: reflect could not set it anyway
		}
		tag := strings.Split(sf.Tag.Get("yaml"), ",")
		if tag[0] == name && name != "" {
			return v.Field(i), true
		}
		if tag[0] == "" && len(tag) > 1 && tag[1] == "inline" {
			if f, ok := field(v.Field(i), name); ok {
				return f, true
			}
		}
	}
	return reflect.Value{}, false
}

func set(c *Config, kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	if !ok {
		return errors.New("want key.path=value")
	}
	v := reflect.ValueOf(c).Elem()
	for _, part := range strings.Split(key, ".") {
		if v.Kind() != reflect.Struct {
			return fmt.Errorf("%s: %s is not a section", key, part)
		}
		f, found := field(v, part)
		if !found {
			return fmt.Errorf("unknown key %q", key)
		}
		v = f
	}
	var err error
	switch v.Kind() {
	case reflect.String:
		v.SetString(val)
	case reflect.Int:
		var n int64
		n, err = strconv.ParseInt(val, 10, 64)
		v.SetInt(n)
	case reflect.Uint64:
		var n uint64
		n, err = strconv.ParseUint(val, 10, 64)
		v.SetUint(n)
	case reflect.Float64:
		var f float64
		f, err = strconv.ParseFloat(val, 64)
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		b, err = strconv.ParseBool(val)
		v.SetBool(b)
	default:
		return fmt.Errorf("%s is a section, not a value", key)
	}
	if err != nil {
		return fmt.Errorf("%s: %q is not a %s", key, val, v.Kind())
	}
	return nil
}

// Load reads and parses a config file.
func Load(path string, overrides ...string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &InputError{err}
	}
	return Parse(path, b, overrides...)
}

// LoadSaved reads the config.yaml a run saved: its model section is the
// one the run was built with, so init_from is not read again (the
// directory it named may be gone; the run resumes from its checkpoints).
func LoadSaved(path string, overrides ...string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &InputError{err}
	}
	return parse(path, b, true, overrides...)
}
