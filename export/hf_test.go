package export

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"qat/autograd"
	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// readHF reads an HF export back as transformers would: the index when
// there is one (else model.safetensors), every tensor decoded to float32
// (bf16 widened exactly), and the config. It checks that the index and the
// shards agree: each tensor in the shard the index names, total_size the
// sum of the tensors' bytes, no tensor in two shards.
func readHF(t *testing.T, dir string) (layers.Config, map[string][]float32, map[string]safetensors.Tensor) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := layers.ParseHFConfig(b)
	if err != nil {
		t.Fatalf("config.json: %v", err)
	}
	files := map[string]bool{"model.safetensors": true}
	var idx hfIndex
	if ib, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		if err := json.Unmarshal(ib, &idx); err != nil {
			t.Fatal(err)
		}
		files = map[string]bool{}
		for _, f := range idx.WeightMap {
			files[f] = true
		}
		if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
			t.Errorf("both model.safetensors and an index")
		}
	}
	vals := map[string][]float32{}
	raw := map[string]safetensors.Tensor{}
	var total int64
	for f := range files {
		sf, err := safetensors.Read(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if sf.Metadata["format"] != "pt" {
			t.Errorf("%s: metadata %v, transformers wants format pt", f, sf.Metadata)
		}
		for _, x := range sf.Tensors {
			if _, dup := raw[x.Name]; dup {
				t.Errorf("%s in two shards", x.Name)
			}
			if idx.WeightMap != nil && idx.WeightMap[x.Name] != f {
				t.Errorf("%s is in %s, the index says %q", x.Name, f, idx.WeightMap[x.Name])
			}
			raw[x.Name] = x
			total += int64(len(x.Data))
			switch x.DType {
			case "F32":
				vals[x.Name], _ = x.F32()
			case "BF16":
				v := make([]float32, len(x.Data)/2)
				for i := range v {
					v[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(x.Data[2*i:])) << 16)
				}
				vals[x.Name] = v
			default:
				t.Errorf("%s: dtype %s", x.Name, x.DType)
			}
		}
	}
	if idx.WeightMap != nil {
		if len(idx.WeightMap) != len(raw) {
			t.Errorf("the index maps %d tensors, the shards hold %d", len(idx.WeightMap), len(raw))
		}
		if idx.Metadata["total_size"] != total {
			t.Errorf("total_size %d, the tensors have %d bytes", idx.Metadata["total_size"], total)
		}
	}
	return c, vals, raw
}

// fakeQuantWeights are m's parameters as its forward uses them, by name:
// each quantized linear's weight through its quantizer, computed here
// through Linear.Forward on the identity (x = I gives x W^T = W^T), not
// through the export's code.
func fakeQuantWeights(t *testing.T, m *layers.Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, p := range m.Params() {
		if !p.Quant {
			out[p.Name] = p.Var.Data()
		}
	}
	for _, ln := range m.Linears() {
		if ln.Linear.WeightQuant == nil {
			continue
		}
		w := ln.Linear.Weight
		rows, cols := w.Shape()[0], w.Shape()[1]
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		x := autograd.NewConst(identity(cols), cols, cols)
		l := *ln.Linear
		l.InputQuant, l.Observers, l.OutputObservers = nil, nil, nil
		y := l.Forward(tp, x).Data() // [cols, rows] = W^T
		v := make([]float32, rows*cols)
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				v[r*cols+c] = y[c*rows+r]
			}
		}
		out[ln.Name+".weight"] = v
	}
	return out
}

func identity(n int) []float32 {
	v := make([]float32, n*n)
	for i := 0; i < n; i++ {
		v[i*n+i] = 1
	}
	return v
}

// TestHFRoundTrip: an f32 export of models trained with each kind of
// weight quantizer reads back (config, every tensor) as the model's
// fake-quant weights exactly, no quantizer state in it; a fresh model
// built from it computes the quantized model's logits.
func TestHFRoundTrip(t *testing.T) {
	gwq := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax", Outliers: 0.02}}}
	for _, c := range []struct {
		name  string
		rules []qat.Rule
		tied  bool
	}{{"none", nil, true}, {"w4a16-g32", qat.Presets["w4a16-g32"], false}, {"fp8", qat.Presets["fp8"], true},
		{"qqq-g128", goldenRulesOf(t, "qqq-g128"), false}, {"lsq-group", goldenRulesOf(t, "lsq-group"), false}, {"gwq", gwq, true},
		{"qwen2", qat.Presets["w4a16-g32"], false},
		{"kv", []qat.Rule{{Match: "model.layers.*", Weights: gwq[0].Weights, KVCache: &qat.Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "token", Scale: "minmax"}}}, false}} {
		t.Run(c.name, func(t *testing.T) {
			m, tok := testModel(t, c.tied)
			if c.name == "qwen2" { // the architecture's keys: biases, head_dim, rope_scaling
				cfg := m.Config
				cfg.QKVBias, cfg.HeadDimension = true, 64
				cfg.RopeScaling = layers.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 16}
				m = layers.New(cfg)
				m.Init(9)
			}
			if c.rules != nil {
				if err := qat.Prepare(m, c.rules); err != nil {
					t.Fatal(err)
				}
			}
			dir := filepath.Join(t.TempDir(), "hf")
			res, err := HF(m, tok, dir, HFOptions{DType: "f32"})
			if err != nil {
				t.Fatal(err)
			}
			cfg, vals, _ := readHF(t, dir)
			if cfg != m.Config {
				t.Errorf("config.json reads as %+v, the model is %+v", cfg, m.Config)
			}
			want := fakeQuantWeights(t, m)
			if len(vals) != len(want) {
				t.Errorf("%d tensors, the model has %d parameters", len(vals), len(want))
			}
			for name, w := range want {
				if !slices.Equal(vals[name], w) {
					t.Errorf("%s: the export differs from the fake-quant weight", name)
				}
			}
			if c.rules != nil && c.name != "none" && slices.Equal(vals["model.layers.0.mlp.up_proj.weight"], m.Layers[0].MLP.Up.Weight.Data()) {
				t.Errorf("the export holds the latent weights, not the quantized ones")
			}
			// a model built from the files alone
			fresh := layers.New(cfg)
			for _, p := range fresh.Params() {
				copy(p.Var.Data(), vals[p.Name])
			}
			ids := tok.Encode(nil, text[:60])
			quantizesActs := c.name == "fp8" || c.name == "qqq-g128" || c.name == "kv"
			if quantizesActs != (len(res.ActQuant) > 0) {
				t.Errorf("activation and KV quantizers reported: %v", res.ActQuant)
			}
			if !quantizesActs {
				a, b := logits(fresh, ids), logits(m, ids)
				var worst float64
				for i := range a {
					worst = max(worst, math.Abs(float64(a[i]-b[i])))
				}
				t.Logf("max logit difference %g", worst)
				if worst > 1e-5 {
					t.Errorf("the exported model's logits differ from the trained model's by %g", worst)
				}
			}
		})
	}
}

// bf16Ref rounds f to bfloat16 independently of BF16's bit trick: the two
// bf16 values around f (truncation and the next one up in magnitude),
// compared in float64; a tie goes to the even one.
func bf16Ref(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return 0 // NaN: compared by class
	}
	lo := b &^ 0xffff
	if lo == b {
		return uint16(b >> 16)
	}
	hi := lo + 0x10000 // next magnitude up (into infinity past the largest)
	dl := math.Abs(float64(f) - float64(math.Float32frombits(lo)))
	dh := math.Abs(float64(math.Float32frombits(hi)) - float64(f))
	if math.IsInf(float64(math.Float32frombits(hi)), 0) {
		// the halfway point to 2^128 decides, as for any other pair
		dh = math.Abs(math.Ldexp(1, 128)*float64(math.Copysign(1, float64(f))) - float64(f))
	}
	switch {
	case dl < dh:
		return uint16(lo >> 16)
	case dh < dl:
		return uint16(hi >> 16)
	case (lo>>16)&1 == 0:
		return uint16(lo >> 16)
	}
	return uint16(hi >> 16)
}

// TestBF16: the rounding against bf16Ref on special values (ties both
// ways, subnormals, the largest finite values, infinities, NaNs) and a
// million random bit patterns.
func TestBF16(t *testing.T) {
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 1.00390625, 1.01171875, 1.0078125 + 1.0/(1<<20), math.MaxFloat32, -math.MaxFloat32,
		float32(math.Inf(1)), float32(math.Inf(-1)), math.SmallestNonzeroFloat32, 3.3895314e38, 3.3961775e38, 1e-40, -1e-45}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1<<20; i++ {
		vals = append(vals, math.Float32frombits(rng.Uint32()))
	}
	got := BF16(vals)
	for i, f := range vals {
		g := got[i]
		if f != f {
			if gf := math.Float32frombits(uint32(g) << 16); gf == gf || g>>15 != uint16(math.Float32bits(f)>>31) {
				t.Fatalf("NaN %08x -> %04x: not a NaN of the same sign", math.Float32bits(f), g)
			}
			continue
		}
		if w := bf16Ref(f); g != w {
			t.Fatalf("%g (%08x): %04x, want %04x", f, math.Float32bits(f), g, w)
		}
	}
}

// TestHFShards: a bf16 export split at a small --max-shard-size: HF's
// names, every shard within the size unless one tensor is larger, the
// tensors in model order across the shards, the index consistent
// (readHF), and the values those of the unsharded f32 export rounded.
func TestHFShards(t *testing.T) {
	m, tok := testModel(t, false)
	if err := qat.Prepare(m, qat.Presets["w4a8"]); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	one, err := HF(m, tok, filepath.Join(dir, "one"), HFOptions{DType: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for _, p := range m.Params() {
		if !p.Quant {
			pos[p.Name] = len(pos)
		}
	}
	const max = 20000 // the embedding (288 x 64 bf16 = 36,864 bytes) exceeds it
	res, err := HF(m, tok, filepath.Join(dir, "sharded"), HFOptions{DType: "bf16", MaxShardSize: max})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) < 3 || one.Files[0] != "model.safetensors" {
		t.Fatalf("files %v (unsharded %v)", res.Files, one.Files)
	}
	seen := 0
	for i, f := range res.Files {
		if want := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(res.Files)); f != want {
			t.Errorf("shard %d is %s, want %s", i, f, want)
		}
		sf, err := safetensors.Read(filepath.Join(dir, "sharded", f))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		var order []string
		for _, x := range sf.Tensors {
			n += len(x.Data)
			order = append(order, x.Name)
		}
		// within a shard, model order (a tensor over the size goes to a
		// shard of its own, ahead of the one being filled, as
		// huggingface_hub's split does)
		if !slices.IsSortedFunc(order, func(a, b string) int { return pos[a] - pos[b] }) {
			t.Errorf("%s: tensors %v out of model order", f, order)
		}
		seen += len(order)
		if n > max && len(sf.Tensors) > 1 {
			t.Errorf("%s: %d bytes in %d tensors, over %d", f, n, len(sf.Tensors), max)
		}
	}
	if seen != len(pos) {
		t.Errorf("%d tensors in the shards, the model has %d", seen, len(pos))
	}
	_, v32, _ := readHF(t, filepath.Join(dir, "one"))
	_, v16, raw := readHF(t, filepath.Join(dir, "sharded"))
	if res.Bytes*2 != one.Bytes {
		t.Errorf("bf16 total %d, f32 total %d", res.Bytes, one.Bytes)
	}
	for name, v := range v32 {
		if raw[name].DType != "BF16" {
			t.Errorf("%s: %s", name, raw[name].DType)
		}
		for i, f := range v {
			if w := math.Float32frombits(uint32(bf16Ref(f)) << 16); v16[name][i] != w {
				t.Fatalf("%s[%d]: %g, want %g (%g rounded)", name, i, v16[name][i], w, f)
			}
		}
	}
}

// TestHFConfigFiles: config.json has transformers' keys with the
// tokenizer's ids and the dtype; generation_config.json the ids; the
// tokenizer reads back.
func TestHFConfigFiles(t *testing.T) {
	m, tok := testModel(t, true)
	dir := filepath.Join(t.TempDir(), "hf")
	if _, err := HF(m, tok, dir, HFOptions{DType: "bf16"}); err != nil {
		t.Fatal(err)
	}
	var cfg, gen map[string]any
	for f, dst := range map[string]*map[string]any{"config.json": &cfg, "generation_config.json": &gen} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	bos, eos := float64(tok.ID(bpe.BOS)), float64(tok.ID(bpe.EOS))
	for k, want := range map[string]any{"torch_dtype": "bfloat16", "bos_token_id": bos, "eos_token_id": eos, "model_type": "llama",
		"tie_word_embeddings": true, "vocab_size": float64(tok.VocabSize()), "hidden_size": 64.0, "num_key_value_heads": 1.0} {
		if fmt.Sprint(cfg[k]) != fmt.Sprint(want) {
			t.Errorf("config.json %s = %v, want %v", k, cfg[k], want)
		}
	}
	if a, _ := cfg["architectures"].([]any); len(a) != 1 || a[0] != "LlamaForCausalLM" {
		t.Errorf("architectures %v", cfg["architectures"])
	}
	if gen["bos_token_id"] != bos || gen["eos_token_id"] != eos {
		t.Errorf("generation_config.json %v, want bos %v eos %v", gen, bos, eos)
	}
	if p, ok := tok.Special[bpe.PAD]; ok && (gen["pad_token_id"] != float64(p) || cfg["pad_token_id"] != float64(p)) {
		t.Errorf("pad_token_id %v / %v, want %d", cfg["pad_token_id"], gen["pad_token_id"], p)
	}
	tk, err := bpe.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tk.Encode(nil, text[:80]), tok.Encode(nil, text[:80])) {
		t.Errorf("tokenizer.json encodes differently")
	}
	if _, err := os.Stat(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		t.Errorf("tokenizer_config.json: %v", err)
	}
}

// TestHFStopIDs: Llama 2's real tokenizer files with a
// generation_config.json listing two stop ids (as Llama 3's
// <|end_of_text|> and <|eot_id|>): the export's generation_config.json
// lists them, config.json has the eos, and the tokenizer's own
// tokenizer_config.json goes along. Without the files (make npm-deps) it
// skips, unless QAT_REQUIRE_NODE=1.
func TestHFStopIDs(t *testing.T) {
	src := filepath.Join("..", ".cache", "tokref", "llama2")
	if _, err := os.Stat(filepath.Join(src, "tokenizer_config.json")); err != nil {
		if os.Getenv("QAT_REQUIRE_NODE") == "1" {
			t.Fatalf("QAT_REQUIRE_NODE=1 but %s is missing (make npm-deps): %v", src, err)
		}
		t.Skipf("%s missing (make npm-deps)", src)
	}
	dir := filepath.Join(t.TempDir(), "tok")
	os.MkdirAll(dir, 0o755)
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	stops := []int32{2, 13}
	gb, _ := json.Marshal(map[string]any{"bos_token_id": 1, "eos_token_id": stops})
	os.WriteFile(filepath.Join(dir, "generation_config.json"), gb, 0o644)
	tok, err := bpe.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := layers.New(layers.Config{Vocab: tok.VocabSize(), Dim: 32, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 16})
	out := filepath.Join(t.TempDir(), "hf")
	if _, err := HF(m, tok, out, HFOptions{DType: "bf16"}); err != nil {
		t.Fatal(err)
	}
	var gen, cfg map[string]any
	for f, dst := range map[string]*map[string]any{"config.json": &cfg, "generation_config.json": &gen} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(gen["eos_token_id"]) != fmt.Sprint(stops) || cfg["eos_token_id"] != 2.0 || cfg["bos_token_id"] != 1.0 || gen["bos_token_id"] != 1.0 {
		t.Errorf("stop ids %v: generation_config.json %v, config.json bos %v eos %v", stops, gen, cfg["bos_token_id"], cfg["eos_token_id"])
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || string(a) != string(b) {
			t.Errorf("%s is not the tokenizer's own (%v)", f, err)
		}
	}
}

// TestHFRefusals: what an HF export cannot hold is refused naming why;
// a directory qat did not write is not replaced.
func TestHFRefusals(t *testing.T) {
	m, tok := testModel(t, false)
	dir := t.TempDir()
	if _, err := HF(m, tok, filepath.Join(dir, "x"), HFOptions{DType: "f8"}); err == nil || !strings.Contains(err.Error(), `dtype "f8"`) {
		t.Errorf("dtype f8: %v", err)
	}
	user := filepath.Join(dir, "user")
	if err := os.MkdirAll(user, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(user, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := HF(m, tok, user, HFOptions{DType: "f32"}); err == nil {
		t.Errorf("replaced a directory qat did not write")
	}
	if b, err := os.ReadFile(filepath.Join(user, "notes.txt")); err != nil || string(b) != "mine" {
		t.Errorf("the user's file: %q, %v", b, err)
	}
	// a tokenizer larger than the embedding
	small := layers.New(layers.Config{Vocab: tok.VocabSize() - 1, Dim: 32, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 16})
	if _, err := HF(small, tok, filepath.Join(dir, "small"), HFOptions{DType: "f32"}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d tokens, more than the model's vocab_size %d", tok.VocabSize(), tok.VocabSize()-1)) {
		t.Errorf("a tokenizer larger than the model: %v", err)
	}
	// a weight past float16's range
	big, btok := testModel(t, true)
	big.Norm.Weight.Data()[3] = 1e5
	if _, err := HF(big, btok, filepath.Join(dir, "big"), HFOptions{DType: "f16"}); err == nil || !strings.Contains(err.Error(), "model.norm.weight") {
		t.Errorf("1e5 as f16: %v", err)
	}
	// adapters compute the product themselves: no single weight to write
	am, atok := testModel(t, false)
	am.Layers[0].MLP.Up.Adapter = fakeAdapter{}
	for _, f := range []func() error{
		func() error { _, err := HF(am, atok, filepath.Join(dir, "a"), HFOptions{DType: "f32"}); return err },
		func() error {
			_, err := CompressedTensors(am, atok, filepath.Join(dir, "b"), CTOptions{DType: "f32"})
			return err
		},
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "model.layers.0.mlp.up_proj") || !strings.Contains(err.Error(), "qat merge") {
			t.Errorf("a model with adapters: %v", err)
		}
	}
	for _, s := range []string{"", "0", "-5GB", "5XB", "GB", "1e30TB"} {
		if _, err := ParseShardSize(s); err == nil {
			t.Errorf("shard size %q accepted", s)
		}
	}
	for s, want := range map[string]int64{"5GB": 5e9, "500MB": 5e8, "2GiB": 2 << 30, "100kb": 1e5, "12345": 12345} {
		if n, err := ParseShardSize(s); err != nil || n != want {
			t.Errorf("shard size %q: %d, %v, want %d", s, n, err, want)
		}
	}
}

// TestHFTorchBF16: torch reads the bf16 and f16 exports and their values
// are torch's own rounding of the f32 export (x.to(torch.bfloat16),
// x.to(torch.float16)), tensor by tensor.
// Without torch it skips, unless QAT_REQUIRE_TORCH=1.
func TestHFTorchBF16(t *testing.T) {
	requireTorch(t)
	m, tok := testModel(t, false)
	if err := qat.Prepare(m, goldenRulesOf(t, "lsq-group")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := HF(m, tok, filepath.Join(dir, "f32"), HFOptions{DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	if _, err := HF(m, tok, filepath.Join(dir, "bf16"), HFOptions{DType: "bf16", MaxShardSize: 30000}); err != nil {
		t.Fatal(err)
	}
	if _, err := HF(m, tok, filepath.Join(dir, "f16"), HFOptions{DType: "f16"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(torchPython, "testdata/hf_bf16_check.py", filepath.Join(dir, "f32"), filepath.Join(dir, "bf16"), filepath.Join(dir, "f16")).CombinedOutput()
	if err != nil {
		t.Fatalf("hf_bf16_check.py: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// torchPython is Debian's interpreter, where apt's python3-torch lives
// (not the python3 on PATH).
const torchPython = "/usr/bin/python3"

// requireTorch skips without torch and numpy, unless QAT_REQUIRE_TORCH=1
// (make test sets it): then their absence fails the test.
func requireTorch(t *testing.T) {
	t.Helper()
	if err := exec.Command(torchPython, "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("QAT_REQUIRE_TORCH") == "1" {
			t.Fatalf("QAT_REQUIRE_TORCH=1 but %s cannot import torch: %v", torchPython, err)
		}
		t.Skip("python3-torch not installed")
	}
}

// fakeAdapter stands for LoRA-QAT's adapters (package lora is beside
// export, not below it).
type fakeAdapter struct{}

func (fakeAdapter) Product(ops autograd.Ops, x, w *autograd.Var) *autograd.Var { return nil }
func (fakeAdapter) State() map[string]*autograd.Var                            { return nil }
func (fakeAdapter) Replica() layers.Adapter                                    { return fakeAdapter{} }

// TestReadWeightsIndex: a sharded export reads back through its index;
// an index that names a path outside the directory, a shard that does not
// hold what it says, or a tensor in two shards is refused naming it.
func TestReadWeightsIndex(t *testing.T) {
	m, tok := testModel(t, false)
	if err := qat.Prepare(m, qat.Presets["w8a8"]); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "ct")
	if _, err := CompressedTensors(m, tok, base, CTOptions{DType: "bf16", MaxShardSize: 20000}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadPackedSafetensors(base); err != nil {
		t.Fatalf("the unedited export: %v", err)
	}
	ip := filepath.Join(base, "model.safetensors.index.json")
	orig, err := os.ReadFile(ip)
	if err != nil {
		t.Fatal(err)
	}
	var idx hfIndex
	if err := json.Unmarshal(orig, &idx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(wm map[string]string)
		want string
	}{
		{"a path outside", func(wm map[string]string) { wm["model.norm.weight"] = "../model-00001-of-00002.safetensors" }, `weight_map["model.norm.weight"] = "../model-00001-of-00002.safetensors"`},
		{"not safetensors", func(wm map[string]string) { wm["model.norm.weight"] = "config.json" }, `"config.json": want a .safetensors file`},
		{"the wrong shard", func(wm map[string]string) { wm["model.norm.weight"] = wm["model.embed_tokens.weight"] }, "tensor model.norm.weight is in model-"},
		{"a tensor no shard holds", func(wm map[string]string) { wm["model.extra.weight"] = wm["model.norm.weight"] }, "weight_map puts model.extra.weight in"},
		{"empty", func(wm map[string]string) { clear(wm) }, "weight_map is empty"},
	} {
		wm := map[string]string{}
		for k, v := range idx.WeightMap {
			wm[k] = v
		}
		c.edit(wm)
		b, _ := json.Marshal(hfIndex{Metadata: idx.Metadata, WeightMap: wm})
		if err := os.WriteFile(ip, b, 0o644); err != nil {
			t.Fatal(err)
		}
		refuseQuickly(t, c.name, func() error { _, _, err := LoadPackedSafetensors(base); return err }, c.want, "model.safetensors.index.json")
	}
}

// FuzzParseIndex: any index is refused or names at most maxShards
// distinct .safetensors files without a path, sorted.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"metadata":{"total_size":10},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"../x.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, files, err := parseIndex(b)
		if err != nil {
			return
		}
		if len(files) == 0 || len(files) > maxShards || !slices.IsSorted(files) || len(idx.WeightMap) == 0 {
			t.Fatalf("files %v", files)
		}
		for i, fn := range files {
			if fn != filepath.Base(fn) || !strings.HasSuffix(fn, ".safetensors") || (i > 0 && files[i-1] == fn) {
				t.Fatalf("file %q", fn)
			}
		}
	})
}
