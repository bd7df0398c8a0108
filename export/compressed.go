package export

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/x448/float16"

	"qat/autograd"
	"qat/data/atomic"
	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// The compressed-tensors export writes what vLLM's compressed-tensors
// integration (vllm/model_executor/layers/quantization/compressed_tensors)
// selects a kernel for, with the names and layouts of compressed-tensors'
// own compressors (export/testdata/compressed-tensors holds the upstream
// sources the tests check the config against):
//
//   - weight-only int4/int8, symmetric, per channel or in groups of 32, 64
//     or 128 (Marlin's): format pack-quantized, vLLM's WNA16.
//     NAME.weight_packed (int32 [out, ceil(in/(32/bits))], each code plus
//     2^(bits-1) packed from the low bits up along the input),
//     NAME.weight_scale (float32 [out, in/group]), NAME.weight_shape (int64
//     [2], as torch.tensor(weight.shape) writes it).
//   - int8 weights per channel with dynamic per-token int8 activations:
//     format int-quantized, vLLM's W8A8Int8. NAME.weight (int8 [out, in]),
//     NAME.weight_scale (float32 [out, 1]). Weights trained on a narrower
//     int grid (w4a8: int4 per channel; QQQ's two-level groups fold to int8
//     per channel) are these int8 codes exactly: vLLM has no int4 x int8
//     GEMM on GPUs, and int8 storage computes what the model trained with.
//   - fp8 e4m3 weights per channel or tensor, with dynamic per-token fp8
//     activations or none: format float-quantized, vLLM's W8A8Fp8 (or
//     W8A16Fp8). NAME.weight (float8_e4m3fn [out, in]), NAME.weight_scale
//     (float32 [out, 1], or [1] per tensor).
//
// Every code is checked against the fake-quant weight (code * scale must
// equal it bit for bit), so vLLM dequantizes the weights the model trained
// with. What vLLM has no kernel for is refused naming the nearest preset
// it runs.

// ctArgs is compressed-tensors' QuantizationArgs as model_dump writes it
// (every field; extra keys are forbidden upstream).
type ctArgs struct {
	NumBits        int            `json:"num_bits"`
	Type           string         `json:"type"`
	Symmetric      bool           `json:"symmetric"`
	GroupSize      *int           `json:"group_size"`
	Strategy       string         `json:"strategy"`
	BlockStructure []int          `json:"block_structure"`
	Dynamic        bool           `json:"dynamic"`
	Actorder       *string        `json:"actorder"`
	Observer       *string        `json:"observer"`
	ObserverKwargs map[string]any `json:"observer_kwargs"`
}

// ctScheme is compressed-tensors' QuantizationScheme: one config group.
type ctScheme struct {
	Targets           []string `json:"targets"`
	Weights           *ctArgs  `json:"weights"`
	InputActivations  *ctArgs  `json:"input_activations"`
	OutputActivations *ctArgs  `json:"output_activations"`
	Format            string   `json:"format"`
}

// ctConfig is compressed-tensors' QuantizationConfig, config.json's
// quantization_config.
type ctConfig struct {
	ConfigGroups           map[string]*ctScheme `json:"config_groups"`
	QuantMethod            string               `json:"quant_method"`
	KVCacheScheme          *ctArgs              `json:"kv_cache_scheme"`
	Format                 string               `json:"format"`
	QuantizationStatus     string               `json:"quantization_status"`
	GlobalCompressionRatio *float64             `json:"global_compression_ratio"`
	Ignore                 []string             `json:"ignore"`
}

// The compression formats written (CompressionFormat values upstream).
const (
	ctPacked = "pack-quantized"
	ctInt    = "int-quantized"
	ctFloat  = "float-quantized"
	ctMixed  = "mixed-precision"
)

// marlinGroups are the group sizes vLLM's WNA16 kernels (Marlin) take
// besides per channel.
var marlinGroups = []int{32, 64, 128}

// vllmPresets names the presets whose exports vLLM runs, for refusals.
const vllmPresets = "w4a16-g32 (int4 weights only), w8a8 (int8 weights and activations) or fp8"

// refusal is a linear vLLM cannot run as trained.
func refusal(name, why, nearest string) error {
	return fmt.Errorf("export compressed-tensors: %s: %s; vLLM runs %s: the nearest is %s", name, why, vllmPresets, nearest)
}

// ctLinear is one quantized linear as written.
type ctLinear struct {
	format  string
	w, a    ctArgs
	hasAct  bool
	tensors []safetensors.Tensor
}

func strp(s string) *string { return &s }

// weightArgs are the QuantizationArgs of static symmetric weights.
func weightArgs(bits int, typ, strategy string, group int) ctArgs {
	a := ctArgs{NumBits: bits, Type: typ, Symmetric: true, Strategy: strategy, Observer: strp("minmax"), ObserverKwargs: map[string]any{}}
	if strategy == "group" {
		a.GroupSize = &group
	}
	return a
}

// actArgs maps a linear's input quantizer to dynamic per-token
// QuantizationArgs, or refuses what vLLM does not compute: its dynamic
// int8 grid is [-127, 127] with s = amax/127 when symmetric (qat's
// restricted grid; the full [-128, 127] grid has s = amax/127.5), or
// asymmetric with a zero point; fp8 is e4m3 with s = amax/448.
func actArgs(name string, aq layers.Quantizer) (ctArgs, error) {
	a, ok := qat.Plain(aq)
	if !ok {
		return ctArgs{}, refusal(name, "its input quantizer is not a plain quantizer", "w8a8")
	}
	if a.Granularity != "token" || a.Scale != "minmax" {
		return ctArgs{}, refusal(name, fmt.Sprintf("activations %s with %s scales: vLLM computes dynamic per-token scales only", a.Granularity, a.Scale), "w8a8")
	}
	args := ctArgs{NumBits: 8, Symmetric: a.Symmetric, Strategy: "token", Dynamic: true, ObserverKwargs: map[string]any{}}
	switch {
	case a.Format == kernels.Int && a.Bits == 8 && (!a.Symmetric || a.Restricted):
		args.Type = "int"
	case a.Format == kernels.Int && a.Bits == 8:
		return ctArgs{}, refusal(name, "symmetric int8 activations on [-128, 127] (s = amax/127.5): vLLM's are [-127, 127] (s = amax/127, restricted: true)", "w4a8-qqq's activations (restricted) or w8a8")
	case a.Format == kernels.Int:
		return ctArgs{}, refusal(name, fmt.Sprintf("int%d activations: vLLM quantizes activations to 8 bits", a.Bits), "w8a8")
	case a.Format == kernels.FP8E4M3:
		args.Type = "float"
	default:
		return ctArgs{}, refusal(name, fmt.Sprintf("%s activations", a.Format), "fp8")
	}
	return args, nil
}

// weightCodes are a linear's weight codes and scales on its quantizer's
// grid (codes*scale[i/group] == the fake-quant weight, checked), the grid's
// bits and group, and whether it is fp8 (codes then hold e4m3 bytes).
type weightCodes struct {
	codes  []int8 // int codes, or nil for fp8
	fp8    []byte
	scales []float32
	group  int
	bits   int
}

// codesOf reads the codes of ln's weight quantizer.
func codesOf(name string, l *layers.Linear) (*weightCodes, error) {
	pk, ok := qat.WeightPacking(l)
	if !ok {
		return nil, refusal(name, "its weight quantizer has no packed form", "w4a16-g32")
	}
	if pk.KeepsOutliers {
		return nil, refusal(name, "it keeps fp16 outliers beside its codes (GWQ): vLLM has no kernel for them (--format safetensors-packed keeps them for qat eval --packed)", "w4a16-g32")
	}
	w := l.Weight
	out, in := w.Shape()[0], w.Shape()[1]
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	fq := l.WeightQuant.Apply(tp, w).Data() // what the forward computes with
	g := pk.Grid
	switch g.Format {
	case kernels.Int:
		if !g.Symmetric {
			return nil, refusal(name, "asymmetric int weights", "w4a16-g32")
		}
		codes, scales, group, bits, err := pk.Codes(w, w.Data())
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", name, err)
		}
		return checkCodes(name, &weightCodes{codes: codes, scales: scales, group: group, bits: bits}, fq)
	case kernels.Q4_0, kernels.Q8_0:
		// llama.cpp's blocks of 32: an fp16 scale first, then the codes;
		// the codes come from the fake-quant values and that scale
		f := kernels.Formats[g.Format]
		data := make([]byte, out*g.Format.RowBytes(in))
		g.Format.Pack(data, w.Data())
		nb := out * in / f.BlockElems
		wc := &weightCodes{codes: make([]int8, out*in), scales: make([]float32, nb), group: f.BlockElems, bits: 4}
		if g.Format == kernels.Q8_0 {
			wc.bits = 8
		}
		for b := 0; b < nb; b++ {
			d := f16(binary.LittleEndian.Uint16(data[b*f.BlockBytes:]))
			wc.scales[b] = d
			for i := b * f.BlockElems; i < (b+1)*f.BlockElems; i++ {
				c := fq[i] / d
				if d == 0 {
					c = 0
				}
				if c != float32(math.Round(float64(c))) || c < -128 || c > 127 {
					return nil, fmt.Errorf("export %s: value %d: %g is not an integer multiple of its block's scale %g", name, i, fq[i], d)
				}
				wc.codes[i] = int8(c)
			}
		}
		return checkCodes(name, wc, fq)
	case kernels.FP8E4M3:
		group, err := g.Group(in, out*in)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", name, err)
		}
		if group != in && group != out*in {
			return nil, refusal(name, fmt.Sprintf("fp8 weights in groups of %d: vLLM's fp8 weights are per channel, per tensor or in 2-D blocks", group), "fp8")
		}
		var scales []float32
		if g.Step != nil {
			scales = append(scales, g.Step.Data()...)
		} else { // minmax: qat's dynamic scale, amax/448
			scales = make([]float32, out*in/group)
			kernels.AbsMaxGroups(scales, w.Data(), group)
			for k := range scales {
				scales[k] = max(scales[k]/g.Format.FP().Max, 1e-12)
			}
		}
		wc := &weightCodes{fp8: make([]byte, out*in), scales: scales, group: group, bits: 8}
		for i, x := range w.Data() {
			s := scales[i/group]
			v := g.Format.FP().RoundFP(x / s)
			if v*s != fq[i] {
				return nil, fmt.Errorf("export %s: value %d: fp8 code %g times scale %g is %g, the fake-quant weight %g", name, i, v, s, v*s, fq[i])
			}
			wc.fp8[i] = E4M3(v)
		}
		return wc, nil
	}
	return nil, refusal(name, fmt.Sprintf("%s weights", g.Format), "fp8 (e4m3) or w4a16-g32")
}

// checkCodes checks int codes against the fake-quant weights.
func checkCodes(name string, wc *weightCodes, fq []float32) (*weightCodes, error) {
	for i, c := range wc.codes {
		if v := float32(c) * wc.scales[i/wc.group]; v != fq[i] {
			return nil, fmt.Errorf("export %s: value %d: code %d times scale %g is %g, the fake-quant weight %g", name, i, c, wc.scales[i/wc.group], v, fq[i])
		}
	}
	return wc, nil
}

func f16(b uint16) float32 { return float16.Frombits(b).Float32() }

// E4M3 encodes v, a value of the fp8 e4m3fn grid (RoundFP's output), as
// its byte: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is
// subnormal (steps of 2^-9). The fn variant has no infinities: 448 is
// 0x7e, NaN 0x7f.
func E4M3(v float32) byte {
	var s byte
	if math.Signbit(float64(v)) {
		s = 0x80
	}
	a := math.Abs(float64(v))
	switch {
	case v != v:
		return s | 0x7f
	case a == 0:
		return s
	case a < math.Ldexp(1, -6): // subnormal
		return s | byte(a/math.Ldexp(1, -9))
	}
	fr, e := math.Frexp(a) // a = fr * 2^e, fr in [0.5, 1)
	man := byte((fr*2 - 1) * 8)
	return s | byte(e-1+7)<<3 | man
}

// widenChannel turns per-tensor scales into per-channel ones (one scale
// repeated per row), which every vLLM kernel takes.
func widenChannel(wc *weightCodes, out, in int) {
	if wc.group == out*in && out > 1 {
		s := wc.scales[0]
		wc.scales = make([]float32, out)
		for i := range wc.scales {
			wc.scales[i] = s
		}
		wc.group = in
	}
}

// ctLinearOf is how ln is written, nil when it is not quantized.
func ctLinearOf(ln layers.NamedLinear) (*ctLinear, error) {
	l, name := ln.Linear, ln.Name
	if l.Weight == nil || l.Adapter != nil {
		return nil, fmt.Errorf("export %s: the layer has adapters (LoRA-QAT or LR-QAT): qat merge the checkpoint first", name)
	}
	if l.WeightQuant == nil {
		if l.InputQuant != nil {
			return nil, refusal(name, "its activations are quantized but not its weights", "w8a8")
		}
		return nil, nil
	}
	wc, err := codesOf(name, l)
	if err != nil {
		return nil, err
	}
	out, in := l.Weight.Shape()[0], l.Weight.Shape()[1]
	var cl ctLinear
	if l.InputQuant != nil {
		if cl.a, err = actArgs(name, l.InputQuant); err != nil {
			return nil, err
		}
		cl.hasAct = true
	}
	switch {
	case wc.fp8 != nil:
		if cl.hasAct && cl.a.Type != "float" {
			return nil, refusal(name, "fp8 weights with int activations", "fp8")
		}
		cl.format = ctFloat
		strategy, shape := "channel", []int{out, 1}
		if wc.group == out*in {
			strategy, shape = "tensor", []int{1}
		}
		cl.w = weightArgs(8, "float", strategy, 0)
		cl.tensors = []safetensors.Tensor{
			{Name: name + ".weight", DType: "F8_E4M3", Shape: []int{out, in}, Data: wc.fp8},
			safetensors.FromF32(name+".weight_scale", shape, wc.scales)}
	case cl.hasAct:
		if cl.a.Type != "int" {
			return nil, refusal(name, "int weights with fp8 activations", "w8a8 or fp8")
		}
		widenChannel(wc, out, in)
		if wc.group != in {
			return nil, refusal(name, fmt.Sprintf("int%d weights in groups of %d with quantized activations: vLLM's int8 GEMM takes per-channel weights", wc.bits, wc.group), "w8a8")
		}
		cl.format = ctInt
		cl.w = weightArgs(8, "int", "channel", 0)
		data := make([]byte, len(wc.codes))
		for i, c := range wc.codes {
			data[i] = byte(c)
		}
		cl.tensors = []safetensors.Tensor{
			{Name: name + ".weight", DType: "I8", Shape: []int{out, in}, Data: data},
			safetensors.FromF32(name+".weight_scale", []int{out, 1}, wc.scales)}
	default:
		if wc.bits != 4 && wc.bits != 8 {
			return nil, refusal(name, fmt.Sprintf("int%d weights: vLLM's weight-only kernels take 4 or 8 bits", wc.bits), "w4a16-g32")
		}
		widenChannel(wc, out, in)
		strategy := "channel"
		if wc.group != in {
			if !slices.Contains(marlinGroups, wc.group) {
				return nil, refusal(name, fmt.Sprintf("groups of %d: vLLM's weight-only kernels take groups of 32, 64 or 128, or channels", wc.group), "w4a16-g32")
			}
			strategy = "group"
		}
		cl.format = ctPacked
		cl.w = weightArgs(wc.bits, "int", strategy, wc.group)
		words, wpr := packInt32(wc.codes, wc.bits, out, in)
		shape := make([]byte, 16)
		binary.LittleEndian.PutUint64(shape, uint64(out))
		binary.LittleEndian.PutUint64(shape[8:], uint64(in))
		cl.tensors = []safetensors.Tensor{
			safetensors.FromI32(name+".weight_packed", []int{out, wpr}, words),
			safetensors.FromF32(name+".weight_scale", []int{out, len(wc.scales) / out}, wc.scales),
			{Name: name + ".weight_shape", DType: "I64", Shape: []int{2}, Data: shape}}
	}
	return &cl, nil
}

// packInt32 packs signed codes of bits bits as compressed-tensors'
// pack_to_int32 does: each code plus 2^(bits-1), 32/bits to a word from
// the low bits up, along the input (rows padded with zeros).
func packInt32(codes []int8, bits, out, in int) ([]int32, int) {
	per := 32 / bits
	wpr := (in + per - 1) / per
	packed := make([]int32, out*wpr)
	for r := 0; r < out; r++ {
		for i := 0; i < in; i++ {
			u := uint32(int32(codes[r*in+i])+int32(1)<<(bits-1)) & (1<<bits - 1)
			packed[r*wpr+i/per] |= int32(u << (bits * (i % per)))
		}
	}
	return packed, wpr
}

// CTResult says what a compressed-tensors export wrote.
type CTResult struct {
	Formats []string // the compression formats of its config groups
	Files   []string
	Bytes   int64
	// RoundedScales of Scales are the weight-only (pack-quantized) scales
	// that are not values of the model's dtype: vLLM's WNA16 kernels
	// compute with them rounded to it. Q4_0 and Q8_0's scales are float16
	// values (exact with --dtype f16).
	Scales, RoundedScales int
	// Dequantized names quantized linears vLLM computes unquantized (an
	// untied lm_head: vLLM's head takes no quantization method), written
	// as their fake-quant weights.
	Dequantized []string
}

// CTOptions are the choices of a compressed-tensors export: the dtype of
// the tensors that are not quantized (bf16 or f32; scales are always
// float32, what the trained scales are) and the shard size.
type CTOptions = HFOptions

// compressedTensors builds the tensors and quantization_config of m.
func compressedTensors(m *layers.Model, dtype string) ([]lazyTensor, *ctConfig, *CTResult, error) {
	if err := rotatedRefusal(m, "compressed-tensors", "vLLM"); err != nil {
		return nil, nil, nil, err
	}
	res := &CTResult{}
	cfg := &ctConfig{ConfigGroups: map[string]*ctScheme{}, QuantMethod: "compressed-tensors", QuantizationStatus: "compressed", Ignore: []string{}}
	for _, a := range m.Attentions() {
		if a.Attention.KQuant != nil || a.Attention.VQuant != nil {
			return nil, nil, nil, refusal(a.Name, "its KV cache is quantized with dynamic scales: vLLM's kv_cache_scheme is fp8 with static, calibrated scales", "the same rules without kv_cache")
		}
	}
	done := map[*autograd.Var][]safetensors.Tensor{}
	deq := map[*autograd.Var]*layers.Linear{} // a head written as its fake-quant weight
	schemes := map[string]*ctLinear{}
	for _, ln := range m.Linears() {
		if ln.Linear == m.Head {
			// vLLM's ParallelLMHead takes no quantization method: the
			// head is computed unquantized, from its fake-quant weight
			if ln.Linear.InputQuant != nil {
				return nil, nil, nil, refusal(ln.Name, "vLLM does not quantize the head's activations", "a preset that leaves lm_head alone (every preset does)")
			}
			if ln.Linear.WeightQuant != nil {
				deq[ln.Linear.Weight] = ln.Linear
				res.Dequantized = append(res.Dequantized, ln.Name)
			}
			cfg.Ignore = append(cfg.Ignore, ln.Name)
			continue
		}
		cl, err := ctLinearOf(ln)
		if err != nil {
			return nil, nil, nil, err
		}
		if cl == nil {
			cfg.Ignore = append(cfg.Ignore, ln.Name)
			continue
		}
		schemes[ln.Name] = cl
		done[ln.Linear.Weight] = cl.tensors
		if cl.format == ctPacked && dtype != "F32" {
			// vLLM's weight-only kernels take the scales in the model's
			// dtype (the other schemes keep them float32)
			sc, _ := cl.tensors[1].F32()
			res.Scales += len(sc)
			for _, x := range sc {
				if t, _ := floatTensor("", []int{1}, []float32{x}, dtype); !slices.Equal(mustFloats(t), []float32{x}) {
					res.RoundedScales++
				}
			}
		}
		var key *ctScheme
		for _, k := range sortedKeys(cfg.ConfigGroups) {
			g := cfg.ConfigGroups[k]
			if g.Format == cl.format && sameArgs(g.Weights, &cl.w) && sameArgs(g.InputActivations, actPtr(cl)) {
				key = g
				break
			}
		}
		if key == nil {
			w := cl.w
			key = &ctScheme{Weights: &w, InputActivations: actPtr(cl), Format: cl.format}
			cfg.ConfigGroups[fmt.Sprintf("group_%d", len(cfg.ConfigGroups))] = key
		}
		key.Targets = append(key.Targets, ln.Name)
	}
	if len(cfg.ConfigGroups) == 0 {
		return nil, nil, nil, fmt.Errorf("export compressed-tensors: no linear is quantized (train or ptq with a preset vLLM runs: %s; --format hf writes a full-precision model)", vllmPresets)
	}
	// vLLM fuses q/k/v and gate/up into one layer: one scheme for each
	for _, g := range m.InputGroups() {
		var first string
		for _, l := range g.Linears {
			for _, ln := range m.Linears() {
				if ln.Linear != l {
					continue
				}
				s := schemeKey(schemes[ln.Name])
				if first == "" {
					first = s
				} else if s != first {
					return nil, nil, nil, fmt.Errorf("export compressed-tensors: %s: the linears sharing this input are quantized differently; vLLM fuses them into one layer with one scheme", g.Name)
				}
			}
		}
	}
	var formats []string
	for _, k := range sortedKeys(cfg.ConfigGroups) {
		if f := cfg.ConfigGroups[k].Format; !slices.Contains(formats, f) {
			formats = append(formats, f)
		}
	}
	res.Formats = formats
	cfg.Format = formats[0]
	if len(formats) > 1 {
		cfg.Format = ctMixed
	}
	var ts []lazyTensor
	for _, p := range m.Params() {
		if p.Quant {
			continue
		}
		if t, ok := done[p.Var]; ok {
			for _, x := range t {
				ts = append(ts, eager(x))
			}
			continue
		}
		v := p.Var.Data
		if l, ok := deq[p.Var]; ok {
			v = func() []float32 { return fakeQuant(l) }
		}
		ts = append(ts, floatLazy(p.Name, p.Var.Shape(), p.Var.Size(), dtype, v))
	}
	return ts, cfg, res, nil
}

func mustFloats(t safetensors.Tensor) []float32 {
	v, err := floats(t)
	if err != nil {
		panic(err)
	}
	return v
}

func actPtr(cl *ctLinear) *ctArgs {
	if !cl.hasAct {
		return nil
	}
	a := cl.a
	return &a
}

func sameArgs(a, b *ctArgs) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// schemeKey identifies a linear's scheme ("" unquantized).
func schemeKey(cl *ctLinear) string {
	if cl == nil {
		return "none"
	}
	b, _ := json.Marshal([]any{cl.format, cl.w, actPtr(cl)})
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		// group_10 after group_9
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	return keys
}

// CompressedTensors writes m to dir for vLLM (atomic.Dir: dir is replaced
// only when qat wrote it, or with o.Force).
func CompressedTensors(m *layers.Model, tok *bpe.Tokenizer, dir string, o CTOptions) (*CTResult, error) {
	var res *CTResult
	err := atomic.Dir(dir, o.Force, func(tmp string) error {
		var err error
		res, err = CompressedTensorsInto(m, tok, tmp, o)
		return err
	})
	return res, err
}

// CompressedTensorsInto writes m for vLLM into dir, an empty directory the
// caller made (an atomic.Reservation's): config.json with
// quantization_config, generation_config.json, the tokenizer and the
// weights (sharded past o.MaxShardSize as HF does).
func CompressedTensorsInto(m *layers.Model, tok *bpe.Tokenizer, dir string, o CTOptions) (*CTResult, error) {
	dt, ok := hfDTypes[o.DType]
	if !ok {
		return nil, fmt.Errorf("dtype %q, want bf16, f16 or f32", o.DType)
	}
	ts, qc, res, err := compressedTensors(m, dt[0])
	if err != nil {
		return nil, err
	}
	cfg, err := hfConfigJSON(m, tok, dt[1], map[string]any{"quantization_config": qc})
	if err != nil {
		return nil, err
	}
	gen, err := generationConfigJSON(tok)
	if err != nil {
		return nil, err
	}
	if res.Files, res.Bytes, err = writeShards(dir, ts, o.MaxShardSize); err != nil {
		return nil, err
	}
	if err := atomic.WriteFile(filepath.Join(dir, "config.json"), cfg); err != nil {
		return nil, err
	}
	if err := atomic.WriteFile(filepath.Join(dir, "generation_config.json"), gen); err != nil {
		return nil, err
	}
	return res, writeTokenizer(tok, dir)
}
