package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"qat/autograd"
	"qat/data/atomic"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
	"qat/qat/rotate"
)

// The W4A4 recipes' quantizers, as their configs train them (recipes_test
// holds these to the config files):
//
//   - configs/llama-w4a4.yaml: the w4a4 preset (int4 per-token dynamic
//     asymmetric activations) with LSQ's learned per-channel int4 weight
//     steps;
//   - configs/tiny-w4a4-actreg.yaml (arXiv 2404.03605): every block
//     linear's input quantized to int4 between two learned clip values,
//     the weights in full precision while training (a post-training
//     quantization rounds them after), and the kurtosis of every block
//     linear's output penalised.
func qatW4A4Rules() []qat.Rule {
	var rules []qat.Rule
	for _, r := range qat.Presets["w4a4"] {
		if r.Weights != nil {
			w := *r.Weights
			w.Scale = "lsq"
			r.Weights = &w
		}
		if r.Activations != nil {
			a := *r.Activations
			r.Activations = &a
		}
		rules = append(rules, r)
	}
	return rules
}

func actRegRules() []qat.Rule {
	return []qat.Rule{{Match: "model.layers.*",
		Activations: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "tensor", Scale: "clip"}}}
}

var actRegKurtosis = qat.KurtosisConfig{Coef: 1e-4, Target: 1.8, Match: "model.layers.*", On: qat.KurtosisOnOutput}

// rotationSeed draws the residual rotation's random signs (a run uses its
// train.seed; the step's cost does not depend on it).
const rotationSeed = 1

// A recipe turns a freshly initialised full-precision model into the one
// its training steps run on.
type recipe struct {
	name, desc string
	rotate     bool
	rules      []qat.Rule // nil: full precision
	kurtosis   qat.KurtosisConfig
}

// recipeRef is the recipe every other is also compared with.
const recipeRef = "w4a4-qat"

func recipes() []recipe {
	return []recipe{
		{name: "fp", desc: "full precision"},
		{name: recipeRef, desc: "w4a4 preset, LSQ weight steps (llama-w4a4.yaml)", rules: qatW4A4Rules()},
		{name: "w4a4-actreg", desc: "A4 learned clip inputs + output kurtosis, fp weights (tiny-w4a4-actreg.yaml)",
			rules: actRegRules(), kurtosis: actRegKurtosis},
		{name: "w4a4-hadamard-qat", desc: "Hadamard rotation, then w4a4-qat's quantizers", rotate: true, rules: qatW4A4Rules()},
	}
}

// builtRecipe is a recipe's model, ready to step.
type builtRecipe struct {
	recipe
	m    *layers.Model
	taps map[string]*qat.Kurtosis // nil for full precision
	one  func() (float32, error)
}

// build prepares r's model the way cmd/internal/train opens a run: the
// rotation first (from the full-precision weights), then the quantizers,
// kurtosis taps on every linear (regularising where r.kurtosis says; the
// others measure nothing during steps), the activation quantizers that
// need it calibrated on the benchmark's batch, and last the step over it.
func (r recipe) build(o Options, threads int, ids, tg []int32) (*builtRecipe, error) {
	m := layers.New(o.Model)
	m.Init(1)
	b := &builtRecipe{recipe: r, m: m}
	if r.rotate {
		if _, err := rotate.Hadamard(m, rotationSeed, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
	}
	if r.rules != nil {
		if err := qat.Prepare(m, r.rules); err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		taps, err := qat.Taps(m, r.kurtosis)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		qat.Measure(taps, false)
		b.taps = taps
		if qat.NeedsCalibration(m) {
			if _, err := qat.Calibrate(m, func() error {
				tp := autograd.NewTape()
				tp.SetNoGrad(true)
				m.Forward(tp, ids, o.Batch, o.Seq)
				return nil
			}); err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, err)
			}
		}
	}
	one, err := trainStep(m, o, threads, ids, tg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.name, err)
	}
	b.one = one
	return b, nil
}

// Recipes measures a training step of each W4A4 recipe beside full
// precision and plain W4A4 QAT, for o's model and batch, at each thread
// count. The recipes take turns step by step (each round starting at the
// next recipe), so drift in the machine's speed falls on all of them alike;
// each recipe's figure is the median of its o.Steps timed steps.
func Recipes(w io.Writer, o Options) ([]Result, error) {
	Machine(w)
	defer kernels.SetThreads(1)
	ids, tg := randomBatch(o)
	rs := recipes()
	fmt.Fprintf(w, "\ntraining step per recipe, %s (batch %d x seq %d): forward + backward + clip + AdamW,\n"+
		"median of %d steps taken in turn after %d untimed each\n", o.Name, o.Batch, o.Seq, o.Steps, o.Warmup)
	for _, r := range rs {
		fmt.Fprintf(w, "  %-18s %s\n", r.name, r.desc)
	}
	var res []Result
	tok := float64(o.Batch * o.Seq)
	for _, th := range o.Threads {
		kernels.SetThreads(th)
		built := make([]*builtRecipe, len(rs))
		for i, r := range rs {
			b, err := r.build(o, th, ids, tg)
			if err != nil {
				return res, err
			}
			built[i] = b
		}
		for range o.Warmup {
			for _, b := range built {
				if _, err := b.one(); err != nil {
					return res, fmt.Errorf("%s: %w", b.name, err)
				}
			}
		}
		times := make([][]float64, len(built))
		for round := range o.Steps {
			for k := range built {
				i := (round + k) % len(built)
				t0 := time.Now()
				if _, err := built[i].one(); err != nil {
					return res, fmt.Errorf("%s: %w", built[i].name, err)
				}
				times[i] = append(times[i], time.Since(t0).Seconds())
			}
		}
		med := make(map[string]float64, len(built))
		lo, hi := make([]float64, len(built)), make([]float64, len(built))
		for i, b := range built {
			med[b.name] = median(times[i]) // sorts times[i]
			lo[i], hi[i] = times[i][0], times[i][len(times[i])-1]
		}
		fmt.Fprintf(w, "\n  threads %d           ms/step   (min-max)         tokens/s   x fp   x %s\n", th, recipeRef)
		for i, b := range built {
			s := med[b.name]
			fmt.Fprintf(w, "  %-18s %8.1f   (%6.1f-%6.1f)   %8.0f   %4.2f   %4.2f\n",
				b.name, s*1e3, lo[i]*1e3, hi[i]*1e3, tok/s, s/med["fp"], s/med[recipeRef])
			name := o.Name + " " + b.name
			res = append(res,
				Result{Kind: "recipe", Name: name + " step", Threads: th, Value: s * 1e3, Unit: "ms"},
				Result{Kind: "recipe", Name: name + " tokens/s", Threads: th, Value: tok / s, Unit: "tokens/s"},
				Result{Kind: "recipe", Name: name + " vs fp", Threads: th, Value: s / med["fp"], Unit: "step time ratio",
					Ref: med["fp"] * 1e3, RefName: "fp ms"},
				Result{Kind: "recipe", Name: name + " vs " + recipeRef, Threads: th, Value: s / med[recipeRef], Unit: "step time ratio",
					Ref: med[recipeRef] * 1e3, RefName: recipeRef + " ms"})
		}
	}
	if o.JSON != "" {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for _, r := range res {
			if err := enc.Encode(r); err != nil {
				return res, err
			}
		}
		if err := atomic.WriteFile(o.JSON, buf.Bytes()); err != nil {
			return res, err
		}
	}
	return res, nil
}
