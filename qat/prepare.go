package qat

import (
	"fmt"
	"math"
	"path"
	"sort"
	"strings"

	"qat/kernels"
	"qat/layers"
)

// Rule attaches quantizers to the linear layers whose name (for example
// model.layers.3.self_attn.q_proj or lm_head) matches Match, a path.Match
// glob. The first matching rule decides; nil specs leave that tensor in
// full precision. The attention output is the o_proj's input: its
// activations spec quantizes it.
//
// KVCache quantizes the keys (after RoPE) and values of the attention
// modules whose name (model.layers.3.self_attn) matches: the first
// matching rule with a kv_cache spec decides. Its rows are the
// kv_heads*head_dim values of one token; granularity group with
// group_size head_dim is per head and token.
type Rule struct {
	Match       string `yaml:"match" json:"match"`
	Weights     *Spec  `yaml:"weights" json:"weights,omitempty"`
	Activations *Spec  `yaml:"activations" json:"activations,omitempty"`
	KVCache     *Spec  `yaml:"kv_cache" json:"kv_cache,omitempty"`
}

func spec(format kernels.FormatID, bits int, sym bool, gran string, group int, scale string) *Spec {
	return &Spec{Format: format, Bits: bits, Symmetric: sym, Granularity: gran, GroupSize: group, Scale: scale}
}

func restricted(s *Spec) *Spec { s.Restricted = true; return s }

func twoLevel(s *Spec) *Spec { s.TwoLevel = true; return s }

// Presets are the named recipes. Every linear of the transformer blocks is
// quantized; the lm_head (tied to the embedding in the reference configs)
// stays in full precision unless a rule says otherwise.
var Presets = map[string][]Rule{
	// llama.cpp's Q4_0 grid for weights, activations in full precision.
	"w4a16-g32": {{Match: "model.layers.*", Weights: spec(kernels.Q4_0, 4, true, "group", 32, "minmax")}},
	// torchao's 8da4w / QQQ layout: int4 per-channel weights, int8
	// per-token asymmetric dynamic activations.
	"w4a8": {{Match: "model.layers.*", Weights: spec(kernels.Int, 4, true, "channel", 0, "minmax"),
		Activations: spec(kernels.Int, 8, false, "token", 0, "minmax")}},
	// QQQ's W4A8 (arXiv 2406.09904): int4 per channel on the restricted
	// grid [-7, 7] (s = amax/7), int8 per-token symmetric dynamic
	// activations on [-127, 127] (s = amax/127).
	"w4a8-qqq": {{Match: "model.layers.*", Weights: restricted(spec(kernels.Int, 4, true, "channel", 0, "minmax")),
		Activations: restricted(spec(kernels.Int, 8, true, "token", 0, "minmax"))}},
	// QQQ's per-group W4A8: int4 groups of 128 folded into int8 per
	// channel (TwoLevel), the same activations.
	"w4a8-qqq-g128": {{Match: "model.layers.*", Weights: twoLevel(spec(kernels.Int, 4, true, "group", 128, "minmax")),
		Activations: restricted(spec(kernels.Int, 8, true, "token", 0, "minmax"))}},
	"w4a4": {{Match: "model.layers.*", Weights: spec(kernels.Int, 4, true, "channel", 0, "minmax"),
		Activations: spec(kernels.Int, 4, false, "token", 0, "minmax")}},
	"w8a8": {{Match: "model.layers.*", Weights: spec(kernels.Int, 8, true, "channel", 0, "minmax"),
		Activations: spec(kernels.Int, 8, false, "token", 0, "minmax")}},
	"fp8": {{Match: "model.layers.*", Weights: spec(kernels.FP8E4M3, 0, true, "channel", 0, "minmax"),
		Activations: spec(kernels.FP8E4M3, 0, true, "token", 0, "minmax")}},
}

func pathMatch(pattern, name string) (bool, error) { return path.Match(pattern, name) }

// PresetNames lists the presets, sorted.
func PresetNames() string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// target is a linear layer (or, with out 0, an attention module's KV
// cache of in values per token) that rules are matched against.
type target struct {
	name     string
	out, in  int
	noWeight bool // a linear whose float32 weight LR-QAT adapters replaced
}

// plan validates rules against the linears and attention modules of a
// model and returns, for each, the index of the rule that decides it (-1:
// none). Its errors are Prepare's, and it allocates nothing per weight, so
// a configuration can be checked without building its model (CheckRules).
func plan(rules []Rule, lins, attns []target) (linRule, attnRule []int, err error) {
	for i, r := range rules {
		if _, err := path.Match(r.Match, "x"); err != nil {
			return nil, nil, fmt.Errorf("quant.rules[%d].match %q: %v", i, r.Match, err)
		}
		for _, s := range []struct {
			name string
			s    *Spec
		}{{"weights", r.Weights}, {"activations", r.Activations}, {"kv_cache", r.KVCache}} {
			if s.s == nil {
				continue
			}
			path := fmt.Sprintf("quant.rules[%d].%s", i, s.name)
			if err := s.s.Validate(path); err != nil {
				return nil, nil, err
			}
			if s.name != "activations" && s.s.Scale == "clip" {
				return nil, nil, fmt.Errorf("%s.scale: clip is for linear inputs (activations): learned clip values of a layer's input", path)
			}
			if s.name != "weights" && s.s.Scale != "minmax" && s.s.Granularity != "tensor" {
				return nil, nil, fmt.Errorf("%s.granularity: %s with %s scales: activations with fixed or learned steps use granularity tensor",
					path, s.s.Granularity, s.s.Scale)
			}
		}
	}
	used := make([]bool, len(rules))
	linRule = make([]int, len(lins))
	for k, ln := range lins {
		linRule[k] = -1
		for i, r := range rules {
			if ok, _ := path.Match(r.Match, ln.name); !ok || (r.KVCache != nil && r.Weights == nil && r.Activations == nil) {
				continue // a kv_cache-only rule says nothing about linears
			}
			used[i], linRule[k] = true, i
			if ln.noWeight {
				return nil, nil, fmt.Errorf("quant.rules[%d] on %s: the layer has LR-QAT adapters instead of a float32 weight", i, ln.name)
			}
			if r.Weights != nil {
				if err := fits(*r.Weights, ln.in, ln.out*ln.in); err != nil {
					return nil, nil, fmt.Errorf("quant.rules[%d].weights on %s: %v", i, ln.name, err)
				}
			}
			if r.Activations != nil {
				if r.Activations.Outliers > 0 || r.Activations.TwoLevel {
					return nil, nil, fmt.Errorf("quant.rules[%d].activations: outliers and two_level are for weights", i)
				}
				if err := fits(*r.Activations, ln.in, ln.in); err != nil {
					return nil, nil, fmt.Errorf("quant.rules[%d].activations on %s: %v", i, ln.name, err)
				}
			}
			break
		}
	}
	attnRule = make([]int, len(attns))
	for k, a := range attns {
		attnRule[k] = -1
		for i, r := range rules {
			if ok, _ := path.Match(r.Match, a.name); !ok || r.KVCache == nil {
				continue
			}
			used[i], attnRule[k] = true, i
			if err := fits(*r.KVCache, a.in, a.in); err != nil {
				return nil, nil, fmt.Errorf("quant.rules[%d].kv_cache on %s: %v", i, a.name, err)
			}
			break
		}
	}
	for i, u := range used {
		if !u {
			return nil, nil, fmt.Errorf("quant.rules[%d].match %q matches no linear layer (or attention, for kv_cache)", i, rules[i].Match)
		}
	}
	return linRule, attnRule, nil
}

// fits reports whether a quantizer of spec can be built for rows of row
// values and n in all: NewQuantizer's checks, without its allocation.
func fits(spec Spec, row, n int) error {
	if b := spec.block(); b > 0 {
		if row%b != 0 {
			return fmt.Errorf("%s needs rows that are a multiple of %d, have %d", spec.Format, b, row)
		}
		return nil
	}
	_, err := spec.Group(row, n)
	return err
}

// CheckRules reports what Prepare would report for rules on a model of
// config c (valid), without building it (layers.Describe): config files
// are checked this way, whatever the model's size.
func CheckRules(c layers.Config, rules []Rule) error {
	lins, attns := targets(layers.Describe(c))
	_, _, err := plan(rules, lins, attns)
	return err
}

// targets are the linears and attention modules of m that rules match.
func targets(m *layers.Model) (lins, attns []target) {
	for _, nl := range m.Linears() {
		if nl.Linear.Weight == nil {
			lins = append(lins, target{name: nl.Name, noWeight: true})
			continue
		}
		sh := nl.Linear.Weight.Shape()
		lins = append(lins, target{name: nl.Name, out: sh[0], in: sh[1]})
	}
	for _, na := range m.Attentions() {
		attns = append(attns, target{name: na.Name, in: na.Attention.KVHeads * na.Attention.HeadDim()})
	}
	return lins, attns
}

// Prepare attaches quantizers to m by rules (torchao's prepare step). A
// rule that matches no layer, an invalid spec, or a group size that does
// not divide a layer's input is an error naming the rule, and m is left as
// it was; LSQ steps start from the weights.
func Prepare(m *layers.Model, rules []Rule) error {
	lns, nas := m.Linears(), m.Attentions()
	lins, attns := targets(m)
	linRule, attnRule, err := plan(rules, lins, attns)
	if err != nil {
		return err
	}
	for k, ln := range lns {
		if linRule[k] < 0 {
			continue
		}
		i, r := linRule[k], rules[linRule[k]]
		w := ln.Linear.Weight
		out, in := w.Shape()[0], w.Shape()[1]
		if r.Weights != nil {
			q, err := NewQuantizer(*r.Weights, in, out*in)
			if err != nil {
				return fmt.Errorf("quant.rules[%d].weights on %s: %v", i, ln.Name, err)
			}
			if r.Weights.Outliers > 0 {
				// kept weights by magnitude (GWQ's gradients replace
				// them), left out of the steps' initial ranges
				abs := make([]float32, w.Size())
				for i, v := range w.Data() {
					abs[i] = float32(math.Abs(float64(v)))
				}
				o := &Outliers{Inner: q, Idx: TopK(abs, OutlierCount(r.Weights.Outliers, w.Size())), N: w.Size()}
				wz := append([]float32(nil), w.Data()...)
				for _, i := range o.Idx {
					wz[i] = 0
				}
				q.Init(wz)
				ln.Linear.WeightQuant = o
			} else {
				q.Init(w.Data())
				ln.Linear.WeightQuant = q
				if r.Weights.TwoLevel {
					ln.Linear.WeightQuant = &TwoLevel{Inner: q}
				}
			}
		}
		if r.Activations != nil {
			q, err := NewQuantizer(*r.Activations, in, in)
			if err != nil {
				return fmt.Errorf("quant.rules[%d].activations on %s: %v", i, ln.Name, err)
			}
			q.Activation = true
			ln.Linear.InputQuant = q
		}
	}
	for k, na := range nas {
		if attnRule[k] < 0 {
			continue
		}
		i, r := attnRule[k], rules[attnRule[k]]
		row, a := attns[k].in, na.Attention
		var err error
		if a.KQuant, err = kvQuantizer(*r.KVCache, row); err == nil {
			a.VQuant, err = kvQuantizer(*r.KVCache, row)
		}
		if err != nil {
			return fmt.Errorf("quant.rules[%d].kv_cache on %s: %v", i, na.Name, err)
		}
	}
	return nil
}

func kvQuantizer(s Spec, row int) (layers.Quantizer, error) {
	q, err := NewQuantizer(s, row, row)
	if err != nil {
		return nil, err
	}
	q.Activation = true
	return q, nil
}

// Detach removes every quantizer from m (weights, inputs, KV cache), so
// that a post-training quantization of a QAT checkpoint starts from its
// full-precision weights and its rules alone describe the result.
// Adapters and observers stay.
func Detach(m *layers.Model) {
	for _, ln := range m.Linears() {
		ln.Linear.WeightQuant, ln.Linear.InputQuant = nil, nil
	}
	for _, na := range m.Attentions() {
		na.Attention.KQuant, na.Attention.VQuant = nil, nil
	}
}

// TrainedInputs returns m's input quantizers that hold trained state
// (learned clip values, LSQ steps and offsets, searched steps), by linear
// name.
func TrainedInputs(m *layers.Model) map[string]*Quantizer {
	out := map[string]*Quantizer{}
	for _, ln := range m.Linears() {
		if q, ok := ln.Linear.InputQuant.(*Quantizer); ok && q.Fixed() {
			out[ln.Name] = q
		}
	}
	return out
}

// KeepInputs attaches the input quantizers kept (TrainedInputs of the
// model before Prepare) to the linears of m they came from, in place of
// what rules attached there, and marks them so Calibrate leaves their
// trained state as it is. It returns the number attached.
func KeepInputs(m *layers.Model, kept map[string]*Quantizer) (int, error) {
	n := 0
	for _, ln := range m.Linears() {
		q, ok := kept[ln.Name]
		if !ok {
			continue
		}
		if ln.Linear.Weight != nil && ln.Linear.Weight.Shape()[1] != q.row {
			return 0, fmt.Errorf("kept input quantizer of %s has rows of %d, the layer reads %d", ln.Name, q.row, ln.Linear.Weight.Shape()[1])
		}
		q.kept = true
		ln.Linear.InputQuant = q
		n++
	}
	if n != len(kept) {
		return 0, fmt.Errorf("%d kept input quantizers, %d of them on linears of the model", len(kept), n)
	}
	return n, nil
}

// KeptRules returns rules that describe m after Prepare(rules) and
// KeepInputs(kept), for its quant.json: one rule per quantized linear,
// matching its exact name, with the weights spec rules gave it and the
// kept input spec (else rules' activations), and one per attention with a
// KV-cache spec. A glob cannot say "these weights, but the inputs each
// layer trained", so the layers are named one by one.
func KeptRules(m *layers.Model, rules []Rule, kept map[string]*Quantizer) ([]Rule, error) {
	lins, attns := targets(m)
	linRule, attnRule, err := plan(rules, lins, attns)
	if err != nil {
		return nil, err
	}
	var out []Rule
	for k, ln := range lins {
		r := Rule{Match: ln.name}
		if i := linRule[k]; i >= 0 {
			r.Weights, r.Activations = rules[i].Weights, rules[i].Activations
		}
		if q, ok := kept[ln.name]; ok {
			s := q.Spec
			r.Activations = &s
		}
		if r.Weights != nil || r.Activations != nil {
			out = append(out, r)
		}
	}
	for k, a := range attns {
		if i := attnRule[k]; i >= 0 {
			out = append(out, Rule{Match: a.name, KVCache: rules[i].KVCache})
		}
	}
	return out, nil
}
