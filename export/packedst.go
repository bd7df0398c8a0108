package export

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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

// PackedSafetensors writes m to dir (replacing a directory there only
// when qat wrote it, or with force: atomic.Dir) as model.safetensors with its int
// weight quantizers' codes packed, config.json (the Hugging Face config
// with quantization_config) and tokenizer.json. Every linear that has a
// symmetric int weight quantizer of 2 to 8 bits is packed with the scales
// its forward uses, so unpacking gives the fake-quant weights bit for bit.
func PackedSafetensors(m *layers.Model, tok *bpe.Tokenizer, dir string, force bool) error {
	return atomic.Dir(dir, force, func(tmp string) error { return PackedSafetensorsInto(m, tok, tmp) })
}

// PackedSafetensorsInto is PackedSafetensors writing into dir, an empty
// directory the caller made (an atomic.Reservation's).
func PackedSafetensorsInto(m *layers.Model, tok *bpe.Tokenizer, dir string) error {
	var ts []safetensors.Tensor
	done := map[string]bool{}
	qc := quantConfig{Method: "compressed-tensors", Format: "pack-quantized", Groups: map[string]configGroup{}}
	for _, ln := range m.Linears() {
		if ln.Linear.Weight == nil {
			return fmt.Errorf("export %s: LR-QAT adapters: qat merge the checkpoint first", ln.Name)
		}
		wdata := ln.Linear.Weight.Data()
		pk, ok := qat.WeightPacking(ln.Linear)
		if !ok {
			qc.Ignore = append(qc.Ignore, ln.Name)
			continue
		}
		// GWQ: the kept weights go beside the codes as indices and fp16
		// values; their codes are 0
		if idx := pk.Outliers; pk.KeepsOutliers {
			wdata = append([]float32(nil), wdata...)
			vals := make([]float32, len(idx))
			for k, i := range idx {
				vals[k] = wdata[i]
				wdata[i] = 0
			}
			ts = append(ts, safetensors.FromI32(ln.Name+".weight_outlier_idx", []int{len(idx)}, idx),
				safetensors.FromF16(ln.Name+".weight_outlier_val", []int{len(vals)}, vals))
		}
		q, twoLevel := pk.Grid, pk.TwoLevel()
		w := ln.Linear.Weight
		out, in := w.Shape()[0], w.Shape()[1]
		// QQQ's per-group W4 is int8 per channel once folded
		codes, scales, group, bits, err := pk.Codes(w, wdata)
		if err != nil {
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
		if aq := ln.Linear.InputQuant; aq != nil {
			if a, ok := qat.Plain(aq); ok {
				if a.Format != kernels.Int || a.Granularity != "token" || a.Scale != "minmax" {
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
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if err := atomic.WriteFile(filepath.Join(dir, "config.json"), cb); err != nil {
		return err
	}
	return tok.Save(filepath.Join(dir, "tokenizer.json"))
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
	cfgPath := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	f, err := safetensors.Read(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return nil, nil, nil, err
	}
	m, packed, err := packedModel(b, f, kern)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	tok, err := bpe.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, nil, nil, err
	}
	return m, tok, packed, nil
}

// packedTensors are one packed linear's tensors, checked.
type packedTensors struct {
	s                 PackedScheme
	packed, scale     safetensors.Tensor
	idx, val          safetensors.Tensor
	outliers          bool
	out, in, per, wpr int
	group             int
}

// checkPacked checks base's packed tensors in f against its weight shape
// and scheme s: dtypes, sizes and the group layout, before anything is
// allocated for them.
func checkPacked(f *safetensors.File, base string, shape []int, s PackedScheme) (*packedTensors, error) {
	if len(shape) != 2 {
		return nil, fmt.Errorf("quantization_config target %s: %s.weight is not a matrix (shape %v): only linear weights are packed", base, base, shape)
	}
	p := &packedTensors{s: s, out: shape[0], in: shape[1]}
	var ok1, ok2 bool
	p.packed, ok1 = f.Get(base + ".weight_packed")
	p.scale, ok2 = f.Get(base + ".weight_scale")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%s: weight_packed or weight_scale missing", base)
	}
	if s.Bits < 2 || s.Bits > 8 || 32%s.Bits != 0 {
		return nil, fmt.Errorf("%s: num_bits %d, want 2, 4 or 8", base, s.Bits)
	}
	p.per = 32 / s.Bits
	p.wpr = (p.in + p.per - 1) / p.per
	switch s.Strategy {
	case "channel":
		p.group = p.in
	case "group":
		p.group = s.GroupSize
	case "tensor":
		p.group = p.out * p.in
	default:
		return nil, fmt.Errorf("%s: strategy %q, want channel, group or tensor", base, s.Strategy)
	}
	switch {
	case p.packed.DType != "I32" || len(p.packed.Data) != 4*p.out*p.wpr:
		return nil, fmt.Errorf("%s.weight_packed: %s of %d bytes, want I32 with %d x %d words", base, p.packed.DType, len(p.packed.Data), p.out, p.wpr)
	case p.group <= 0 || (p.out*p.in)%p.group != 0:
		return nil, fmt.Errorf("%s: group_size %d does not divide the %d x %d weight", base, p.group, p.out, p.in)
	case p.scale.DType != "F32" || len(p.scale.Data) != 4*(p.out*p.in/p.group):
		return nil, fmt.Errorf("%s.weight_scale: %s of %d bytes, want F32 with %d scales (%s groups of %d)", base, p.scale.DType, len(p.scale.Data),
			p.out*p.in/p.group, s.Strategy, p.group)
	}
	if it, ok := f.Get(base + ".weight_outlier_idx"); ok {
		vt, ok := f.Get(base + ".weight_outlier_val")
		if !ok || it.DType != "I32" || vt.DType != "F16" || len(it.Data)/4 != len(vt.Data)/2 || len(it.Data)/4 > p.out*p.in {
			return nil, fmt.Errorf("%s: outlier tensors: %s %v indices, %s %v values, want I32 and F16 of one length at most %d",
				base, it.DType, it.Shape, vt.DType, vt.Shape, p.out*p.in)
		}
		p.idx, p.val, p.outliers = it, vt, true
	}
	return p, nil
}

// packedModel builds the model of a packed safetensors checkpoint from its
// config.json and model.safetensors. The config is validated (limits
// included) and every tensor checked against it before the model is
// allocated; the model's memory is then bounded by the file's.
func packedModel(cfgJSON []byte, f *safetensors.File, kern bool) (*layers.Model, map[*autograd.Var]layers.PackedWeight, error) {
	c, err := layers.ParseHFConfig(cfgJSON)
	if err != nil {
		return nil, nil, fmt.Errorf("config.json: %w", err)
	}
	var cfg struct {
		Q quantConfig `json:"quantization_config"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil || cfg.Q.Format != "pack-quantized" {
		return nil, nil, fmt.Errorf("config.json has no pack-quantized quantization_config (%v)", err)
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
				rules = append(rules, qat.Rule{Match: t, Activations: &qat.Spec{Format: kernels.Int, Bits: a.Bits, Symmetric: a.Symmetric,
					Granularity: "token", Scale: "minmax", Restricted: a.Restricted}})
			}
		}
	}
	// every tensor against the config, before New
	plans := map[string]*packedTensors{}
	for _, sh := range c.Shapes() {
		base := strings.TrimSuffix(sh.Name, ".weight")
		s, quantized := scheme[base]
		if !quantized {
			t, ok := f.Get(sh.Name)
			if !ok {
				return nil, nil, fmt.Errorf("tensor %s missing", sh.Name)
			}
			if t.DType != "F32" || fmt.Sprint(t.Shape) != fmt.Sprint(sh.Shape) {
				return nil, nil, fmt.Errorf("tensor %s: %s %v, model wants F32 %v", sh.Name, t.DType, t.Shape, sh.Shape)
			}
			continue
		}
		p, err := checkPacked(f, base, sh.Shape, s)
		if err != nil {
			return nil, nil, err
		}
		plans[base] = p
	}
	for t := range scheme {
		if plans[t] == nil {
			return nil, nil, fmt.Errorf("quantization_config target %q names no linear of the model", t)
		}
	}
	m := layers.New(c)
	packed := map[*autograd.Var]layers.PackedWeight{}
	packable := kern
	var scheme0 *kernels.TokenScheme // one activation scheme for every packed input
	for _, p := range m.Params() {
		base := strings.TrimSuffix(p.Name, ".weight")
		pt := plans[base]
		if pt == nil {
			t, _ := f.Get(p.Name)
			v, err := t.F32()
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			copy(p.Var.Data(), v)
			continue
		}
		words, err := pt.packed.I32()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		scales, err := pt.scale.F32()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		s, out, in, group, per, wpr := pt.s, pt.out, pt.in, pt.group, pt.per, pt.wpr
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
		if pt.outliers {
			idx, err1 := pt.idx.I32()
			vals, err2 := pt.val.F16()
			if err1 != nil || err2 != nil {
				return nil, nil, fmt.Errorf("%s: outlier tensors: %v, %v", p.Name, err1, err2)
			}
			// NewSparse range-checks the indices (increasing, inside the weight)
			sp, err := kernels.NewSparse(out, in, idx, vals)
			if err != nil {
				return nil, nil, fmt.Errorf("%s.weight_outlier_idx: %w", base, err)
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
				return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
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
			return nil, nil, fmt.Errorf("input_activations: %w", err)
		}
	}
	return m, packed, nil
}
