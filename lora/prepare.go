package lora

import (
	"fmt"
	"math"
	"path"
	"runtime"
	"strings"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// Config selects adapters (the `lora` section of a run config, and
// lora.json beside a checkpoint that has them).
type Config struct {
	// Method is lr-qat or lora-qat.
	Method string  `yaml:"method" json:"method"`
	Rank   int     `yaml:"rank" json:"rank"`
	Alpha  float64 `yaml:"alpha" json:"alpha"`
	// Targets are globs over linear names (model.layers.0.mlp.up_proj);
	// default model.layers.*.
	Targets []string `yaml:"targets" json:"targets"`
	// StepLRScale multiplies the learning rate of LR-QAT's scales (the
	// reference trains them at 1e-5 beside 1e-3 for the adapters).
	StepLRScale float64 `yaml:"step_lr_scale" json:"step_lr_scale"`
}

// Defaults are the reference implementation's: rank 32, alpha 1 (its
// code default), scales at 1/100 of the adapters' learning rate.
func (c Config) Defaults() Config {
	if c.Rank == 0 {
		c.Rank = 32
	}
	if c.Alpha == 0 {
		c.Alpha = 1
	}
	if len(c.Targets) == 0 {
		c.Targets = []string{"model.layers.*"}
	}
	if c.StepLRScale == 0 {
		c.StepLRScale = 0.01
	}
	return c
}

// Validate names the first bad field (under prefix).
func (c Config) Validate(prefix string) error {
	switch {
	case c.Method != "lr-qat" && c.Method != "lora-qat":
		return fmt.Errorf("%s.method: %q, want lr-qat or lora-qat", prefix, c.Method)
	case c.Rank < 1:
		return fmt.Errorf("%s.rank: %d, must be at least 1", prefix, c.Rank)
	case !(c.Alpha > 0) || c.Alpha > math.MaxFloat32:
		return fmt.Errorf("%s.alpha: %g, must be positive and a finite float32", prefix, c.Alpha)
	case !(c.StepLRScale > 0) || math.IsInf(c.StepLRScale, 0):
		return fmt.Errorf("%s.step_lr_scale: %g, must be positive and finite", prefix, c.StepLRScale)
	}
	for _, t := range c.Targets {
		if _, err := path.Match(t, ""); err != nil {
			return fmt.Errorf("%s.targets: %q: %v", prefix, t, err)
		}
	}
	return nil
}

// Prepare attaches adapters (Linear.Adapter) to the target linears of m
// (after qat.Prepare, whose weight quantizers say the grid). lr-qat takes
// each target's weight quantizer (symmetric int, per channel or per group)
// into an LRQAT built from the current weights and that quantizer's
// scales, then drops the float32 weight (Linear.Weight becomes nil and its
// memory is released). lora-qat takes the weight quantizer (or none) into
// a LoRAQAT, which applies it to W0 + (alpha/r) A B, and freezes W0. It returns how many linears it adapted;
// a target glob that matches none, or a target without a usable weight
// quantizer (lr-qat), is an error naming it.
func Prepare(m *layers.Model, c Config, seed uint64) (int, error) {
	c = c.Defaults()
	if err := c.Validate("lora"); err != nil {
		return 0, err
	}
	n := 0
	for _, t := range c.Targets {
		hit := false
		for i, nl := range m.Linears() {
			ok, _ := path.Match(t, nl.Name)
			if !ok {
				continue
			}
			hit = true
			l := nl.Linear
			if l.Weight == nil {
				continue // an earlier glob took it
			}
			sh := l.Weight.Shape()
			rows, cols := sh[0], sh[1]
			rank := min(c.Rank, rows, cols)
			switch c.Method {
			case "lr-qat":
				q, ok := l.WeightQuant.(*qat.Quantizer)
				if !ok || q.Format != kernels.Int || !q.Symmetric || (q.Granularity != "channel" && q.Granularity != "group") {
					return n, fmt.Errorf("lora.targets %q: %s: lr-qat needs a symmetric int weight quantizer per channel or group (quant rules), have %v", t, nl.Name, l.WeightQuant)
				}
				_, scales, group, err := q.Codes(l.Weight.Data())
				if err != nil {
					return n, fmt.Errorf("%s: %w", nl.Name, err)
				}
				lq, err := NewLRQAT(l.Weight.Data(), rows, cols, q.Bits, group, rank, float32(c.Alpha), scales, seed+uint64(i))
				if err != nil {
					return n, fmt.Errorf("%s: %w", nl.Name, err)
				}
				autograd.Release(l.Weight)
				l.Weight, l.WeightQuant, l.Adapter = nil, nil, lq
				// Codes' temporaries (6 bytes a weight: fake-quant values,
				// mask, codes) are garbage now, but the collector's goal
				// counts memory allocated and never touched (the gradient
				// arena of the frozen weights), so no cycle would start
				// before the two-minute forced one: at TinyLlama's size
				// every linear's stayed resident together (5.8 GB of a
				// 9.9 GB peak, qat bench finetune). Collected here, one
				// linear's are reused by the next.
				runtime.GC()
			case "lora-qat":
				if l.Adapter != nil {
					continue
				}
				l.WeightQuant, l.Adapter = nil, NewLoRAQAT(l.WeightQuant, rows, cols, rank, float32(c.Alpha), seed+uint64(i))
				l.Weight.SetRequiresGrad(false)
			}
			n++
		}
		if !hit {
			return n, fmt.Errorf("lora.targets %q matches no linear layer", t)
		}
	}
	return n, nil
}

// Trainable reports whether a parameter of a model with adapters trains:
// the quantizers' tensors (adapters, LR-QAT scales, activation steps) do;
// embeddings, norms and frozen base weights do not.
func Trainable(p layers.Param) bool { return p.Quant }

// LRScale is the optimizer's learning-rate scale of p (0: the base rate):
// LR-QAT's scales ("<linear>.weight_quant.step") train at StepLRScale
// times the base rate. The rule is by name, as it was in the train loop, so
// it also covers the LSQ steps of linears no target took.
func (c Config) LRScale(p layers.Param) float64 {
	if c.Method == "lr-qat" && strings.HasSuffix(p.Name, ".weight_quant.step") {
		return c.Defaults().StepLRScale
	}
	return 0
}

// Merge folds the adapters of m into plain weights, so the model computes
// the same logits bit for bit with no adapters and exports like any QAT
// checkpoint:
//   - an LR-QAT layer becomes W = s*q (q the integers Forward computes)
//     under a symmetric int quantizer with fixed steps s (scale lsq);
//   - a LoRA-QAT layer becomes W0 + (alpha/r) A B (computed by the same
//     ops as its forward) under its own weight quantizer.
//
// rules are the model's quant rules; Merge returns the rules that
// re-create its quantizers (for quant.json): one per merged LR-QAT layer,
// keeping the activation spec of the rule that matched it, then those of
// rules that still govern a layer or the KV cache.
func Merge(m *layers.Model, rules []qat.Rule) ([]qat.Rule, int, error) {
	var out []qat.Rule
	n := 0
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	for _, nl := range m.Linears() {
		switch lq := nl.Linear.Adapter.(type) {
		case *LoRAQAT:
			w := tp.Add(nl.Linear.Weight, tp.Scale(tp.MatMul(lq.A, lq.B, false, false), lq.Scale))
			copy(nl.Linear.Weight.Data(), w.Data())
			nl.Linear.Weight.SetRequiresGrad(true)
			nl.Linear.WeightQuant, nl.Linear.Adapter = lq.Inner, nil
			tp.Reset()
			n++
		case *LRQAT:
			_, w := lq.Ints()
			spec := &qat.Spec{Format: kernels.Int, Bits: lq.Bits, Symmetric: true, Granularity: "group", GroupSize: lq.Group, Scale: "lsq"}
			if lq.Group == lq.Cols {
				spec.Granularity, spec.GroupSize = "channel", 0
			}
			v := autograd.NewParam(lq.Rows, lq.Cols)
			copy(v.Data(), w)
			nl.Linear.Weight, nl.Linear.WeightQuant, nl.Linear.Adapter = v, nil, nil
			r := qat.Rule{Match: nl.Name, Weights: spec}
			if err := qat.Prepare(m, []qat.Rule{r}); err != nil {
				return nil, n, err
			}
			copy(nl.Linear.WeightQuant.(*qat.Quantizer).Step.Data(), lq.Step.Data())
			for _, o := range rules {
				if ok, _ := path.Match(o.Match, nl.Name); ok && (o.Weights != nil || o.Activations != nil) {
					r.Activations = o.Activations
					break
				}
			}
			out = append(out, r)
			n++
		}
	}
	// the model's rules that still govern something: a layer not merged,
	// or attention (kv_cache)
	merged := map[string]bool{}
	for _, r := range out {
		merged[r.Match] = true
	}
	for _, o := range rules {
		keep := o.KVCache != nil
		for _, nl := range m.Linears() {
			if ok, _ := path.Match(o.Match, nl.Name); ok && !merged[nl.Name] {
				keep = true
			}
		}
		if keep {
			out = append(out, o)
		}
	}
	return out, n, nil
}
