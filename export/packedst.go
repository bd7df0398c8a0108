package export

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	// Actorder is compressed-tensors' activation ordering (GPTQ's
	// weight_g_idx), which qat does not read; never written.
	Actorder *string `json:"actorder,omitempty"`
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
	// Format is the group's compression format (compressed-tensors
	// exports); "" means the config's.
	Format string `json:"format,omitempty"`
}

type quantConfig struct {
	Method string                 `json:"quant_method"`
	Format string                 `json:"format"`
	Groups map[string]configGroup `json:"config_groups"`
	Ignore []string               `json:"ignore"`
	// Status is "compressed" in compressed-tensors exports, whose
	// symmetric int8 activations are vLLM's [-127, 127] grid.
	Status string `json:"quantization_status,omitempty"`
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
			qc.Groups[fmt.Sprintf("group_%d", len(qc.Groups))] = configGroup{Weights: scheme, Input: act, Targets: []string{ln.Name}}
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
	return writeTokenizer(tok, dir)
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
// or int8 weights and int8 per-token activations (the w4a8 and w8a8
// recipes), or int4 weights and 4-bit per-token activations (w4a4), one
// activation scheme for all, and a multiple of 4 rows:
// layers.NewPackedDecoder then computes what the fake-quant model
// computes, with a key/value cache. Otherwise the map is nil.
func LoadPackedSafetensorsKernels(dir string) (*layers.Model, *bpe.Tokenizer, map[*autograd.Var]layers.PackedWeight, error) {
	return loadPackedSafetensors(dir, true)
}

func loadPackedSafetensors(dir string, kern bool) (*layers.Model, *bpe.Tokenizer, map[*autograd.Var]layers.PackedWeight, error) {
	cfgPath := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	f, err := readWeights(dir)
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

// maxShards bounds the shards an index may name (a 1 TB model in 5 GB
// shards has 200).
const maxShards = 4096

// parseIndex reads model.safetensors.index.json: its weight_map and the
// files it names, sorted; each must be a .safetensors file beside the
// index (no path), at most maxShards of them.
func parseIndex(b []byte) (*hfIndex, []string, error) {
	var idx hfIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, nil, err
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, fmt.Errorf("weight_map is empty")
	}
	var files []string
	for name, fn := range idx.WeightMap {
		if fn != filepath.Base(fn) || !strings.HasSuffix(fn, ".safetensors") || fn == ".safetensors" {
			return nil, nil, fmt.Errorf("weight_map[%q] = %q: want a .safetensors file beside the index", name, fn)
		}
		if !slices.Contains(files, fn) {
			if len(files) == maxShards {
				return nil, nil, fmt.Errorf("weight_map names more than %d files", maxShards)
			}
			files = append(files, fn)
		}
	}
	slices.Sort(files)
	return &idx, files, nil
}

// readWeights reads dir's model.safetensors, or the shards its
// model.safetensors.index.json names, as one file: every tensor in the
// shard the index says, none twice.
func readWeights(dir string) (*safetensors.File, error) {
	ip := filepath.Join(dir, "model.safetensors.index.json")
	ib, err := os.ReadFile(ip)
	if errors.Is(err, os.ErrNotExist) {
		return safetensors.Read(filepath.Join(dir, "model.safetensors"))
	}
	if err != nil {
		return nil, err
	}
	idx, files, err := parseIndex(ib)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ip, err)
	}
	all := &safetensors.File{Metadata: map[string]string{}}
	seen := map[string]string{}
	for _, fn := range files {
		sf, err := safetensors.Read(filepath.Join(dir, fn))
		if err != nil {
			return nil, err
		}
		for _, t := range sf.Tensors {
			if prev, dup := seen[t.Name]; dup {
				return nil, fmt.Errorf("%s: tensor %s is in %s and %s", ip, t.Name, prev, fn)
			}
			if idx.WeightMap[t.Name] != fn {
				return nil, fmt.Errorf("%s: tensor %s is in %s, weight_map says %q", ip, t.Name, fn, idx.WeightMap[t.Name])
			}
			seen[t.Name] = fn
			all.Tensors = append(all.Tensors, t)
		}
	}
	for name, fn := range idx.WeightMap {
		if seen[name] == "" {
			return nil, fmt.Errorf("%s: weight_map puts %s in %s, which does not hold it", ip, name, fn)
		}
	}
	return all, nil
}

// packedTensors are one packed linear's tensors, checked.
type packedTensors struct {
	s PackedScheme
	// format: pack-quantized (packed holds weight_packed), int-quantized
	// (packed holds the int8 weight) or float-quantized (fp8 e4m3 bytes)
	format            string
	packed, scale     safetensors.Tensor
	idx, val          safetensors.Tensor
	outliers          bool
	out, in, per, wpr int
	group             int
}

// floatDTypes are the dtypes read as floats: unquantized tensors and
// scales (compressed-tensors writes scales in the model's dtype).
var floatDTypes = []string{"F32", "BF16", "F16"}

// floats reads t (one of floatDTypes) as float32; bf16 and f16 widen
// exactly.
func floats(t safetensors.Tensor) ([]float32, error) {
	switch t.DType {
	case "BF16":
		v := make([]float32, len(t.Data)/2)
		for i := range v {
			v[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(t.Data[2*i:])) << 16)
		}
		return v, nil
	case "F16":
		return t.F16()
	}
	return t.F32()
}

// checkPacked checks base's quantized tensors in f against its weight
// shape, scheme s and compression format: dtypes, sizes and the group
// layout, before anything is allocated for them.
func checkPacked(f *safetensors.File, base string, shape []int, s PackedScheme, format string) (*packedTensors, error) {
	if len(shape) != 2 {
		return nil, fmt.Errorf("quantization_config target %s: %s.weight is not a matrix (shape %v): only linear weights are packed", base, base, shape)
	}
	p := &packedTensors{s: s, format: format, out: shape[0], in: shape[1]}
	var ok1, ok2 bool
	codeName := base + ".weight_packed"
	if format != ctPacked {
		codeName = base + ".weight"
	}
	p.packed, ok1 = f.Get(codeName)
	p.scale, ok2 = f.Get(base + ".weight_scale")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%s: %s or weight_scale missing", base, strings.TrimPrefix(codeName, base+"."))
	}
	switch {
	case format == ctFloat && (s.Type != "float" || s.Bits != 8):
		return nil, fmt.Errorf("%s: %s with %s num_bits %d, want float 8 (fp8 e4m3)", base, format, s.Type, s.Bits)
	case format != ctFloat && s.Type != "int":
		return nil, fmt.Errorf("%s: %s with type %q, want int", base, format, s.Type)
	case format == ctPacked && (s.Bits < 2 || s.Bits > 8 || 32%s.Bits != 0):
		return nil, fmt.Errorf("%s: num_bits %d, want 2, 4 or 8", base, s.Bits)
	case format == ctInt && (s.Bits < 2 || s.Bits > 8):
		return nil, fmt.Errorf("%s: num_bits %d, want 2 to 8", base, s.Bits)
	}
	p.per, p.wpr = 1, p.in
	if format == ctPacked {
		p.per = 32 / s.Bits
		p.wpr = (p.in + p.per - 1) / p.per
	}
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
	want := map[string]string{ctPacked: "I32", ctInt: "I8", ctFloat: "F8_E4M3"}[format]
	if p.packed.DType != want || len(p.packed.Data) != safetensors.DTypeSize[want]*p.out*p.wpr {
		return nil, fmt.Errorf("%s: %s of %d bytes, want %s with %d x %d values", codeName, p.packed.DType, len(p.packed.Data), want, p.out, p.wpr)
	}
	switch {
	case p.group <= 0 || (p.out*p.in)%p.group != 0:
		return nil, fmt.Errorf("%s: group_size %d does not divide the %d x %d weight", base, p.group, p.out, p.in)
	case !slices.Contains(floatDTypes, p.scale.DType) || len(p.scale.Data) != safetensors.DTypeSize[p.scale.DType]*(p.out*p.in/p.group):
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

// packedFormats are the compression formats the reader takes.
var packedFormats = []string{ctPacked, ctInt, ctFloat, ctMixed}

// packedModel builds the model of a packed safetensors checkpoint (qat's
// safetensors-packed or a compressed-tensors export) from its
// config.json and weights. The config is validated (limits included) and
// every tensor checked against it before the model is allocated; the
// model's memory is then bounded by the file's.
func packedModel(cfgJSON []byte, f *safetensors.File, kern bool) (*layers.Model, map[*autograd.Var]layers.PackedWeight, error) {
	c, err := layers.ParseHFConfig(cfgJSON)
	if err != nil {
		return nil, nil, fmt.Errorf("config.json: %w", err)
	}
	var cfg struct {
		Q quantConfig `json:"quantization_config"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil || !slices.Contains(packedFormats, cfg.Q.Format) {
		return nil, nil, fmt.Errorf("config.json has no pack-quantized, int-quantized or float-quantized quantization_config (format %q, %v)", cfg.Q.Format, err)
	}
	ct := cfg.Q.Status == "compressed"
	scheme := map[string]PackedScheme{}
	format := map[string]string{}
	tokenInt := map[string]*kernels.TokenScheme{} // targets whose inputs the integer kernels quantize (8 or 4 bits)
	var rules []qat.Rule
	targets, err := resolveTargets(c, cfg.Q)
	if err != nil {
		return nil, nil, err
	}
	for _, gname := range sortedKeys(cfg.Q.Groups) {
		g := cfg.Q.Groups[gname]
		gf := cmp.Or(g.Format, cfg.Q.Format)
		if gf == ctMixed || !slices.Contains(packedFormats, gf) {
			return nil, nil, fmt.Errorf("quantization_config.config_groups.%s.format %q, want %s, %s or %s", gname, gf, ctPacked, ctInt, ctFloat)
		}
		if w := g.Weights; !w.Symmetric || w.Actorder != nil {
			ao := "null"
			if w.Actorder != nil {
				ao = *w.Actorder
			}
			return nil, nil, fmt.Errorf("quantization_config.config_groups.%s.weights: symmetric %v, actorder %s: qat reads symmetric weights without activation ordering (no weight_zero_point, weight_g_idx)",
				gname, w.Symmetric, ao)
		}
		for _, t := range targets[gname] {
			if _, dup := scheme[t]; dup {
				return nil, nil, fmt.Errorf("quantization_config target %q is in two config groups", t)
			}
			scheme[t], format[t] = g.Weights, gf
			a := g.Input
			if a == nil {
				continue
			}
			if a.Strategy != "token" || !a.Dynamic {
				return nil, nil, fmt.Errorf("quantization_config.config_groups.%s.input_activations: strategy %q dynamic %v, want dynamic per-token", gname, a.Strategy, a.Dynamic)
			}
			spec := &qat.Spec{Format: kernels.Int, Bits: a.Bits, Symmetric: a.Symmetric, Granularity: "token", Scale: "minmax",
				Restricted: a.Restricted || (ct && a.Symmetric)}
			switch {
			case a.Type == "float" && a.Bits == 8:
				spec = &qat.Spec{Format: kernels.FP8E4M3, Symmetric: true, Granularity: "token", Scale: "minmax"}
			case a.Type != "int":
				return nil, nil, fmt.Errorf("quantization_config.config_groups.%s.input_activations: type %q num_bits %d, want int or float 8", gname, a.Type, a.Bits)
			case a.Bits == 8:
				tokenInt[t] = &kernels.TokenScheme{Symmetric: spec.Symmetric, Restricted: spec.Restricted}
			case a.Bits == 4:
				// W4A4: GemmChannel4 on 4-bit codes, with int4 weights
				tokenInt[t] = &kernels.TokenScheme{Symmetric: spec.Symmetric, Restricted: spec.Restricted, Bits: 4}
			}
			rules = append(rules, qat.Rule{Match: t, Activations: spec})
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
			if !slices.Contains(floatDTypes, t.DType) || fmt.Sprint(t.Shape) != fmt.Sprint(sh.Shape) {
				want := "F32"
				if slices.Contains(floatDTypes, t.DType) {
					want = t.DType
				}
				return nil, nil, fmt.Errorf("tensor %s: %s %v, model wants %s %v", sh.Name, t.DType, t.Shape, want, sh.Shape)
			}
			continue
		}
		p, err := checkPacked(f, base, sh.Shape, s, format[base])
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
			v, err := floats(t)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			copy(p.Var.Data(), v)
			continue
		}
		scales, err := floats(pt.scale)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		s, out, in, group := pt.s, pt.out, pt.in, pt.group
		w := p.Var.Data()
		if pt.format == ctFloat {
			for i, b := range pt.packed.Data {
				w[i] = decodeE4M3(b) * scales[i/group]
			}
			packable = false
			continue
		}
		codes := make([]int8, out*in)
		if pt.format == ctInt {
			for i, b := range pt.packed.Data {
				codes[i] = int8(b)
			}
		} else {
			words, err := pt.packed.I32()
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			per, wpr := pt.per, pt.wpr
			for r := 0; r < out; r++ {
				for i := 0; i < in; i++ {
					u := (uint32(words[r*wpr+i/per]) >> (s.Bits * (i % per))) & (1<<s.Bits - 1)
					codes[r*in+i] = int8(int32(u) - int32(1)<<(s.Bits-1))
				}
			}
		}
		for i, c := range codes {
			w[i] = float32(c) * scales[i/group]
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
				codes[i] = 0 // the dense part is 0 where the kept values are
			}
			sparse = sp
		}
		// per-channel int4/int8 with int8 per-token inputs, or int4 with
		// 4-bit per-token inputs: the integer kernels'
		ts := tokenInt[base]
		bits := s.Bits
		if pt.format == ctInt {
			bits = 8 // int8 storage: the codes fit the int8 kernels whatever grid they trained on
		}
		if kern && packable && s.Strategy == "channel" && (bits == 4 || bits == 8) && ts != nil && out%4 == 0 &&
			(ts.Bits != 4 || bits == 4) && (scheme0 == nil || *scheme0 == *ts) {
			scheme0 = ts
			cw, err := kernels.NewChannelInt(bits, codes, scales, out, in)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			packed[p.Var] = layers.PackedWeight{Channel: cw, Tokens: *ts, Sparse: sparse}
		} else {
			packable = false
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

// maxTargets bounds a config group's targets (every linear of a model at
// the limits, with room).
const maxTargets = 1 << 20

// resolveTargets lists, per config group, the linears of a model of config
// c it quantizes, as vLLM's find_matched_target matches them: a target is
// a linear's name, "re:" and a regular expression matched from the start
// of the name (Python's re.match), or "Linear" (every linear); a name
// matches the first group whose target says it by name or expression,
// else one saying "Linear". Names in ignore (or matching its "re:"
// entries) are left out. qat's own exports name every linear; other
// compressed-tensors checkpoints (llm-compressor's) say "Linear" with
// ignore ["lm_head"]. Exact names that match no linear are errors.
func resolveTargets(c layers.Config, q quantConfig) (map[string][]string, error) {
	// the linears' names, only for "Linear" and "re:" (qat's exports name
	// every target: the model is not laid out for them)
	var names []string
	needNames := false
	for _, g := range q.Groups {
		for _, t := range g.Targets {
			needNames = needNames || t == "Linear" || strings.HasPrefix(t, "re:")
		}
	}
	for _, p := range q.Ignore {
		needNames = needNames || strings.HasPrefix(p, "re:")
	}
	if needNames {
		for _, ln := range layers.Describe(c).Linears() {
			names = append(names, ln.Name)
		}
	}
	matcher := func(where, pat string) (func(string) bool, error) {
		if rx, ok := strings.CutPrefix(pat, "re:"); ok {
			re, err := regexp.Compile("^(?:" + rx + ")")
			if err != nil {
				return nil, fmt.Errorf("%s %q: %v", where, pat, err)
			}
			return re.MatchString, nil
		}
		return func(n string) bool { return n == pat }, nil
	}
	var ignore []func(string) bool
	for _, p := range q.Ignore {
		m, err := matcher("quantization_config.ignore", p)
		if err != nil {
			return nil, err
		}
		ignore = append(ignore, m)
	}
	out := map[string][]string{}
	byName := map[string]string{} // linear -> group, by name or expression
	byClass := map[string]string{}
	for _, gname := range sortedKeys(q.Groups) {
		g := q.Groups[gname]
		if len(g.Targets) > maxTargets {
			return nil, fmt.Errorf("quantization_config.config_groups.%s: %d targets, more than %d", gname, len(g.Targets), maxTargets)
		}
		for _, t := range g.Targets {
			if t == "Linear" {
				for _, n := range names {
					if byClass[n] == "" {
						byClass[n] = gname
					}
				}
				continue
			}
			if !strings.HasPrefix(t, "re:") {
				// a name: checked against the model's tensors later (it
				// may name no linear, or a tensor that is not one)
				if prev := byName[t]; prev != "" && prev != gname {
					return nil, fmt.Errorf("quantization_config target %q is in two config groups", t)
				}
				byName[t] = gname
				continue
			}
			m, err := matcher("quantization_config.config_groups."+gname+".targets", t)
			if err != nil {
				return nil, err
			}
			for _, n := range names {
				if m(n) {
					if prev := byName[n]; prev != "" && prev != gname {
						return nil, fmt.Errorf("quantization_config target %q is in two config groups", n)
					}
					byName[n] = gname
				}
			}
		}
	}
	ignored := func(n string) bool {
		return slices.ContainsFunc(ignore, func(m func(string) bool) bool { return m(n) })
	}
	for _, n := range sortedKeys(byName) {
		if !ignored(n) {
			out[byName[n]] = append(out[byName[n]], n)
		}
	}
	for _, n := range names {
		if g := byClass[n]; g != "" && byName[n] == "" && !ignored(n) {
			out[g] = append(out[g], n)
		}
	}
	return out, nil
}

// decodeE4M3 is the value of an fp8 e4m3fn byte (NaN for 0x7f and 0xff).
func decodeE4M3(b byte) float32 {
	sign := float32(1)
	if b&0x80 != 0 {
		sign = -1
	}
	e, man := int(b>>3&15), float64(b&7)
	switch {
	case e == 15 && man == 7:
		return float32(math.NaN())
	case e == 0:
		return sign * float32(math.Ldexp(man/8, -6))
	}
	return sign * float32(math.Ldexp(1+man/8, e-7))
}
