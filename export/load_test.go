package export

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"qat/data/bpe"
	"qat/data/gguf"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// fuzzModel is a small model (one layer, dim 32, every matrix whole
// Q4_0 blocks) and its tokenizer, for
// seeds of the loaders' tests and fuzz targets.
func fuzzModel(tb testing.TB, tied bool) (*layers.Model, *bpe.Tokenizer) {
	tok, err := bpe.Train([]string{text}, 288)
	if err != nil {
		tb.Fatal(err)
	}
	m := layers.New(layers.Config{Vocab: tok.VocabSize(), Dim: 32, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000,
		NormEps: 1e-5, Tied: tied, MaxSeq: 16})
	m.Init(3)
	return m, tok
}

// ggufBytes encodes m as a GGUF of quant after edit changes its file.
func ggufBytes(tb testing.TB, m *layers.Model, tok *bpe.Tokenizer, quant string, edit func(f *gguf.File)) []byte {
	f, err := GGUF(m, tok, quant, "test")
	if err != nil {
		tb.Fatal(err)
	}
	if edit != nil {
		edit(f)
	}
	b, err := gguf.Encode(f)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func setU32(f *gguf.File, key string, v uint32) {
	for i := range f.KVs {
		if f.KVs[i].Key == key {
			f.KVs[i].Value = v
		}
	}
}

func tensorOf(f *gguf.File, name string) *gguf.Tensor {
	t, ok := f.Tensor(name)
	if !ok {
		panic("no tensor " + name)
	}
	return t
}

// refuseQuickly runs load, which must fail with an error containing every
// string of want, within 100 ms and 16 MB of allocation.
func refuseQuickly(t *testing.T, what string, load func() error, want ...string) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	err := load()
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Errorf("%s: loaded", what)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not name %q", what, err, w)
		}
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	if d > 100*time.Millisecond || alloc > 16<<20 {
		t.Errorf("%s: refused after %v and %d bytes allocated", what, d, alloc)
	}
	t.Logf("%s: %v (%v, %d kB allocated)", what, err, d.Round(time.Microsecond), alloc>>10)
}

// TestLoadGGUFBounds: hyperparameters over the limits, or tensors that do
// not match them, are refused naming the key or tensor before the model
// is allocated: a GGUF of a few kilobytes claiming a 2^40 vocabulary or
// dimensions of 16384 costs neither time nor memory.
func TestLoadGGUFBounds(t *testing.T) {
	m, tok := fuzzModel(t, true)
	path := filepath.Join(t.TempDir(), "m.gguf")
	load := func(b []byte) func() error {
		return func() error {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := LoadGGUF(path)
			return err
		}
	}
	if err := load(ggufBytes(t, m, tok, "q8_0", nil))(); err != nil {
		t.Fatalf("the unedited file: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(f *gguf.File)
		want []string
	}{
		{"embedding_length 2^32-1", func(f *gguf.File) { setU32(f, "llama.embedding_length", 1<<32-1) },
			[]string{"llama.embedding_length (model.dim): 4294967295 exceeds the limit 65536"}},
		// every size within its limit, the model 2^35 parameters: refused
		// by the file's tensors, not by allocating
		{"embedding_length 16384", func(f *gguf.File) {
			setU32(f, "llama.embedding_length", 16384)
			setU32(f, "llama.attention.head_count", 128)
			setU32(f, "llama.attention.head_count_kv", 8)
		},
			[]string{"token_embd.weight has dims [32 288], want [16384 288]"}},
		{"block_count 1024", func(f *gguf.File) { setU32(f, "llama.block_count", 1024) },
			[]string{"11 tensors, a llama of this shape has 9218"}},
		{"context_length 2^20 at head dim 512", func(f *gguf.File) {
			setU32(f, "llama.context_length", 1<<20)
			setU32(f, "llama.embedding_length", 1024)
		}, []string{"llama.context_length (model.max_seq)", "RoPE"}},
		{"vocab 2^40", func(f *gguf.File) {
			emb := tensorOf(f, "token_embd.weight")
			emb.Dims, emb.Type, emb.Data = []uint64{0, 1 << 40}, 0, nil
		}, []string{"token_embd.weight", "1099511627776", "more values than"}},
		{"ffn_up transposed", func(f *gguf.File) {
			up := tensorOf(f, "blk.0.ffn_up.weight")
			up.Dims = []uint64{up.Dims[1], up.Dims[0]}
		}, []string{"blk.0.ffn_up.weight"}},
		{"attn_k as a vector", func(f *gguf.File) {
			k := tensorOf(f, "blk.0.attn_k.weight")
			k.Dims = []uint64{k.Dims[0] * k.Dims[1]}
		}, []string{"blk.0.attn_k.weight has dims [1024], want [32 32]"}},
	} {
		refuseQuickly(t, c.name, load(ggufBytes(t, m, tok, "q8_0", c.edit)), c.want...)
	}
}

// packedDir writes m, prepared with rules, as packed safetensors and
// returns the directory.
func packedDir(tb testing.TB, m *layers.Model, tok *bpe.Tokenizer, rules []qat.Rule, dir string) string {
	if err := qat.Prepare(m, rules); err != nil {
		tb.Fatal(err)
	}
	if err := PackedSafetensors(m, tok, dir, false); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// editConfig rewrites dir's config.json through edit.
func editConfig(t *testing.T, dir string, edit func(cfg map[string]any)) {
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadPackedBounds: a packed target naming a 1-D tensor (a norm) or
// nothing, a config.json over the limits, or one whose tensors the file
// does not hold, is an error naming the target, key or tensor, before the
// model is allocated.
func TestLoadPackedBounds(t *testing.T) {
	m, tok := fuzzModel(t, false)
	base := packedDir(t, m, tok, qat.Presets["w4a8"], filepath.Join(t.TempDir(), "packed"))
	fresh := func(name string) string {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
			b, err := os.ReadFile(filepath.Join(base, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	if _, _, err := LoadPackedSafetensors(fresh("ok")); err != nil {
		t.Fatalf("the unedited export: %v", err)
	}
	addTarget := func(target string) func(cfg map[string]any) {
		return func(cfg map[string]any) {
			g := cfg["quantization_config"].(map[string]any)["config_groups"].(map[string]any)["group_0"].(map[string]any)
			g["targets"] = append(g["targets"].([]any), target)
		}
	}
	for _, c := range []struct {
		name string
		edit func(cfg map[string]any)
		want []string
	}{
		{"target model.norm", addTarget("model.norm"), []string{"model.norm.weight is not a matrix (shape [32])"}},
		{"target input_layernorm", addTarget("model.layers.0.input_layernorm"), []string{"model.layers.0.input_layernorm.weight is not a matrix"}},
		{"target model.embed_tokens", addTarget("model.embed_tokens"), []string{"model.embed_tokens: weight_packed or weight_scale missing"}},
		{"target nothing", addTarget("model.layers.7.mlp.up_proj"), []string{`"model.layers.7.mlp.up_proj" names no linear`}},
		{"hidden_size 2^40", func(cfg map[string]any) { cfg["hidden_size"] = 1 << 40 }, []string{"hidden_size (model.dim): 1099511627776 exceeds the limit"}},
		{"hidden_size 16384", func(cfg map[string]any) {
			cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"] = 16384, 128, 8
		}, []string{"model.embed_tokens.weight: F32 [288 32], model wants F32 [288 16384]"}},
		{"num_hidden_layers 1000", func(cfg map[string]any) { cfg["num_hidden_layers"] = 1000 }, []string{"model.layers.1.input_layernorm.weight missing"}},
		{"group strategy of 7", func(cfg map[string]any) {
			g := cfg["quantization_config"].(map[string]any)["config_groups"].(map[string]any)["group_0"].(map[string]any)
			g["weights"].(map[string]any)["strategy"], g["weights"].(map[string]any)["group_size"] = "group", 7
		}, []string{"group_size 7"}},
		{"num_bits 3", func(cfg map[string]any) {
			g := cfg["quantization_config"].(map[string]any)["config_groups"].(map[string]any)["group_0"].(map[string]any)
			g["weights"].(map[string]any)["num_bits"] = 3
		}, []string{"num_bits 3"}},
	} {
		dir := fresh(strings.ReplaceAll(c.name, " ", "_"))
		editConfig(t, dir, c.edit)
		refuseQuickly(t, c.name, func() error { _, _, err := LoadPackedSafetensors(dir); return err }, c.want...)
	}
	// outlier indices outside the weight
	gm, gtok := fuzzModel(t, true)
	gwq := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax", Outliers: 0.02}}}
	dir := packedDir(t, gm, gtok, gwq, filepath.Join(t.TempDir(), "gwq"))
	st := filepath.Join(dir, "model.safetensors")
	f, err := safetensors.Read(st)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, x := range f.Tensors {
		if x.Name == "model.layers.0.mlp.down_proj.weight_outlier_idx" {
			v, _ := x.I32()
			v[len(v)-1] = 32 * 64 // down_proj is 32 x 64
			x = safetensors.FromI32(x.Name, x.Shape, v)
		}
		ts = append(ts, x)
	}
	if err := safetensors.Write(st, ts, nil); err != nil {
		t.Fatal(err)
	}
	refuseQuickly(t, "outlier index 2048", func() error { _, _, err := LoadPackedSafetensors(dir); return err },
		"model.layers.0.mlp.down_proj.weight_outlier_idx", "index 2048")
}

// edit is one structured change a fuzz target makes to a valid file: op
// selects what, idx which, val the new value.
type edit struct {
	op, idx uint8
	val     uint32
}

// edits reads b as 6-byte edits.
func edits(b []byte) []edit {
	var out []edit
	for ; len(b) >= 6 && len(out) < 8; b = b[6:] {
		out = append(out, edit{b[0], b[1], uint32(b[2]) | uint32(b[3])<<8 | uint32(b[4])<<16 | uint32(b[5])<<24})
	}
	return out
}

// fuzzLimits keep the fuzzers' models small.
var fuzzLimits = layers.Limits{Vocab: 1 << 12, Dim: 256, Layers: 8, Heads: 64, KVHeads: 64, FFN: 1024, Seq: 1 << 12, HeadDim: 256,
	Params: 1 << 22, Rope: 1 << 16}

// FuzzLoadGGUF: any file is refused or loads as a model and its
// vocabulary; never a panic, and never a model larger than its file
// allows. The file is the fuzzed bytes, or a valid file with fuzzed
// edits of its u32 keys, tensor dims and types, and tensor list (so the
// checks after parsing see hostile values).
func FuzzLoadGGUF(f *testing.F) {
	for i, c := range []struct {
		tied  bool
		quant string
	}{{true, "f32"}, {false, "q8_0"}, {true, "q4_0"}} {
		m, tok := fuzzModel(f, c.tied)
		f.Add(ggufBytes(f, m, tok, c.quant, nil), []byte{})
		f.Add(ggufBytes(f, m, tok, c.quant, nil), []byte{uint8(i), 3, 0, 1, 0, 0, 1, 5, 64, 0, 0, 0})
	}
	f.Fuzz(func(t *testing.T, b, eb []byte) {
		prev := layers.SetLimits(fuzzLimits)
		defer layers.SetLimits(prev)
		gf, err := gguf.Parse(b)
		if err != nil {
			return
		}
		if es := edits(eb); len(es) > 0 {
			var u32s []int
			for i, kv := range gf.KVs {
				if kv.Type == gguf.TypeU32 {
					u32s = append(u32s, i)
				}
			}
			for _, e := range es {
				if len(gf.Tensors) == 0 || len(u32s) == 0 {
					break
				}
				t := &gf.Tensors[int(e.idx)%len(gf.Tensors)]
				switch e.op % 5 {
				case 0:
					gf.KVs[u32s[int(e.idx)%len(u32s)]].Value = e.val
				case 1:
					t.Dims[int(e.val>>28)%len(t.Dims)] = uint64(e.val & 0xFFFFFFF)
				case 2:
					t.Dims = append(t.Dims[:0:0], uint64(e.val&0xFFFF), uint64(e.val>>16))[:1+int(e.idx)%2]
				case 3:
					t.Type = e.val % 16
				default:
					gf.Tensors = append(gf.Tensors[:int(e.idx)%len(gf.Tensors):int(e.idx)%len(gf.Tensors)], gf.Tensors[int(e.idx)%len(gf.Tensors)+1:]...)
				}
				if e.op%5 != 0 && e.op%5 != 4 {
					size, err := gguf.DataSize(t.Type, t.Elements())
					if err != nil || size > 1<<20 {
						return
					}
					t.Data = make([]byte, size)
				}
			}
			enc, err := gguf.Encode(gf)
			if err != nil {
				return
			}
			if gf, err = gguf.Parse(enc); err != nil {
				return
			}
			b = enc
		}
		m, err := ggufModel(gf, true)
		if err != nil {
			return
		}
		if n, _ := m.Config.Params(); n*4 > 8*len(b) {
			t.Fatalf("%+v: %d parameters from %d bytes", m.Config, n, len(b))
		}
		if _, err := ggufTokenizer(m, gf); err != nil {
			return
		}
		_ = Packed(m, gf)
	})
}

// FuzzLoadPackedSafetensors: any config.json and model.safetensors are
// refused or load; never a panic. Besides the fuzzed bytes, fuzzed edits
// of a valid export's sizes, targets, schemes and tensor shapes reach the
// checks after parsing.
func FuzzLoadPackedSafetensors(f *testing.F) {
	gwq := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax", Outliers: 0.02},
		Activations: qat.Presets["w4a8"][0].Activations}}
	for i, rules := range [][]qat.Rule{qat.Presets["w4a8"], qat.Presets["w8a8"], gwq,
		{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 2, Symmetric: true, Granularity: "group", GroupSize: 16, Scale: "minmax"}}}} {
		m, tok := fuzzModel(f, i%2 == 0)
		dir := packedDir(f, m, tok, rules, filepath.Join(f.TempDir(), fmt.Sprint(i)))
		cfg, err1 := os.ReadFile(filepath.Join(dir, "config.json"))
		st, err2 := os.ReadFile(filepath.Join(dir, "model.safetensors"))
		if err1 != nil || err2 != nil {
			f.Fatal(err1, err2)
		}
		f.Add(cfg, st, []byte{})
		f.Add(cfg, st, []byte{uint8(i), 7, 1, 0, 0, 0, 1, 2, 0, 0, 0, 0})
	}
	// compressed-tensors exports: int-quantized, float-quantized,
	// pack-quantized with bf16 tensors
	for i, rules := range [][]qat.Rule{qat.Presets["w8a8"], qat.Presets["fp8"], qat.Presets["w4a16-g32"]} {
		m, tok := fuzzModel(f, i%2 == 0)
		if err := qat.Prepare(m, rules); err != nil {
			f.Fatal(err)
		}
		dir := filepath.Join(f.TempDir(), fmt.Sprint("ct", i))
		if _, err := CompressedTensors(m, tok, dir, CTOptions{DType: []string{"f32", "bf16"}[i%2]}); err != nil {
			f.Fatal(err)
		}
		cfg, err1 := os.ReadFile(filepath.Join(dir, "config.json"))
		st, err2 := os.ReadFile(filepath.Join(dir, "model.safetensors"))
		if err1 != nil || err2 != nil {
			f.Fatal(err1, err2)
		}
		f.Add(cfg, st, []byte{})
		f.Add(cfg, st, []byte{uint8(i), 9, 1, 0, 0, 0, 3, 2, 0, 0, 0, 0})
	}
	keys := []string{"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
		"intermediate_size", "max_position_embeddings"}
	targets := []string{"model.norm", "lm_head", "model.embed_tokens", "model.layers.0.input_layernorm", "model.layers.0.mlp.down_proj",
		"model.layers.1.self_attn.q_proj", "model.layers.*", "[", "Linear", "re:.*_proj$", "re:(("}
	f.Fuzz(func(t *testing.T, cfg, st, eb []byte) {
		prev := layers.SetLimits(fuzzLimits)
		defer layers.SetLimits(prev)
		sf, err := safetensors.Parse(st)
		if err != nil {
			return
		}
		if es := edits(eb); len(es) > 0 {
			var c map[string]any
			if json.Unmarshal(cfg, &c) != nil || len(sf.Tensors) == 0 {
				return
			}
			qc, _ := c["quantization_config"].(map[string]any)
			groups, _ := qc["config_groups"].(map[string]any)
			g, _ := groups["group_0"].(map[string]any)
			w, _ := g["weights"].(map[string]any)
			for _, e := range es {
				switch e.op % 4 {
				case 0:
					c[keys[int(e.idx)%len(keys)]] = e.val % 4096
				case 1:
					if g != nil {
						ts, _ := g["targets"].([]any)
						g["targets"] = append(ts, targets[int(e.idx)%len(targets)])
					}
				case 2:
					if w != nil {
						w[[]string{"num_bits", "group_size", "strategy", "strategy"}[e.idx%4]] =
							[]any{e.val % 10, e.val % 100, "group", "tensor"}[e.idx%4]
					}
				default:
					x := &sf.Tensors[int(e.idx)%len(sf.Tensors)]
					x.Shape = []int{int(e.val % 300), int(e.val>>16) % 300}[:1+int(e.idx>>7)]
					n := 1
					for _, d := range x.Shape {
						n *= d
					}
					x.Data = make([]byte, n*safetensors.DTypeSize[x.DType])
				}
			}
			if cfg, err = json.Marshal(c); err != nil {
				return
			}
			enc, err := safetensors.Encode(sf.Tensors, sf.Metadata)
			if err != nil {
				return
			}
			if sf, err = safetensors.Parse(enc); err != nil {
				return
			}
			st = enc
		}
		m, _, err := packedModel(cfg, sf, true)
		if err != nil {
			return
		}
		if n, _ := m.Config.Params(); n > 16*len(st) {
			t.Fatalf("%+v: %d parameters from %d bytes", m.Config, n, len(st))
		}
	})
}
