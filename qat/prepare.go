package qat

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"qat/layers"
)

// Rule attaches quantizers to the linear layers whose name (for example
// model.layers.3.self_attn.q_proj or lm_head) matches Match, a path.Match
// glob. The first matching rule decides; nil specs leave that tensor in
// full precision.
type Rule struct {
	Match       string `yaml:"match" json:"match"`
	Weights     *Spec  `yaml:"weights" json:"weights,omitempty"`
	Activations *Spec  `yaml:"activations" json:"activations,omitempty"`
}

func spec(format string, bits int, sym bool, gran string, group int, scale string) *Spec {
	return &Spec{Format: format, Bits: bits, Symmetric: sym, Granularity: gran, GroupSize: group, Scale: scale}
}

// Presets are the named recipes. Every linear of the transformer blocks is
// quantized; the lm_head (tied to the embedding in the reference configs)
// stays in full precision unless a rule says otherwise.
var Presets = map[string][]Rule{
	// llama.cpp's Q4_0 grid for weights, activations in full precision.
	"w4a16-g32": {{Match: "model.layers.*", Weights: spec("q4_0", 4, true, "group", 32, "minmax")}},
	// torchao's 8da4w / QQQ layout: int4 per-channel weights, int8
	// per-token asymmetric dynamic activations.
	"w4a8": {{Match: "model.layers.*", Weights: spec("int", 4, true, "channel", 0, "minmax"),
		Activations: spec("int", 8, false, "token", 0, "minmax")}},
	"w4a4": {{Match: "model.layers.*", Weights: spec("int", 4, true, "channel", 0, "minmax"),
		Activations: spec("int", 4, false, "token", 0, "minmax")}},
	"w8a8": {{Match: "model.layers.*", Weights: spec("int", 8, true, "channel", 0, "minmax"),
		Activations: spec("int", 8, false, "token", 0, "minmax")}},
	"fp8": {{Match: "model.layers.*", Weights: spec("fp8_e4m3", 0, true, "channel", 0, "minmax"),
		Activations: spec("fp8_e4m3", 0, true, "token", 0, "minmax")}},
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

// linears lists the model's linear layers by name.
func linears(m *layers.Model) []struct {
	name string
	l    *layers.Linear
} {
	var out []struct {
		name string
		l    *layers.Linear
	}
	add := func(name string, l *layers.Linear) {
		out = append(out, struct {
			name string
			l    *layers.Linear
		}{name, l})
	}
	for i, L := range m.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"self_attn.q_proj", L.Attn.Q)
		add(p+"self_attn.k_proj", L.Attn.K)
		add(p+"self_attn.v_proj", L.Attn.V)
		add(p+"self_attn.o_proj", L.Attn.O)
		add(p+"mlp.gate_proj", L.MLP.Gate)
		add(p+"mlp.up_proj", L.MLP.Up)
		add(p+"mlp.down_proj", L.MLP.Down)
	}
	if m.Head != nil {
		add("lm_head", m.Head)
	}
	return out
}

// Prepare attaches quantizers to m by rules (torchao's prepare step). A
// rule that matches no layer, an invalid spec, or a group size that does
// not divide a layer's input is an error naming the rule; LSQ steps start
// from the weights.
func Prepare(m *layers.Model, rules []Rule) error {
	used := make([]bool, len(rules))
	for i, r := range rules {
		if _, err := path.Match(r.Match, "x"); err != nil {
			return fmt.Errorf("quant.rules[%d].match %q: %v", i, r.Match, err)
		}
		for _, s := range []struct {
			name string
			s    *Spec
		}{{"weights", r.Weights}, {"activations", r.Activations}} {
			if s.s != nil {
				if err := s.s.Validate(fmt.Sprintf("quant.rules[%d].%s", i, s.name)); err != nil {
					return err
				}
			}
		}
		if r.Activations != nil && r.Activations.Scale == "lsq" {
			return fmt.Errorf("quant.rules[%d].activations.scale: lsq is for weights here (activations use dynamic scales)", i)
		}
	}
	for _, ln := range linears(m) {
		for i, r := range rules {
			if ok, _ := path.Match(r.Match, ln.name); !ok {
				continue
			}
			used[i] = true
			w := ln.l.Weight
			out, in := w.Shape()[0], w.Shape()[1]
			if r.Weights != nil {
				q, err := NewQuantizer(*r.Weights, in, out*in)
				if err != nil {
					return fmt.Errorf("quant.rules[%d].weights on %s: %v", i, ln.name, err)
				}
				if q.Scale == "lsq" {
					q.InitLSQ(w.Data())
				}
				ln.l.WeightQuant = q
			}
			if r.Activations != nil {
				q, err := NewQuantizer(*r.Activations, in, in)
				if err != nil {
					return fmt.Errorf("quant.rules[%d].activations on %s: %v", i, ln.name, err)
				}
				ln.l.InputQuant = q
			}
			break
		}
	}
	for i, u := range used {
		if !u {
			return fmt.Errorf("quant.rules[%d].match %q matches no linear layer", i, rules[i].Match)
		}
	}
	return nil
}
