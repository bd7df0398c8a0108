package checkpoint

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"qat/autograd"
	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/export"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
	"qat/qat/rotate"
)

// The export side of the Hugging Face round trip sits here, not in
// package export: importing the fixture takes LoadHFModel, a level above
// export (tools/layering.sh).

// roundTripTol bounds |python - ours| / max|ours| when both compute with
// the same weights: ours in float32, the fixture's in float64 (1.5e-6
// measured, as TestHFReferenceImport's import).
const roundTripTol = 1e-5

// roundTripCase is one export of one fixture: the model written, the
// options, and the logits transformers must compute from the directory.
type roundTripCase struct {
	name string
	m    *layers.Model
	opt  export.HFOptions
	want []float32
	// other are logits the export must not reproduce (the case would
	// pass vacuously if it did): the model before training, the
	// unrounded weights, the activation quantizers applied.
	other map[string][]float32
	res   *export.HFResult
	dir   string
	cfg   layers.Config  // m's (m is dropped once exported)
	tok   *bpe.Tokenizer // the one exported
	// actQuant is how many linears and KV caches HFResult.ActQuant
	// must name
	actQuant int
}

// TestHFExportReadBack: `qat export --format hf` (export.HF) of each
// tools/hf_fixture.py architecture (Llama 2; Llama 3.2 with llama3
// rope_scaling, head_dim != hidden/heads and tied embeddings; Mistral;
// Qwen2 with q/k/v biases; the real tokenizers), read back by the
// fixture's own PyTorch implementation of the transformers models
// (hf_fixture.py logits: config.json by its Hugging Face keys, strict
// state-dict loading), gives our model's logits:
//   - the imported model in f32, one model.safetensors, and in bf16 split
//     into shards at a small --max-shard-size (the fixture's weights are
//     bf16 values: this case checks the shards, the next the rounding);
//   - the model after QAT training steps with weight quantizers (LSQ
//     int4 channels on the MLPs, Q4_0 groups on attention, int8 lm_head
//     when untied): f32 gives the fake-quant model's logits; bf16 sharded
//     those of the fake-quant weights rounded to bfloat16 (rounded here,
//     in float64), which differ from the f32 ones, and f16 those rounded
//     to float16;
//   - a rotated model (qat/rotate) after QAT training steps: f32 gives
//     its logits, the online Hadamard transform of the down_proj input
//     folded back into down_proj and config.json without
//     qat_down_hadamard;
//   - a w4a8 model with an int8 KV cache: activation and KV quantizers
//     have no Hugging Face form, so the export computes the model with
//     its quantized weights and full-precision activations (what
//     HFResult.ActQuant lists and the CLI notes), not the quantized
//     activations.
//
// All within roundTripTol of the largest logit. config.json's bos/eos
// ids, the ones python reads (with the config class's defaults), agree
// with the exported tokenizer's (tokenizer_config.json's tokens looked up
// in tokenizer.json, by python) and with the fixture's own tokenizer's;
// generation_config.json and the tokenizer files exist. The loader's
// strictness is checked too: a tensor the model lacks, a missing one, a
// tie_word_embeddings that disagrees with the files, a tensor in a shard
// the index does not name each fail it, naming what is wrong.
// Without torch it skips, unless QAT_REQUIRE_TORCH=1 (make test sets it).
func TestHFExportReadBack(t *testing.T) {
	root := t.TempDir()
	fixtures := filepath.Join(root, "fixtures")
	writeHFFixtures(t, fixtures)

	var pyArgs []string // hf_fixture.py logits DIR IDS OUT triples
	outOf := func(dir string) string { return dir + ".logits.safetensors" }
	cases := map[string][]*roundTripCase{}
	for _, a := range hfArchs {
		fx := filepath.Join(fixtures, a.arch)
		ref := filepath.Join(fx, "reference.safetensors")
		// the fixture itself, read by the same loader: its tokenizer's
		// bos/eos are what the exports' must be
		pyArgs = append(pyArgs, fx, ref, outOf(fx))
		src, err := Load(fx)
		must(t, err)
		ids, B, T := refIDs(t, ref)
		// each case is written as soon as its model is ready, and the
		// model dropped: the largest fixtures' models are 50 MB each
		cases[a.arch] = roundTripCases(t, src.Model, ids, B, T, func(c *roundTripCase) {
			c.dir = filepath.Join(root, a.arch+"-"+c.name)
			res, err := export.HF(c.m, src.Tok, c.dir, c.opt)
			must(t, err)
			c.res, c.cfg, c.tok, c.m = res, c.m.Config, src.Tok, nil
			pyArgs = append(pyArgs, c.dir, ref, outOf(c.dir))
		})
		// the garbage of this fixture's cases (the models, the shards
		// encoded) returned before the next: the test peaks near 1 GB,
		// most of it Llama 3's and Qwen's 128k and 152k vocabularies
		debug.FreeOSMemory()
	}
	out, err := exec.Command(hfPython, append([]string{"../tools/hf_fixture.py", "logits"}, pyArgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("hf_fixture.py logits: %v\n%s", err, out)
	}

	for _, a := range hfArchs {
		t.Run(a.arch, func(t *testing.T) {
			fx := filepath.Join(fixtures, a.arch)
			fixtureIDs := pyIDs(t, outOf(fx))
			// the loader on the fixture gives the fixture's own reference
			// logits: the two paths through hf_fixture.py agree
			refLogits := readF32(t, filepath.Join(fx, "reference.safetensors"), "logits")
			if d := relDiff(readF32(t, outOf(fx), "logits"), refLogits); d != 0 {
				t.Errorf("hf_fixture.py logits on the fixture: %.3g from its reference.safetensors", d)
			}
			for _, c := range cases[a.arch] {
				t.Run(c.name, func(t *testing.T) {
					checkFiles(t, c)
					got := readF32(t, outOf(c.dir), "logits")
					d := relDiff(got, c.want)
					t.Logf("%d weight file(s), %s: python's logits within %.2g of ours (relative to the largest)", len(c.res.Files), c.opt.DType, d)
					if !(d <= roundTripTol) {
						t.Errorf("python's logits differ from ours by %.3g of the largest, over %g", d, roundTripTol)
					}
					for what, o := range c.other {
						if od := relDiff(o, c.want); !(od > 10*roundTripTol) {
							t.Errorf("%s: logits within %.3g of the expected ones: the case does not tell them apart", what, od)
						} else {
							t.Logf("%s: %.2g away", what, od)
						}
					}
					checkSpecialIDs(t, pyIDs(t, outOf(c.dir)), fixtureIDs)
				})
			}
		})
	}

	t.Run("strict", func(t *testing.T) { checkStrictLoader(t, hfPython, root, cases["llama2"], outOf) })
}

// roundTripCases are the exports of src (imported from a fixture) that
// TestHFExportReadBack reads back, each with the logits it must give on
// ids, handed to write (which exports it) once made.
func roundTripCases(t *testing.T, src *layers.Model, ids []int32, B, T int, write func(*roundTripCase)) []*roundTripCase {
	var cs []*roundTripCase
	add := func(c *roundTripCase) { write(c); cs = append(cs, c) }
	imported := forwardLogits(src, ids, B, T)
	// shards of about a third of the bf16 weights: the small fixtures'
	// tensors fill several (a larger embedding takes one of its own)
	var bf16Bytes int64
	for _, p := range src.Params() {
		bf16Bytes += 2 * int64(p.Var.Size())
	}
	sharded := export.HFOptions{DType: "bf16", MaxShardSize: bf16Bytes / 3}
	add(&roundTripCase{name: "f32", m: src, opt: export.HFOptions{DType: "f32"}, want: imported})
	add(&roundTripCase{name: "bf16-sharded", m: src, opt: sharded, want: forwardLogits(roundBF16(clone(src)), ids, B, T)})

	// QAT training: weight quantizers, then SGD steps through them (the
	// latent weights and LSQ steps move)
	trained := clone(src)
	rules := []qat.Rule{
		{Match: "model.layers.*.mlp.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "lsq"}},
		{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Q4_0, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"}},
	}
	if !src.Tied {
		rules = append(rules, qat.Rule{Match: "lm_head", Weights: &qat.Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "channel", Scale: "minmax"}})
	}
	must(t, qat.Prepare(trained, rules))
	untrained := forwardLogits(trained, ids, B, T)
	for step := 0; step < 3; step++ {
		sgdStep(trained, ids, B, T, 0.05)
	}
	qatLogits := forwardLogits(trained, ids, B, T)
	add(&roundTripCase{name: "qat-f32", m: trained, opt: export.HFOptions{DType: "f32"}, want: qatLogits,
		other: map[string][]float32{"the imported model": imported, "the quantized model before training": untrained}})
	add(&roundTripCase{name: "qat-bf16-sharded", m: trained, opt: sharded, want: forwardLogits(roundBF16(fakeQuantModel(t, trained)), ids, B, T),
		other: map[string][]float32{"the unrounded fake-quant weights": qatLogits}})
	add(&roundTripCase{name: "qat-f16", m: trained, opt: export.HFOptions{DType: "f16"}, want: forwardLogits(roundF16(fakeQuantModel(t, trained)), ids, B, T),
		other: map[string][]float32{"the unrounded fake-quant weights": qatLogits}})

	// rotated (qat ptq --rotate, quant.rotate), then QAT with weight
	// quantizers: the export folds the online transform of the down_proj
	// input back into down_proj's fake-quant weight; an export that kept
	// the rotated weight unfolded (transformers applies no transform)
	// would give other logits
	rotated := clone(src)
	_, err := rotate.Hadamard(rotated, 5, nil)
	must(t, err)
	must(t, qat.Prepare(rotated, rules))
	for step := 0; step < 2; step++ {
		sgdStep(rotated, ids, B, T, 0.05)
	}
	unfolded := fakeQuantModel(t, rotated)
	for _, l := range unfolded.Layers {
		l.MLP.Online = nil
	}
	add(&roundTripCase{name: "rotated-qat-f32", m: rotated, opt: export.HFOptions{DType: "f32"}, want: forwardLogits(rotated, ids, B, T),
		other: map[string][]float32{"the rotated weights without the online transform": forwardLogits(unfolded, ids, B, T)}})

	// w4a8 with an int8 KV cache: the export keeps the weights' fake
	// quantization and drops the activations'
	acts := clone(src)
	w4a8 := qat.Presets["w4a8"][0]
	w4a8.KVCache = &qat.Spec{Format: kernels.Int, Bits: 8, Symmetric: true, Granularity: "token", Scale: "minmax"}
	must(t, qat.Prepare(acts, []qat.Rule{w4a8}))
	// the seven linears of each block and its KV cache listed
	add(&roundTripCase{name: "w4a8-kv8-f32", m: acts, opt: export.HFOptions{DType: "f32"}, want: forwardLogits(fakeQuantModel(t, acts), ids, B, T),
		actQuant: 8 * len(acts.Layers),
		other:    map[string][]float32{"the model with its activation and KV quantizers": forwardLogits(acts, ids, B, T), "the unquantized weights": imported}})
	return cs
}

// checkFiles: the export's files: one model.safetensors unsharded, else
// HF-named shards with the index; config.json with the dtype and the
// bos/eos ids of our tokenizer (absent for a role it lacks);
// generation_config.json and the tokenizer's files; the activation
// quantizers listed for the w4a8 case alone.
func checkFiles(t *testing.T, c *roundTripCase) {
	t.Helper()
	if c.opt.MaxShardSize == 0 {
		if !slices.Equal(c.res.Files, []string{"model.safetensors"}) {
			t.Errorf("weight files %v, want model.safetensors", c.res.Files)
		}
	} else {
		if len(c.res.Files) < 2 {
			t.Errorf("weight files %v at --max-shard-size %d: not sharded", c.res.Files, c.opt.MaxShardSize)
		}
		if _, err := os.Stat(filepath.Join(c.dir, "model.safetensors.index.json")); err != nil {
			t.Errorf("sharded without an index: %v", err)
		}
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json"} {
		if _, err := os.Stat(filepath.Join(c.dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(c.dir, "config.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &cfg))
	if want := map[string]string{"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[c.opt.DType]; cfg["torch_dtype"] != want {
		t.Errorf("torch_dtype %v, want %s", cfg["torch_dtype"], want)
	}
	for _, r := range []struct {
		key string
		id  func() (int32, error)
	}{{"bos_token_id", c.tok.BOS}, {"eos_token_id", c.tok.EOS}} {
		id, err := r.id()
		v, has := cfg[r.key]
		switch {
		case err != nil && has:
			t.Errorf("config.json %s %v: the tokenizer has none", r.key, v)
		case err == nil && v != float64(id):
			t.Errorf("config.json %s %v, the tokenizer's is %d", r.key, v, id)
		}
	}
	if v, ok := cfg["qat_down_hadamard"]; ok {
		t.Errorf("config.json keeps qat_down_hadamard %v: transformers would not apply it", v)
	}
	if len(c.res.ActQuant) != c.actQuant {
		t.Errorf("ActQuant lists %d, want %d: %v", len(c.res.ActQuant), c.actQuant, c.res.ActQuant)
	}
}

// checkStrictLoader: hf_fixture.py logits refuses what transformers'
// strict loading refuses, naming it; edited copies of llama2's exports.
func checkStrictLoader(t *testing.T, python, root string, cs []*roundTripCase, outOf func(string) string) {
	var f32, sharded *roundTripCase
	for _, c := range cs {
		switch c.name {
		case "f32":
			f32 = c
		case "bf16-sharded":
			sharded = c
		}
	}
	ref := filepath.Join(root, "fixtures", "llama2", "reference.safetensors")
	edits := []struct {
		name string
		from *roundTripCase
		edit func(dir string)
		want string
	}{
		{"an extra tensor", f32, func(dir string) {
			editShard(t, filepath.Join(dir, "model.safetensors"), func(ts []safetensors.Tensor) []safetensors.Tensor {
				return append(ts, safetensors.FromF32("model.layers.0.mlp.gate_proj.bias", []int{f32.cfg.FFNHidden}, make([]float32, f32.cfg.FFNHidden)))
			})
		}, "unexpected tensors ['model.layers.0.mlp.gate_proj.bias'], missing []"},
		{"a missing tensor", f32, func(dir string) {
			editShard(t, filepath.Join(dir, "model.safetensors"), func(ts []safetensors.Tensor) []safetensors.Tensor {
				return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == "model.layers.1.post_attention_layernorm.weight" })
			})
		}, "unexpected tensors [], missing ['model.layers.1.post_attention_layernorm.weight']"},
		{"tied in config.json", f32, func(dir string) {
			editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) { m["tie_word_embeddings"] = true })
		}, "unexpected tensors ['lm_head.weight'], missing []"},
		{"tie_word_embeddings left out", f32, func(dir string) {
			// a tied model that does not say so reads as untied (the
			// config classes' default): lm_head.weight is missing
			editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) { delete(m, "tie_word_embeddings") })
			editShard(t, filepath.Join(dir, "model.safetensors"), func(ts []safetensors.Tensor) []safetensors.Tensor {
				return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == "lm_head.weight" })
			})
		}, "unexpected tensors [], missing ['lm_head.weight']"},
		{"a shard the index does not name", sharded, func(dir string) {
			editJSON(t, filepath.Join(dir, "model.safetensors.index.json"), func(m map[string]any) {
				wm := m["weight_map"].(map[string]any)
				wm["model.norm.weight"] = wm["model.embed_tokens.weight"]
			})
		}, "holds model.norm.weight, which the index puts in"},
	}
	var args []string
	for i, e := range edits {
		dir := filepath.Join(root, fmt.Sprintf("strict-%d", i))
		copyDir(t, e.from.dir, dir)
		e.edit(dir)
		args = append(args, dir, ref, outOf(dir))
	}
	out, err := exec.Command(hfPython, append([]string{"../tools/hf_fixture.py", "logits"}, args...)...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("hf_fixture.py logits on the edited directories: %v, want exit status 2\n%s", err, out)
	}
	for i, e := range edits {
		dir := filepath.Join(root, fmt.Sprintf("strict-%d", i))
		if !strings.Contains(string(out), dir+": ") || !strings.Contains(string(out), e.want) {
			t.Errorf("%s: the loader's output does not name it (%q):\n%s", e.name, e.want, out)
		}
		if _, err := os.Stat(outOf(dir)); err == nil {
			t.Errorf("%s: logits written", e.name)
		}
	}
}

func refIDs(t *testing.T, path string) ([]int32, int, int) {
	t.Helper()
	f, err := safetensors.Read(path)
	must(t, err)
	x, ok := f.Get("ids")
	if !ok {
		t.Fatalf("%s lacks ids", path)
	}
	ids, err := x.I32()
	must(t, err)
	return ids, x.Shape[0], x.Shape[1]
}

func readF32(t *testing.T, path, name string) []float32 {
	t.Helper()
	f, err := safetensors.Read(path)
	must(t, err)
	x, ok := f.Get(name)
	if !ok {
		t.Fatalf("%s lacks %s", path, name)
	}
	v, err := x.F32()
	must(t, err)
	return v
}

// pyIDs are the special ids hf_fixture.py logits reported (-1: none;
// generation_eos_token_ids a list).
func pyIDs(t *testing.T, path string) map[string][]int32 {
	t.Helper()
	f, err := safetensors.Read(path)
	must(t, err)
	out := map[string][]int32{}
	for _, k := range []string{"bos_token_id", "eos_token_id", "tokenizer_bos_id", "tokenizer_eos_id", "generation_bos_token_id", "generation_eos_token_ids"} {
		x, ok := f.Get(k)
		if !ok {
			t.Fatalf("%s lacks %s", path, k)
		}
		v, err := x.I32()
		must(t, err)
		out[k] = v
	}
	return out
}

// checkSpecialIDs: what transformers reads from an export (got) against
// what it reads from the fixture (fx), all by hf_fixture.py. The
// exported tokenizer's bos and eos are the fixture tokenizer's;
// config.json's (with the config class's defaults for a missing key) are
// the tokenizer's, and where the tokenizer has no bos (Qwen's
// tokenizer_config.json has bos_token null) generation_config.json's, as
// in Qwen's own files; generation_config.json has config.json's bos, and
// config.json's eos among its stop ids.
func checkSpecialIDs(t *testing.T, got, fx map[string][]int32) {
	t.Helper()
	for _, role := range []string{"bos", "eos"} {
		if tok, want := got["tokenizer_"+role+"_id"][0], fx["tokenizer_"+role+"_id"][0]; tok != want {
			t.Errorf("the exported tokenizer's %s is %d, the fixture tokenizer's %d", role, tok, want)
		}
	}
	cfgBOS, cfgEOS := got["bos_token_id"][0], got["eos_token_id"][0]
	genBOS, genEOS := got["generation_bos_token_id"][0], got["generation_eos_token_ids"]
	if tok := got["tokenizer_bos_id"][0]; tok >= 0 && cfgBOS != tok {
		t.Errorf("config.json's bos_token_id %d, the tokenizer's bos %d", cfgBOS, tok)
	} else if tok < 0 && cfgBOS != fx["generation_bos_token_id"][0] {
		t.Errorf("config.json's bos_token_id %d, the tokenizer has none and the fixture's generation_config.json says %d", cfgBOS, fx["generation_bos_token_id"][0])
	}
	if tok := got["tokenizer_eos_id"][0]; cfgEOS != tok {
		t.Errorf("config.json's eos_token_id %d, the tokenizer's eos %d", cfgEOS, tok)
	}
	if genBOS != cfgBOS || !slices.Contains(genEOS, cfgEOS) {
		t.Errorf("generation_config.json bos %d eos %v, config.json bos %d eos %d", genBOS, genEOS, cfgBOS, cfgEOS)
	}
	t.Logf("bos %d, eos %d (generation: %v)", cfgBOS, cfgEOS, genEOS)
}

// relDiff is max |a - b| over max |b|.
func relDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var worst, scale float64
	for i := range a {
		worst = math.Max(worst, math.Abs(float64(a[i])-float64(b[i])))
		scale = math.Max(scale, math.Abs(float64(b[i])))
	}
	return worst / scale
}

func forwardLogits(m *layers.Model, ids []int32, B, T int) []float32 {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	return append([]float32(nil), m.Forward(tp, ids, B, T).Data()...)
}

// sgdStep is one plain SGD step of the next-token loss on ids (Hugging
// Face's shifted labels) over every trainable parameter, quantizer steps
// included.
func sgdStep(m *layers.Model, ids []int32, B, T int, lr float32) {
	tg := make([]int32, B*T)
	for i := range tg {
		tg[i] = layers.IgnoreIndex
		if (i+1)%T != 0 {
			tg[i] = ids[i+1]
		}
	}
	var vs []*autograd.Var
	for _, p := range m.Params() {
		vs = append(vs, p.Var)
	}
	autograd.ZeroGrad(vs...)
	tp := autograd.NewTape()
	tp.Backward(tp.CrossEntropy(m.Forward(tp, ids, B, T), tg, layers.IgnoreIndex))
	for _, v := range vs {
		if g := v.GradData(); v.RequiresGrad() && g != nil {
			for i := range g {
				v.Data()[i] -= lr * g[i]
			}
		}
	}
}

// clone is a full-precision copy of m's parameters.
func clone(m *layers.Model) *layers.Model {
	c := layers.New(m.Config)
	src := m.ParamMap()
	for _, p := range c.Params() {
		copy(p.Var.Data(), src[p.Name].Data())
	}
	return c
}

// fakeQuantModel is a full-precision model whose weights are m's as its
// forward uses them: each quantized linear's weight through its
// quantizer, computed through Linear.Forward on the identity (x = I gives
// x W^T = W^T; bias and input quantizer left off), not through the
// export's code.
func fakeQuantModel(t *testing.T, m *layers.Model) *layers.Model {
	t.Helper()
	c := clone(m)
	dst := c.ParamMap()
	for _, ln := range m.Linears() {
		if ln.Linear.WeightQuant == nil {
			continue
		}
		w := ln.Linear.Weight
		rows, cols := w.Shape()[0], w.Shape()[1]
		eye := make([]float32, cols*cols)
		for i := 0; i < cols; i++ {
			eye[i*cols+i] = 1
		}
		l := layers.Linear{Weight: w, WeightQuant: ln.Linear.WeightQuant}
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		y := l.Forward(tp, autograd.NewConst(eye, cols, cols)).Data() // (cols, rows) = W^T
		v := dst[ln.Name+".weight"].Data()
		for r := 0; r < rows; r++ {
			for k := 0; k < cols; k++ {
				v[r*cols+k] = y[k*rows+r]
			}
		}
	}
	return c
}

// roundBF16 rounds m's parameters to bfloat16 in place (bf16, in
// float64) and returns m.
func roundBF16(m *layers.Model) *layers.Model {
	for _, p := range m.Params() {
		v := p.Var.Data()
		for i, x := range v {
			v[i] = bf16(x)
		}
	}
	return m
}

// roundF16 rounds m's parameters to float16 in place, in float64: to
// the nearest multiple of the spacing of float16 values at x's binade
// (2^(e-10) for 2^e <= |x|, 2^-24 among the subnormals), ties to even
// (the fixtures' weights are far inside float16's range).
func roundF16(m *layers.Model) *layers.Model {
	for _, p := range m.Params() {
		v := p.Var.Data()
		for i, x := range v {
			_, e := math.Frexp(float64(x)) // |x| in [2^(e-1), 2^e)
			ulp := math.Ldexp(1, max(e-1, -14)-10)
			v[i] = float32(math.RoundToEven(float64(x)/ulp) * ulp)
		}
	}
	return m
}

// editShard rewrites a safetensors file with its tensors edited.
func editShard(t *testing.T, path string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	f, err := safetensors.Read(path)
	must(t, err)
	ts := edit(append([]safetensors.Tensor(nil), f.Tensors...))
	must(t, os.Remove(path))
	must(t, safetensors.Write(path, ts, f.Metadata))
}

func editJSON(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	var m map[string]any
	must(t, json.Unmarshal(b, &m))
	edit(m)
	b, err = json.Marshal(m)
	must(t, err)
	must(t, os.WriteFile(path, b, 0o644))
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	must(t, os.MkdirAll(to, 0o755))
	es, err := os.ReadDir(from)
	must(t, err)
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(to, e.Name()), b, 0o644))
	}
}
