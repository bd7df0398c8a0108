package export

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// upstream is what compressed-tensors' own sources (testdata, verbatim)
// define: each pydantic model's fields and each enum's values, parsed from
// the Python text.
type upstream struct {
	fields map[string][]string // class -> field names
	enums  map[string][]string // enum -> values
	consts map[string]string   // module-level string constants
}

var (
	classRe  = regexp.MustCompile(`^class (\w+)\(([^)]*)\):`)
	fieldRe  = regexp.MustCompile(`^    ([A-Za-z_]\w*)\s*:\s*\S`)
	memberRe = regexp.MustCompile(`^    (\w+) = "([^"]*)"`)
	constRe  = regexp.MustCompile(`^([A-Z_]+) = "([^"]*)"`)
)

// parseUpstream reads the class bodies of the testdata files: the
// annotated class attributes of BaseModel subclasses (their fields) and
// the string members of Enum subclasses.
func parseUpstream(t *testing.T) upstream {
	t.Helper()
	u := upstream{fields: map[string][]string{}, enums: map[string][]string{}, consts: map[string]string{}}
	files, _ := filepath.Glob("testdata/compressed-tensors/*.py")
	if len(files) != 6 {
		t.Fatalf("testdata/compressed-tensors: %d Python files, want the 6 the README lists", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		class, kind, inDoc := "", "", false
		for _, line := range strings.Split(string(b), "\n") {
			if m := classRe.FindStringSubmatch(line); m != nil {
				class, kind, inDoc = m[1], "", false
				switch {
				case strings.Contains(m[2], "BaseModel"):
					kind = "model"
					u.fields[class] = nil
				case strings.Contains(m[2], "Enum"):
					kind = "enum"
					u.enums[class] = nil
				}
				continue
			}
			if m := constRe.FindStringSubmatch(line); m != nil {
				u.consts[m[1]] = m[2]
			}
			if line != "" && line[0] != ' ' && line[0] != '#' && line[0] != ')' {
				class, kind = "", "" // a top-level statement ends the class
			}
			if kind == "" {
				continue
			}
			// docstrings: """ toggles
			if n := strings.Count(line, `"""`); n%2 == 1 {
				inDoc = !inDoc
				continue
			} else if n > 0 || inDoc {
				continue
			}
			switch kind {
			case "model":
				if m := fieldRe.FindStringSubmatch(line); m != nil && m[1] != "model_config" {
					u.fields[class] = append(u.fields[class], m[1])
				}
			case "enum":
				if m := memberRe.FindStringSubmatch(line); m != nil {
					u.enums[class] = append(u.enums[class], m[2])
				}
			}
		}
	}
	// what the parse must find, or the test checks nothing
	for _, c := range []struct{ class, has string }{{"QuantizationArgs", "num_bits"}, {"QuantizationArgs", "observer_kwargs"},
		{"QuantizationScheme", "input_activations"}, {"QuantizationConfig", "quantization_status"}, {"SparsityCompressionConfig", "format"}} {
		if !slices.Contains(u.fields[c.class], c.has) {
			t.Fatalf("parsed %s fields %v: no %s", c.class, u.fields[c.class], c.has)
		}
	}
	for _, c := range []struct{ enum, has string }{{"QuantizationType", "int"}, {"QuantizationStrategy", "token"},
		{"QuantizationStatus", "compressed"}, {"CompressionFormat", "pack-quantized"}} {
		if !slices.Contains(u.enums[c.enum], c.has) {
			t.Fatalf("parsed %s values %v: no %s", c.enum, u.enums[c.enum], c.has)
		}
	}
	return u
}

// checkKeys reports the keys of obj that are not fields of class.
func (u upstream) checkKeys(t *testing.T, where string, obj map[string]any, class string) {
	t.Helper()
	for k := range obj {
		if !slices.Contains(u.fields[class], k) {
			t.Errorf("%s: key %q is not a field of compressed-tensors' %s %v", where, k, class, u.fields[class])
		}
	}
}

func (u upstream) checkEnum(t *testing.T, where string, v any, enum string) {
	t.Helper()
	s, ok := v.(string)
	if !ok || !slices.Contains(u.enums[enum], s) {
		t.Errorf("%s: %v is not a value of compressed-tensors' %s %v", where, v, enum, u.enums[enum])
	}
}

// checkArgs validates one QuantizationArgs as upstream's field and model
// validators do (the rules that concern what qat writes).
func (u upstream) checkArgs(t *testing.T, where string, a map[string]any, input bool) {
	t.Helper()
	u.checkKeys(t, where, a, "QuantizationArgs")
	u.checkEnum(t, where+".type", a["type"], "QuantizationType")
	u.checkEnum(t, where+".strategy", a["strategy"], "QuantizationStrategy")
	gs, hasGroup := a["group_size"].(float64)
	switch s := a["strategy"]; {
	case s == "group" && (!hasGroup || gs <= 0):
		t.Errorf("%s: strategy group needs a positive group_size, have %v", where, a["group_size"])
	case s != "group" && hasGroup && gs > 0:
		t.Errorf("%s: group_size %v needs strategy group", where, gs)
	case s == "token" && a["dynamic"] != true:
		t.Errorf("%s: token strategy needs dynamic true", where)
	}
	if a["actorder"] != nil || a["block_structure"] != nil {
		t.Errorf("%s: actorder %v block_structure %v", where, a["actorder"], a["block_structure"])
	}
	if nb, _ := a["num_bits"].(float64); nb < 1 || nb > 8 || nb != math.Trunc(nb) {
		t.Errorf("%s: num_bits %v", where, a["num_bits"])
	}
	if input && !slices.Contains([]any{"token", "tensor", "group", "tensor_group", "attn_head"}, a["strategy"]) {
		t.Errorf("%s: strategy %v is not one QuantizationScheme allows for activations", where, a["strategy"])
	}
}

// vllmScheme is the scheme vLLM's CompressedTensorsConfig selects for a
// config group (_get_scheme_from_parts, the branches qat's exports can
// reach; README names the commit), "" when it raises NotImplementedError.
func vllmScheme(format string, w, in map[string]any) string {
	wb, _ := w["num_bits"].(float64)
	ws, sym := w["strategy"], w["symmetric"] == true
	if in == nil && (ws == "channel" || ws == "group") && w["dynamic"] != true && format == "pack-quantized" && (wb == 4 || wb == 8) {
		return "CompressedTensorsWNA16"
	}
	if format != "int-quantized" && format != "float-quantized" && format != "naive-quantized" {
		return ""
	}
	if w["type"] == "float" && sym && (ws == "tensor" || ws == "channel") && w["dynamic"] != true {
		if in == nil {
			return "CompressedTensorsW8A16Fp8"
		}
		if in["type"] == "float" && in["dynamic"] == true {
			return "CompressedTensorsW8A8Fp8"
		}
	}
	if in == nil {
		return ""
	}
	ib, _ := in["num_bits"].(float64)
	if wb == 8 && ib == 8 && (ws == "tensor" || ws == "channel") && in["strategy"] == "token" && sym && in["dynamic"] == true && w["type"] == "int" {
		return "CompressedTensorsW8A8Int8"
	}
	return ""
}

// ctModel is a model whose rows take groups of 128 (QQQ's) and every
// preset: one layer, dim 128.
func ctModel(t testing.TB, tied bool) (*layers.Model, *bpe.Tokenizer) {
	tok, err := bpe.Train([]string{text}, 288)
	if err != nil {
		t.Fatal(err)
	}
	m := layers.New(layers.Config{Vocab: tok.VocabSize(), Dim: 128, Layers: 1, Heads: 4, KVHeads: 2, FFNHidden: 256, RopeTheta: 10000,
		NormEps: 1e-5, Tied: tied, MaxSeq: 32})
	m.Init(11)
	return m, tok
}

func rule(w, a *qat.Spec) []qat.Rule {
	return []qat.Rule{{Match: "model.layers.*", Weights: w, Activations: a}}
}

func intSpec(bits int, gran string, group int) *qat.Spec {
	return &qat.Spec{Format: kernels.Int, Bits: bits, Symmetric: true, Granularity: gran, GroupSize: group, Scale: "minmax"}
}

// ctCases are the models vLLM runs: their rules, the format and the vLLM
// scheme every group must get.
var ctCases = []struct {
	name    string
	rules   []qat.Rule
	format  string
	schemes []string
}{
	{"w4a16-g32", qat.Presets["w4a16-g32"], "pack-quantized", []string{"CompressedTensorsWNA16"}},
	{"q8_0", rule(&qat.Spec{Format: kernels.Q8_0, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"}, nil), "pack-quantized", []string{"CompressedTensorsWNA16"}},
	{"int4-channel", rule(intSpec(4, "channel", 0), nil), "pack-quantized", []string{"CompressedTensorsWNA16"}},
	{"int8-g128", rule(intSpec(8, "group", 128), nil), "pack-quantized", []string{"CompressedTensorsWNA16"}},
	{"int4-tensor-lsq", rule(&qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "tensor", Scale: "lsq"}, nil), "pack-quantized", []string{"CompressedTensorsWNA16"}},
	{"w8a8", qat.Presets["w8a8"], "int-quantized", []string{"CompressedTensorsW8A8Int8"}},
	{"w4a8", qat.Presets["w4a8"], "int-quantized", []string{"CompressedTensorsW8A8Int8"}},
	{"w4a8-qqq", qat.Presets["w4a8-qqq"], "int-quantized", []string{"CompressedTensorsW8A8Int8"}},
	{"w4a8-qqq-g128", qat.Presets["w4a8-qqq-g128"], "int-quantized", []string{"CompressedTensorsW8A8Int8"}},
	{"fp8", qat.Presets["fp8"], "float-quantized", []string{"CompressedTensorsW8A8Fp8"}},
	{"fp8-weights", rule(qat.Presets["fp8"][0].Weights, nil), "float-quantized", []string{"CompressedTensorsW8A16Fp8"}},
	{"mixed", []qat.Rule{{Match: "model.layers.*.self_attn.*", Weights: qat.Presets["fp8"][0].Weights},
		{Match: "model.layers.*", Weights: intSpec(4, "group", 32)},
		{Match: "lm_head", Weights: intSpec(8, "channel", 0)}}, "mixed-precision", []string{"CompressedTensorsW8A16Fp8", "CompressedTensorsWNA16"}},
}

// TestCompressedTensorsConfig: for every model vLLM runs, the
// quantization_config has only keys and values compressed-tensors'
// sources define, selects the expected vLLM scheme in each group, and the
// tensors have the compressors' names, dtypes and shapes.
func TestCompressedTensorsConfig(t *testing.T) {
	u := parseUpstream(t)
	for _, c := range ctCases {
		t.Run(c.name, func(t *testing.T) {
			m, tok := ctModel(t, c.name != "mixed")
			if err := qat.Prepare(m, c.rules); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "ct")
			if _, err := CompressedTensors(m, tok, dir, CTOptions{DType: "bf16"}); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Q     map[string]any `json:"quantization_config"`
				DType string         `json:"torch_dtype"`
			}
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			q := cfg.Q
			u.checkKeys(t, "quantization_config", q, "QuantizationConfig")
			u.checkEnum(t, "quantization_config.format", q["format"], "CompressionFormat")
			u.checkEnum(t, "quantization_config.quantization_status", q["quantization_status"], "QuantizationStatus")
			if q["quantization_status"] != "compressed" || q["format"] != c.format || cfg.DType != "bfloat16" {
				t.Errorf("status %v format %v torch_dtype %v, want compressed %s bfloat16", q["quantization_status"], q["format"], cfg.DType, c.format)
			}
			if want := u.consts["DEFAULT_QUANTIZATION_METHOD"]; want == "" || q["quant_method"] != want {
				t.Errorf("quant_method %v, upstream's %q", q["quant_method"], want)
			}
			sf, err := readWeights(dir)
			if err != nil {
				t.Fatal(err)
			}
			groups, _ := q["config_groups"].(map[string]any)
			var got []string
			targets := map[string]bool{}
			for gname, gv := range groups {
				g := gv.(map[string]any)
				where := "config_groups." + gname
				u.checkKeys(t, where, g, "QuantizationScheme")
				u.checkEnum(t, where+".format", g["format"], "CompressionFormat")
				if g["format"] == "mixed-precision" {
					t.Errorf("%s: mixed-precision is not a group's format", where)
				}
				w, _ := g["weights"].(map[string]any)
				in, _ := g["input_activations"].(map[string]any)
				u.checkArgs(t, where+".weights", w, false)
				if in != nil {
					u.checkArgs(t, where+".input_activations", in, true)
					if g["format"] == "pack-quantized" {
						t.Errorf("%s: activations under pack-quantized", where)
					}
				}
				got = append(got, vllmScheme(g["format"].(string), w, in))
				for _, tg := range g["targets"].([]any) {
					targets[tg.(string)] = true
					checkCTTensors(t, sf, tg.(string), g["format"].(string), w, m)
				}
			}
			slices.Sort(got)
			got = slices.Compact(got) // groups of one scheme differ by strategy
			if !slices.Equal(got, c.schemes) {
				t.Errorf("vLLM schemes %v, want %v", got, c.schemes)
			}
			for _, ln := range m.Linears() {
				ign := slices.Contains(anys(q["ignore"]), ln.Name)
				if targets[ln.Name] == ign {
					t.Errorf("%s: target %v, ignored %v", ln.Name, targets[ln.Name], ign)
				}
			}
		})
	}
}

func anys(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// checkCTTensors checks a target's tensors against the compressor of its
// format (compression_param_info): names, dtypes, shapes.
func checkCTTensors(t *testing.T, f *safetensors.File, name, format string, w map[string]any, m *layers.Model) {
	t.Helper()
	var out, in int
	for _, ln := range m.Linears() {
		if ln.Name == name {
			out, in = ln.Linear.Weight.Shape()[0], ln.Linear.Weight.Shape()[1]
		}
	}
	bits := int(w["num_bits"].(float64))
	groups := 1
	switch w["strategy"] {
	case "channel":
		groups = 1
	case "group":
		groups = in / int(w["group_size"].(float64))
	}
	scaleShape := []int{out, groups}
	if w["strategy"] == "tensor" {
		scaleShape = []int{1}
	}
	want := map[string]string{}
	switch format {
	case "pack-quantized":
		pf := 32 / bits
		want[".weight_packed"] = fmt.Sprint("I32", []int{out, (in + pf - 1) / pf})
		want[".weight_shape"] = fmt.Sprint("I64", []int{2})
	case "int-quantized":
		want[".weight"] = fmt.Sprint("I8", []int{out, in})
	case "float-quantized":
		want[".weight"] = fmt.Sprint("F8_E4M3", []int{out, in})
	}
	want[".weight_scale"] = fmt.Sprint("F32", scaleShape)
	for suffix, w := range want {
		x, ok := f.Get(name + suffix)
		if !ok {
			t.Errorf("%s%s missing", name, suffix)
			continue
		}
		if got := fmt.Sprint(x.DType, x.Shape); got != w {
			t.Errorf("%s%s: %s, want %s", name, suffix, got, w)
		}
	}
	if _, ok := f.Get(name + ".weight"); ok && format == "pack-quantized" {
		t.Errorf("%s.weight beside weight_packed", name)
	}
}

// TestCompressedTensorsReadBack: every export reads back (f32 and bf16,
// sharded) into the fake-quant weights exactly and, with its activation
// quantizers, the trained model's logits.
func TestCompressedTensorsReadBack(t *testing.T) {
	for _, c := range ctCases {
		t.Run(c.name, func(t *testing.T) {
			m, tok := ctModel(t, c.name != "mixed")
			if err := qat.Prepare(m, c.rules); err != nil {
				t.Fatal(err)
			}
			want := fakeQuantWeights(t, m)
			for _, o := range []CTOptions{{DType: "f32"}, {DType: "bf16", MaxShardSize: 50000}} {
				dir := filepath.Join(t.TempDir(), "ct")
				res, err := CompressedTensors(m, tok, dir, o)
				if err != nil {
					t.Fatal(err)
				}
				if o.MaxShardSize > 0 && len(res.Files) < 2 {
					t.Errorf("%d files at shard size %d", len(res.Files), o.MaxShardSize)
				}
				m2, _, err := LoadPackedSafetensors(dir)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range m2.Params() {
					if p.Quant {
						continue
					}
					w := want[p.Name]
					if o.DType == "bf16" && !isTarget(m, p.Name) {
						w = widen(BF16(w))
					}
					if !slices.Equal(p.Var.Data(), w) {
						t.Errorf("%s %s: read back differs from the fake-quant weight", o.DType, p.Name)
					}
				}
				if o.DType == "f32" {
					ids := tok.Encode(nil, text[:60])
					a, b := logits(m2, ids), logits(m, ids)
					var worst float64
					for i := range a {
						worst = max(worst, math.Abs(float64(a[i]-b[i])))
					}
					if worst > 1e-4 {
						t.Errorf("read-back logits differ by %g", worst)
					}
				}
			}
		})
	}
}

// TestCompressedTensorsRoundedScales: the weight-only scales vLLM would
// round to the model's dtype are counted: none for Q4_0's fp16 scales at
// f16, some at bf16 and for minmax int scales.
func TestCompressedTensorsRoundedScales(t *testing.T) {
	for _, c := range []struct {
		rules   []qat.Rule
		dtype   string
		rounded bool
	}{{qat.Presets["w4a16-g32"], "f16", false}, {qat.Presets["w4a16-g32"], "bf16", true}, {rule(intSpec(4, "channel", 0), nil), "bf16", true}} {
		m, tok := ctModel(t, true)
		if err := qat.Prepare(m, c.rules); err != nil {
			t.Fatal(err)
		}
		res, err := CompressedTensors(m, tok, filepath.Join(t.TempDir(), "ct"), CTOptions{DType: c.dtype})
		if err != nil {
			t.Fatal(err)
		}
		if res.Scales == 0 || (res.RoundedScales > 0) != c.rounded {
			t.Errorf("%s at %s: %d of %d scales rounded", c.rules[0].Weights.Format, c.dtype, res.RoundedScales, res.Scales)
		}
	}
}

// TestCompressedTensorsQwen2: a model with q/k/v biases, head_dim and
// rope_scaling exports with Qwen2's config (HFConfigWith) and its biases
// as float tensors beside the codes, and reads back.
func TestCompressedTensorsQwen2(t *testing.T) {
	m, tok := ctModel(t, true)
	cfg := m.Config
	cfg.QKVBias, cfg.HeadDimension = true, 64
	cfg.RopeScaling = layers.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 16}
	m = layers.New(cfg)
	m.Init(4)
	if err := qat.Prepare(m, qat.Presets["w4a8-qqq"]); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ct")
	if _, err := CompressedTensors(m, tok, dir, CTOptions{DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	m2, _, err := LoadPackedSafetensors(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Config != m.Config {
		t.Errorf("config %+v, want %+v", m2.Config, m.Config)
	}
	want := fakeQuantWeights(t, m)
	for _, p := range m2.Params() {
		if !p.Quant && !slices.Equal(p.Var.Data(), want[p.Name]) {
			t.Errorf("%s differs", p.Name)
		}
	}
	sf, err := readWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := sf.Get("model.layers.0.self_attn.q_proj.bias"); !ok || b.DType != "F32" {
		t.Errorf("q_proj.bias: %v %v", ok, b.DType)
	}
}

// isTarget reports whether param name is a quantized linear's weight in
// m (written as codes, exact in any dtype).
func isTarget(m *layers.Model, name string) bool {
	for _, ln := range m.Linears() {
		if ln.Name+".weight" == name {
			return ln.Linear.WeightQuant != nil && ln.Linear != m.Head
		}
	}
	return false
}

func widen(b []uint16) []float32 {
	v := make([]float32, len(b))
	for i, x := range b {
		v[i] = math.Float32frombits(uint32(x) << 16)
	}
	return v
}

// TestCompressedTensorsRefusals: what vLLM cannot run as trained is
// refused, naming the linear, why, and the nearest preset vLLM runs.
func TestCompressedTensorsRefusals(t *testing.T) {
	gwq := intSpec(4, "channel", 0)
	gwq.Outliers = 0.02
	asymW := intSpec(4, "group", 32)
	asymW.Symmetric = false
	symAct := &qat.Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "token", Scale: "minmax"}
	for _, c := range []struct {
		name  string
		rules []qat.Rule
		want  []string
	}{
		{"w4a4", qat.Presets["w4a4"], []string{"model.layers.0.self_attn.q_proj", "int4 activations", "nearest is w8a8"}},
		{"gwq", rule(gwq, nil), []string{"fp16 outliers", "nearest is w4a16-g32"}},
		{"int2", rule(intSpec(2, "channel", 0), nil), []string{"int2 weights", "nearest is w4a16-g32"}},
		{"group 16", rule(intSpec(4, "group", 16), nil), []string{"groups of 16", "nearest is w4a16-g32"}},
		{"asymmetric weights", rule(asymW, nil), []string{"asymmetric int weights"}},
		{"int4 groups with activations", rule(intSpec(4, "group", 32), qat.Presets["w4a8"][0].Activations), []string{"groups of 32 with quantized activations", "nearest is w8a8"}},
		{"symmetric int8 activations", rule(intSpec(8, "channel", 0), symAct), []string{"amax/127.5", "restricted"}},
		{"fp8 e5m2", rule(&qat.Spec{Format: kernels.FP8E5M2, Symmetric: true, Granularity: "channel", Scale: "minmax"}, nil), []string{"fp8_e5m2 weights"}},
		{"kv cache", []qat.Rule{{Match: "model.layers.*", Weights: intSpec(4, "channel", 0),
			KVCache: &qat.Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "token", Scale: "minmax"}}}, []string{"model.layers.0.self_attn", "KV cache"}},
		{"q/k/v differ", []qat.Rule{{Match: "*.q_proj", Weights: intSpec(8, "channel", 0)}, {Match: "model.layers.*", Weights: intSpec(4, "channel", 0)}},
			[]string{"model.layers.0.self_attn.qkv", "fuses"}},
		{"nothing quantized", nil, []string{"no linear is quantized"}},
	} {
		m, tok := ctModel(t, true)
		if c.rules != nil {
			if err := qat.Prepare(m, c.rules); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		dir := filepath.Join(t.TempDir(), "ct")
		_, err := CompressedTensors(m, tok, dir, CTOptions{DType: "bf16"})
		if err == nil {
			t.Errorf("%s: exported", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
		if _, serr := os.Stat(dir); serr == nil {
			t.Errorf("%s: a refused export left %s", c.name, dir)
		}
	}
}

// TestE4M3: every fp8 e4m3fn byte decodes (decodeE4M3, from the bit
// fields) to a value E4M3 encodes back to the byte, and RoundFP leaves it
// on the grid; the extremes are the format's.
func TestE4M3(t *testing.T) {
	f := kernels.FP8E4M3.FP()
	for b := 0; b < 256; b++ {
		v := decodeE4M3(byte(b))
		if b&0x7f == 0x7f {
			if v == v {
				t.Errorf("%#x: %g, want NaN", b, v)
			}
			continue
		}
		if f.RoundFP(v) != v {
			t.Errorf("%#x: %g is not on RoundFP's grid", b, v)
		}
		if e := E4M3(v); e != byte(b) {
			t.Errorf("%#x decodes to %g, which encodes to %#x", b, v, e)
		}
	}
	if decodeE4M3(0x7e) != 448 || decodeE4M3(0x01) != float32(math.Ldexp(1, -9)) || decodeE4M3(0xfe) != -448 {
		t.Errorf("extremes %g %g %g", decodeE4M3(0x7e), decodeE4M3(0x01), decodeE4M3(0xfe))
	}
}

// TestCompressedTensorsTorch: compressed-tensors' own unpack_from_int32
// (run from the upstream file) and an independent decoding in torch turn
// every exported tensor into the fake-quant weights of the model, read
// from an f32 --format hf export of it, bit for bit. Without torch it
// skips, unless QAT_REQUIRE_TORCH=1.
func TestCompressedTensorsTorch(t *testing.T) {
	requireTorch(t)
	var dirs []string
	for _, c := range ctCases {
		if c.name != "w4a16-g32" && c.name != "int8-g128" && c.name != "w4a8-qqq-g128" && c.name != "fp8" && c.name != "mixed" {
			continue
		}
		m, tok := ctModel(t, c.name != "mixed")
		if err := qat.Prepare(m, c.rules); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), c.name)
		if _, err := CompressedTensors(m, tok, filepath.Join(dir, "ct"), CTOptions{DType: "bf16", MaxShardSize: 60000}); err != nil {
			t.Fatal(err)
		}
		if _, err := HF(m, tok, filepath.Join(dir, "hf"), HFOptions{DType: "f32"}); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, filepath.Join(dir, "ct"), filepath.Join(dir, "hf"))
	}
	out, err := exec.Command(torchPython, append([]string{"testdata/ct_check.py"}, dirs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ct_check.py: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestCompressedTensorsTargets: a compressed-tensors config written as
// llm-compressor writes it (targets ["Linear"] with ignore ["lm_head"], or
// "re:" expressions) reads back as the exact names do; asymmetric weights
// and activation ordering, which qat does not read, are refused naming
// the group.
func TestCompressedTensorsTargets(t *testing.T) {
	m, tok := ctModel(t, false)
	if err := qat.Prepare(m, qat.Presets["w8a8"]); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "ct")
	if _, err := CompressedTensors(m, tok, base, CTOptions{DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	want := fakeQuantWeights(t, m)
	group := func(cfg map[string]any) map[string]any {
		return cfg["quantization_config"].(map[string]any)["config_groups"].(map[string]any)["group_0"].(map[string]any)
	}
	for _, c := range []struct {
		name string
		edit func(cfg map[string]any)
		want string // "" reads back
	}{
		{"Linear", func(cfg map[string]any) {
			group(cfg)["targets"] = []any{"Linear"}
			cfg["quantization_config"].(map[string]any)["ignore"] = []any{"lm_head"}
		}, ""},
		{"re:", func(cfg map[string]any) {
			group(cfg)["targets"] = []any{"re:.*_proj$"}
			cfg["quantization_config"].(map[string]any)["ignore"] = []any{"re:lm_.*"}
		}, ""},
		{"Linear without ignore", func(cfg map[string]any) {
			group(cfg)["targets"] = []any{"Linear"}
			cfg["quantization_config"].(map[string]any)["ignore"] = []any{}
		}, "lm_head: weight or weight_scale missing"},
		{"bad expression", func(cfg map[string]any) { group(cfg)["targets"] = []any{"re:(("} }, `targets "re:(("`},
		{"asymmetric", func(cfg map[string]any) { group(cfg)["weights"].(map[string]any)["symmetric"] = false }, "config_groups.group_0.weights: symmetric false"},
		{"actorder", func(cfg map[string]any) { group(cfg)["weights"].(map[string]any)["actorder"] = "group" }, "actorder group"},
	} {
		dir := filepath.Join(t.TempDir(), "edited")
		os.MkdirAll(dir, 0o755)
		for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
			b, err := os.ReadFile(filepath.Join(base, f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, f), b, 0o644)
		}
		editConfig(t, dir, c.edit)
		if c.want != "" {
			refuseQuickly(t, c.name, func() error { _, _, err := LoadPackedSafetensors(dir); return err }, c.want)
			continue
		}
		m2, _, err := LoadPackedSafetensors(dir)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		for _, p := range m2.Params() {
			if !p.Quant && !slices.Equal(p.Var.Data(), want[p.Name]) {
				t.Errorf("%s: %s differs", c.name, p.Name)
			}
		}
		if m2.Layers[0].MLP.Down.InputQuant == nil || m2.Head.InputQuant != nil {
			t.Errorf("%s: activation quantizers on down_proj %v, lm_head %v", c.name, m2.Layers[0].MLP.Down.InputQuant != nil, m2.Head.InputQuant != nil)
		}
	}
}

// TestExportsDeterministic: exporting a model twice writes the same bytes
// (config groups, index and headers in a fixed order).
func TestExportsDeterministic(t *testing.T) {
	m, tok := ctModel(t, false)
	if err := qat.Prepare(m, ctCases[len(ctCases)-1].rules); err != nil { // mixed: several groups
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		if _, err := CompressedTensors(m, tok, filepath.Join(dir, fmt.Sprint("ct", i)), CTOptions{DType: "bf16", MaxShardSize: 40000}); err != nil {
			t.Fatal(err)
		}
		if _, err := HF(m, tok, filepath.Join(dir, fmt.Sprint("hf", i)), HFOptions{DType: "bf16", MaxShardSize: 40000}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"ct", "hf"} {
		es, err := os.ReadDir(filepath.Join(dir, f+"0"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Name() == ".qat-output" || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			a, _ := os.ReadFile(filepath.Join(dir, f+"0", e.Name()))
			b, _ := os.ReadFile(filepath.Join(dir, f+"1", e.Name()))
			if string(a) != string(b) {
				t.Errorf("%s/%s differs between two exports", f, e.Name())
			}
		}
	}
}
