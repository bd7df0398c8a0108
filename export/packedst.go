package export

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"qat/autograd"
	"qat/data/atomic"
	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// Packed safetensors follow compressed-tensors' "pack-quantized" layout:
// for each quantized linear NAME, NAME.weight_packed (I32, [out, in*bits/32]:
// the signed codes shifted to unsigned by 2^(bits-1) and packed little end
// first along the input), NAME.weight_scale (F32, [out, in/group]) and
// NAME.weight_shape (I32, [out, in]); other tensors as they are. The
// scheme is in config.json's quantization_config.

// PackedScheme is one linear's entry in quantization_config.
type PackedScheme struct {
	Bits      int    `json:"num_bits"`
	Type      string `json:"type"`
	Symmetric bool   `json:"symmetric"`
	Strategy  string `json:"strategy"`
	GroupSize int    `json:"group_size,omitempty"`
	// Restricted: codes in [-(2^(b-1)-1), 2^(b-1)-1] (QQQ's per-channel W4).
	Restricted bool `json:"restricted,omitempty"`
}

// ActScheme describes dynamic activation quantization (compressed-tensors'
// input_activations): per token, scales from each token's range.
type ActScheme struct {
	Bits      int    `json:"num_bits"`
	Type      string `json:"type"`
	Symmetric bool   `json:"symmetric"`
	Strategy  string `json:"strategy"`
	Dynamic   bool   `json:"dynamic"`
	// Restricted: a symmetric grid without -2^(b-1) (QQQ's [-127, 127]).
	Restricted bool `json:"restricted,omitempty"`
}

type configGroup struct {
	Weights PackedScheme `json:"weights"`
	Input   *ActScheme   `json:"input_activations,omitempty"`
	Targets []string     `json:"targets"`
}

type quantConfig struct {
	Method string                 `json:"quant_method"`
	Format string                 `json:"format"`
	Groups map[string]configGroup `json:"config_groups"`
	Ignore []string               `json:"ignore"`
}

// PackedSafetensors writes m to dir as model.safetensors with its int
// weight quantizers' codes packed, config.json (the Hugging Face config
// with quantization_config) and tokenizer.json. Every linear that has a
// symmetric int weight quantizer of 2 to 8 bits is packed with the scales
// its forward uses, so unpacking gives the fake-quant weights bit for bit.
func PackedSafetensors(m *layers.Model, tok *bpe.Tokenizer, dir string) error {
	var ts []safetensors.Tensor
	done := map[string]bool{}
	qc := quantConfig{Method: "compressed-tensors", Format: "pack-quantized", Groups: map[string]configGroup{}}
	for _, ln := range qat.Linears(m) {
		if ln.Layer.Weight == nil {
			return fmt.Errorf("export %s: LR-QAT adapters: qat merge the checkpoint first", ln.Name)
		}
		wdata := ln.Layer.Weight.Data()
		q, ok := ln.Layer.WeightQuant.(*qat.Quantizer)
		// GWQ: the kept weights go beside the codes as indices and fp16
		// values; their codes are 0
		o, hasOutliers := ln.Layer.WeightQuant.(*qat.Outliers)
		if hasOutliers {
			q, ok = o.Inner, true
			wdata = append([]float32(nil), wdata...)
			vals := make([]float32, len(o.Idx))
			for k, i := range o.Idx {
				vals[k] = wdata[i]
				wdata[i] = 0
			}
			ts = append(ts, safetensors.FromI32(ln.Name+".weight_outlier_idx", []int{len(o.Idx)}, o.Idx),
				safetensors.FromF16(ln.Name+".weight_outlier_val", []int{len(vals)}, vals))
		}
		tl, twoLevel := ln.Layer.WeightQuant.(*qat.TwoLevel)
		if twoLevel {
			q, ok = tl.Inner, true
		}
		if !ok {
			qc.Ignore = append(qc.Ignore, ln.Name)
			continue
		}
		w := ln.Layer.Weight
		out, in := w.Shape()[0], w.Shape()[1]
		var codes []int8
		var scales []float32
		var group int
		var err error
		bits := q.Bits
		if twoLevel {
			// QQQ's per-group W4 is int8 per channel once folded
			tp := autograd.NewTape()
			tp.SetNoGrad(true)
			codes, scales = tl.Int8(wdata, tl.Inner.Apply(tp, w).Data())
			group, bits = in, 8
		} else if codes, scales, group, err = q.Codes(wdata); err != nil {
			return fmt.Errorf("export %s: %w", ln.Name, err)
		}
		if 32%bits != 0 {
			return fmt.Errorf("export %s: %d-bit codes do not pack into int32 words", ln.Name, bits)
		}
		per := 32 / bits
		words := (in + per - 1) / per
		packed := make([]int32, out*words)
		for r := 0; r < out; r++ {
			for i := 0; i < in; i++ {
				u := uint32(int32(codes[r*in+i])+int32(1)<<(bits-1)) & (1<<bits - 1)
				packed[r*words+i/per] |= int32(u << (bits * (i % per)))
			}
		}
		strategy, gs := "group", group
		switch {
		case group == in:
			strategy, gs = "channel", 0
		case group == out*in:
			strategy, gs = "tensor", 0
		}
		ng := len(scales)
		scaleShape := []int{out, ng / out}
		if strategy == "tensor" {
			scaleShape = []int{1}
		}
		ts = append(ts,
			safetensors.FromI32(ln.Name+".weight_packed", []int{out, words}, packed),
			safetensors.FromF32(ln.Name+".weight_scale", scaleShape, scales),
			safetensors.FromI32(ln.Name+".weight_shape", []int{2}, []int32{int32(out), int32(in)}))
		done[ln.Name+".weight"] = true
		scheme := PackedScheme{Bits: bits, Type: "int", Symmetric: true, Strategy: strategy, GroupSize: gs, Restricted: q.Restricted && !twoLevel}
		var act *ActScheme
		if aq := ln.Layer.InputQuant; aq != nil {
			if k, ok := aq.(*qat.Kurtosis); ok {
				aq = k.Inner
			}
			if a, ok := aq.(*qat.Quantizer); ok {
				if a.Format != "int" || a.Granularity != "token" || a.Scale != "minmax" {
					return fmt.Errorf("export %s: activations %s/%s/%s: only dynamic per-token int activations are described in pack-quantized configs",
						ln.Name, a.Format, a.Granularity, a.Scale)
				}
				act = &ActScheme{Bits: a.Bits, Type: "int", Symmetric: a.Symmetric, Strategy: "token", Dynamic: true, Restricted: a.Restricted}
			}
		}
		found := false
		for k, g := range qc.Groups {
			if g.Weights == scheme && ((g.Input == nil && act == nil) || (g.Input != nil && act != nil && *g.Input == *act)) {
				g.Targets = append(g.Targets, ln.Name)
				qc.Groups[k] = g
				found = true
			}
		}
		if !found {
			qc.Groups[fmt.Sprintf("group_%d", len(qc.Groups))] = configGroup{scheme, act, []string{ln.Name}}
		}
	}
	if len(qc.Groups) == 0 {
		return fmt.Errorf("export: no linear has an int weight quantizer (train or ptq with an int preset first)")
	}
	for _, p := range m.Params() {
		if done[p.Name] || p.Quant {
			continue
		}
		ts = append(ts, safetensors.FromF32(p.Name, p.Var.Shape(), p.Var.Data()))
	}
	hf, err := m.Config.HFConfig()
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(hf, &cfg); err != nil {
		return err
	}
	cfg["quantization_config"] = qc
	cb, _ := json.MarshalIndent(cfg, "", "  ")
	return atomic.Dir(dir, func(tmp string) error {
		if err := safetensors.Write(filepath.Join(tmp, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		if err := atomic.WriteFile(filepath.Join(tmp, "config.json"), cb); err != nil {
			return err
		}
		return tok.Save(filepath.Join(tmp, "tokenizer.json"))
	})
}

// LoadPackedSafetensors reads what PackedSafetensors wrote into a model
// with the unpacked (fake-quant) weights.
func LoadPackedSafetensors(dir string) (*layers.Model, *bpe.Tokenizer, error) {
	m, tok, _, err := loadPackedSafetensors(dir, false)
	return m, tok, err
}

// LoadPackedSafetensorsKernels loads dir as LoadPackedSafetensors does and
// also returns its linears packed for the per-channel integer kernels
// (kernels.ChannelInt) when every quantized linear has per-channel int4
// or int8 weights and int8 asymmetric per-token activations (the w4a8 and
// w8a8 recipes) and a multiple of 4 rows: layers.NewPackedDecoder then
// computes what the fake-quant model computes, with a key/value cache.
// Otherwise the map is nil.
func LoadPackedSafetensorsKernels(dir string) (*layers.Model, *bpe.Tokenizer, map[*autograd.Var]layers.PackedWeight, error) {
	return loadPackedSafetensors(dir, true)
}

func loadPackedSafetensors(dir string, kern bool) (*layers.Model, *bpe.Tokenizer, map[*autograd.Var]layers.PackedWeight, error) {
	c, err := layers.ReadHFConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, nil, nil, err
	}
	var cfg struct {
		Q quantConfig `json:"quantization_config"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Q.Format != "pack-quantized" {
		return nil, nil, nil, fmt.Errorf("%s: config.json has no pack-quantized quantization_config (%v)", dir, err)
	}
	scheme := map[string]PackedScheme{}
	tokenInt8 := map[string]*kernels.TokenScheme{} // targets whose inputs the integer kernels quantize
	var rules []qat.Rule
	for _, g := range cfg.Q.Groups {
		for _, t := range g.Targets {
			scheme[t] = g.Weights
			if a := g.Input; a != nil {
				if a.Bits == 8 && a.Type == "int" && a.Strategy == "token" && a.Dynamic {
					tokenInt8[t] = &kernels.TokenScheme{Symmetric: a.Symmetric, Restricted: a.Restricted}
				}
				rules = append(rules, qat.Rule{Match: t, Activations: &qat.Spec{Format: "int", Bits: a.Bits, Symmetric: a.Symmetric,
					Granularity: "token", Scale: "minmax", Restricted: a.Restricted}})
			}
		}
	}
	f, err := safetensors.Read(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return nil, nil, nil, err
	}
	m := layers.New(c)
	packed := map[*autograd.Var]layers.PackedWeight{}
	packable := kern
	var scheme0 *kernels.TokenScheme // one activation scheme for every packed input
	for _, p := range m.Params() {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%s: %s: %s", dir, p.Name, fmt.Sprintf(format, a...))
		}
		base := p.Name[:len(p.Name)-len(".weight")]
		s, quantized := scheme[base]
		if !quantized {
			t, ok := f.Get(p.Name)
			if !ok {
				return nil, nil, nil, bad("missing")
			}
			v, err := t.F32()
			if err != nil || len(v) != p.Var.Size() {
				return nil, nil, nil, bad("%d values, want %d (%v)", len(v), p.Var.Size(), err)
			}
			copy(p.Var.Data(), v)
			continue
		}
		out, in := p.Var.Shape()[0], p.Var.Shape()[1]
		pt, ok1 := f.Get(base + ".weight_packed")
		st, ok2 := f.Get(base + ".weight_scale")
		if !ok1 || !ok2 || s.Bits < 2 || s.Bits > 8 || 32%s.Bits != 0 {
			return nil, nil, nil, bad("packed tensors or a valid num_bits missing")
		}
		words, err := pt.I32()
		if err != nil {
			return nil, nil, nil, bad("%v", err)
		}
		scales, err := st.F32()
		if err != nil {
			return nil, nil, nil, bad("%v", err)
		}
		per := 32 / s.Bits
		wpr := (in + per - 1) / per
		group := in
		switch s.Strategy {
		case "group":
			group = s.GroupSize
		case "tensor":
			group = out * in
		}
		if len(words) != out*wpr || group <= 0 || (out*in)%group != 0 || len(scales) != out*in/group {
			return nil, nil, nil, bad("%d words and %d scales for %dx%d in %s groups of %d", len(words), len(scales), out, in, s.Strategy, group)
		}
		w := p.Var.Data()
		// per-channel int4/int8 with int8 per-token inputs: the integer kernels'
		var codes []int8
		ts := tokenInt8[base]
		if kern && packable && s.Strategy == "channel" && (s.Bits == 4 || s.Bits == 8) && ts != nil && out%4 == 0 &&
			(scheme0 == nil || *scheme0 == *ts) {
			scheme0 = ts
			codes = make([]int8, out*in)
		} else {
			packable = false
		}
		for r := 0; r < out; r++ {
			for i := 0; i < in; i++ {
				u := (uint32(words[r*wpr+i/per]) >> (s.Bits * (i % per))) & (1<<s.Bits - 1)
				code := int32(u) - int32(1)<<(s.Bits-1)
				w[r*in+i] = float32(code) * scales[(r*in+i)/group]
				if codes != nil {
					codes[r*in+i] = int8(code)
				}
			}
		}
		var sparse *kernels.Sparse
		if it, ok := f.Get(base + ".weight_outlier_idx"); ok {
			vt, ok2 := f.Get(base + ".weight_outlier_val")
			idx, err1 := it.I32()
			vals, err2 := vt.F16()
			if !ok2 || err1 != nil || err2 != nil || len(idx) != len(vals) {
				return nil, nil, nil, bad("outlier tensors: %d indices, %d values (%v, %v)", len(idx), len(vals), err1, err2)
			}
			sp, err := kernels.NewSparse(out, in, idx, vals)
			if err != nil {
				return nil, nil, nil, bad("%v", err)
			}
			for k, i := range idx {
				w[i] = vals[k]
				if codes != nil {
					codes[i] = 0 // the dense part is 0 where the kept values are
				}
			}
			sparse = sp
		}
		if codes != nil {
			cw, err := kernels.NewChannelInt(s.Bits, codes, scales, out, in)
			if err != nil {
				return nil, nil, nil, bad("%v", err)
			}
			packed[p.Var] = layers.PackedWeight{Channel: cw, Tokens: *ts, Sparse: sparse}
		}
	}
	if !kern || !packable {
		packed = nil
	}
	// the activations run through the quantizers they trained with
	if len(rules) > 0 {
		if err := qat.Prepare(m, rules); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: input_activations: %w", dir, err)
		}
	}
	tok, err := bpe.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, nil, nil, err
	}
	return m, tok, packed, nil
}
