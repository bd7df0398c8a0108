package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/data/bpe"
	"qat/data/safetensors"
	"qat/layers"
)

// writeHF writes m as a Hugging Face model directory: config.json,
// tokenizer.json and its weights as BF16, in one model.safetensors
// (shards 1) or split round-robin over shards files under
// model.safetensors.index.json, plus a rotary_emb.inv_freq buffer as old
// transformers saved it and, for a tied model, lm_head.weight (unused, to
// be ignored).
func writeHF(t *testing.T, dir string, m *layers.Model, tok *bpe.Tokenizer, shards int) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	hf, _ := m.Config.HFConfigWith(map[string]any{"torch_dtype": "bfloat16"})
	must(t, os.WriteFile(filepath.Join(dir, "config.json"), hf, 0o644))
	if tok != nil { // nil: the caller puts the tokenizer files
		must(t, tok.Save(filepath.Join(dir, "tokenizer.json")))
	}
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.FromBF16(p.Name, p.Var.Shape(), p.Var.Data()))
	}
	ts = append(ts, safetensors.FromF32("model.layers.0.self_attn.rotary_emb.inv_freq", []int{2}, []float32{1, 0.01}))
	if m.Tied {
		// some tied checkpoints carry the head anyway: unused, ignored
		ts = append(ts, safetensors.FromBF16("lm_head.weight", m.Embed.Weight.Shape(), m.Embed.Weight.Data()))
	}
	if shards == 1 {
		must(t, safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}))
		return
	}
	per := make([][]safetensors.Tensor, shards)
	wm := map[string]string{}
	for i, x := range ts {
		per[i%shards] = append(per[i%shards], x)
	}
	for i, xs := range per {
		name := shardName(i, shards)
		for _, x := range xs {
			wm[x.Name] = name
		}
		must(t, safetensors.Write(filepath.Join(dir, name), xs, map[string]string{"format": "pt"}))
	}
	delete(wm, "model.layers.0.self_attn.rotary_emb.inv_freq")
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": wm})
	must(t, os.WriteFile(filepath.Join(dir, safetensors.IndexName), b, 0o644))
}

func shardName(i, n int) string { return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// bf16Model is m with every weight rounded to bfloat16, as writeHF
// stores it.
func bf16Model(m *layers.Model) *layers.Model {
	r := layers.New(m.Config)
	src := m.ParamMap()
	for _, p := range r.Params() {
		for i, x := range src[p.Name].Data() {
			p.Var.Data()[i] = bf16(x)
		}
	}
	return r
}

// bf16 rounds x to bfloat16 in float64: the nearer of the two bfloat16
// values around x (truncation and the next pattern up), ties to even.
func bf16(x float32) float32 {
	u := math.Float32bits(x) &^ 0xffff
	lo := math.Float32frombits(u)
	hi := math.Float32frombits(u + 0x10000)
	dl, dh := float64(x)-float64(lo), float64(hi)-float64(x)
	if dl < 0 {
		dl = -dl
	}
	if dh < 0 {
		dh = -dh
	}
	if dl < dh || (dl == dh && (u>>16)%2 == 0) {
		return lo
	}
	return hi
}

// TestLoadHF: a Hugging Face directory of BF16 weights loads (Kind HF)
// with the weights rounded to bfloat16, and the sharded directory gives
// the same logits, bit for bit; an untied model needs lm_head.weight, a
// tied one does not.
func TestLoadHF(t *testing.T) {
	root := t.TempDir()
	m, tok := tiny(t)
	for _, tied := range []bool{true, false} {
		c := m.Config
		c.Tied = tied
		mm := layers.New(c)
		mm.Init(5)
		want := logits(bf16Model(mm))
		for _, shards := range []int{1, 3} {
			dir := filepath.Join(root, map[bool]string{true: "tied", false: "untied"}[tied]+fmt.Sprint(shards))
			writeHF(t, dir, mm, tok, shards)
			if !IsHF(dir) {
				t.Fatalf("%s: IsHF false", dir)
			}
			got, err := Load(dir)
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			if got.Kind != HF || got.Path != dir || got.Config != c {
				t.Errorf("%s: kind %v, path %s, config %+v", dir, got.Kind, got.Path, got.Config)
			}
			same(t, dir, logits(got.Model), want)
			hc, err := HFConfig(dir)
			if err != nil || hc != c {
				t.Errorf("HFConfig(%s) = %+v, %v", dir, hc, err)
			}
		}
	}
}

// editTensor rewrites the shard holding the tensor called name with edit
// applied to it.
func editTensor(t *testing.T, dir, name string, edit func(x *safetensors.Tensor)) {
	b, err := os.ReadFile(filepath.Join(dir, safetensors.IndexName))
	must(t, err)
	x, err := safetensors.ParseIndex(b)
	must(t, err)
	p := filepath.Join(dir, x.WeightMap[name])
	f, err := safetensors.Read(p)
	must(t, err)
	for i := range f.Tensors {
		if f.Tensors[i].Name == name {
			edit(&f.Tensors[i])
		}
	}
	must(t, safetensors.Write(p, f.Tensors, nil))
}

// victim is the tensor TestLoadHFRefusals breaks, in the shard writeHF
// puts it in.
var victim, victimShard = "model.layers.1.mlp.up_proj.weight", shardName(1, 2)

// TestLoadHFRefusals: a Hugging Face directory short of a file, or whose
// weights do not fit its config, is refused naming the file and tensor,
// as BadInput.
func TestLoadHFRefusals(t *testing.T) {
	m, tok := tiny(t)
	for _, c := range []struct {
		name string
		edit func(dir string)
		want []string
	}{
		{"no tokenizer.json", func(dir string) { os.Remove(filepath.Join(dir, "tokenizer.json")) }, []string{"tokenizer.json"}},
		{"no weights", func(dir string) {
			os.Remove(filepath.Join(dir, safetensors.IndexName))
		}, []string{"model.safetensors", safetensors.IndexName, "missing"}},
		{"a missing shard", func(dir string) { os.Remove(filepath.Join(dir, shardName(1, 2))) }, []string{shardName(1, 2), "missing"}},
		{"a tensor of the wrong shape", func(dir string) {
			editTensor(t, dir, victim, func(x *safetensors.Tensor) { x.Shape = []int{x.Shape[1], x.Shape[0]} })
		}, []string{victimShard, victim, "shape"}},
		{"a tensor of another dtype", func(dir string) {
			editTensor(t, dir, victim, func(x *safetensors.Tensor) { x.DType = "I16" })
		}, []string{victimShard, victim, "dtype I16"}},
		{"a tensor missing", func(dir string) {
			p := filepath.Join(dir, safetensors.IndexName)
			b, _ := os.ReadFile(p)
			var x map[string]any
			json.Unmarshal(b, &x)
			delete(x["weight_map"].(map[string]any), "model.norm.weight")
			b, _ = json.Marshal(x)
			os.WriteFile(p, b, 0o644)
		}, []string{safetensors.IndexName, "model.norm.weight", "missing"}},
		{"an unsupported config", func(dir string) {
			p := filepath.Join(dir, "config.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"silu"`, `"gelu"`, 1)), 0o644)
		}, []string{"config.json", "hidden_act", "gelu"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "hf")
			writeHF(t, dir, m, tok, 2)
			c.edit(dir)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("loaded")
			}
			var bad interface{ BadInput() }
			if !errors.As(err, &bad) {
				t.Errorf("%v: not BadInput", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	if _, err := HFConfig(t.TempDir()); err == nil || !strings.Contains(err.Error(), "config.json is missing") {
		t.Errorf("HFConfig of an empty directory: %v", err)
	}
}

// realTokenizer is Llama 2's tokenizer directory as tools/tokref extracts
// it (make npm-deps); without it the test skips, unless
// QAT_REQUIRE_NODE=1, which makes its absence fail.
func realTokenizer(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", ".cache", "tokref", "llama2")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		if os.Getenv("QAT_REQUIRE_NODE") == "1" {
			t.Fatalf("QAT_REQUIRE_NODE=1 but %s is missing (make npm-deps): %v", dir, err)
		}
		t.Skipf("%s missing (make npm-deps)", dir)
	}
	return dir
}

// TestLoadHFRealTokenizer: a Hugging Face directory with Llama 2's real
// tokenizer files loads with that tokenizer (bpe.LoadDir: the same ids
// as reading the files directly); an embedding with more rows than the
// tokenizer has tokens (Qwen2 pads its vocabulary) loads, one with fewer
// is refused naming both counts.
func TestLoadHFRealTokenizer(t *testing.T) {
	src := realTokenizer(t)
	ref, err := bpe.LoadDir(src)
	must(t, err)
	want := ref.Encode(nil, "The state of the union is strong.")
	for _, c := range []struct {
		vocab int
		err   string
	}{{ref.VocabSize(), ""}, {ref.VocabSize() + 64, ""}, {ref.VocabSize() - 1, "more than config.json's vocab_size"}} {
		dir := filepath.Join(t.TempDir(), "hf")
		m := layers.New(layers.Config{Vocab: c.vocab, Dim: 8, Layers: 1, Heads: 2, KVHeads: 1, FFNHidden: 16, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 16})
		m.Init(1)
		writeHF(t, dir, m, nil, 2)
		for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} { // the files as published
			b, err := os.ReadFile(filepath.Join(src, f))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, f), b, 0o644))
		}
		got, err := Load(dir)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), fmt.Sprint(c.vocab)) {
				t.Errorf("vocab %d: %v, want an error saying %q", c.vocab, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("vocab %d: %v", c.vocab, err)
		}
		if ids := got.Tok.Encode(nil, "The state of the union is strong."); fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Errorf("vocab %d: the loaded tokenizer encodes %v, the files %v", c.vocab, ids, want)
		}
	}
}
