package export

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"qat/data/bpe"
	"qat/data/gguf"
	"qat/layers"
)

// TestGGUFVocabKeys: a GGUF export of a model with each real tokenizer of
// .cache/tokref carries the vocabulary llama.cpp (c392e50) tokenizes it
// with: the model and pre-tokenizer names its llama-vocab.cpp reads for
// that kind of file (Llama 3's as llama-bpe, which ignores merges as the
// file does, not smaug-bpe; Qwen's as qwen2), add_bos_token where qat
// starts documents with BOS, and for the SentencePiece vocabulary scores,
// add_space_prefix and the byte and control token types; read
// back from llama.cpp's keys alone (without tokenizer.huggingface.json),
// the tokenizer encodes as the original, also on words merges cannot
// reach. Without the files (make npm-deps) it skips, unless
// QAT_REQUIRE_NODE=1.
func TestGGUFVocabKeys(t *testing.T) {
	dir := filepath.Join("..", ".cache", "tokref")
	want := map[string]struct {
		model, pre string
		addBOS     bool
	}{
		"llama3": {"gpt2", "llama-bpe", true}, "llama2": {"llama", "default", true},
		"qwen3": {"gpt2", "qwen2", false}, "gpt2": {"gpt2", "gpt-2", true},
	}
	// Vietnamese words that are single Llama 3 tokens no chain of merges
	// makes, and ordinary text
	texts := []string{" việc hợp nhiều Việt", "The state of the Union is strong; we'll see.\n\n  It's 1917."}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(dir, name)
			if _, err := os.Stat(filepath.Join(src, "tokenizer.json")); err != nil {
				if os.Getenv("QAT_REQUIRE_NODE") == "1" {
					t.Fatalf("QAT_REQUIRE_NODE=1 but %s is missing (make npm-deps)", src)
				}
				t.Skipf("%s missing (make npm-deps)", src)
			}
			tok, err := bpe.LoadDir(src)
			if err != nil {
				t.Fatal(err)
			}
			m := layers.New(layers.Config{Vocab: tok.VocabSize(), Dim: 32, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 64, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 16})
			f, err := GGUF(m, tok, "f32", name)
			if err != nil {
				t.Fatal(err)
			}
			model, _ := f.String(keyTokModel)
			pre, _ := f.String(keyTokPre)
			kv, _ := f.Get(keyAddBOS)
			if model != w.model || pre != w.pre || kv.Value != w.addBOS {
				t.Errorf("model %q, pre %q, add_bos_token %v; want %q, %q, %v", model, pre, kv.Value, w.model, w.pre, w.addBOS)
			}
			if model == "llama" {
				sp, _ := f.Get(keySpacePrefix)
				scores, _ := f.Get(keyTokScores)
				types, _ := f.Get(keyTokTypes)
				count := map[int32]int{}
				for _, ty := range types.Value.(gguf.Array).Values.([]int32) {
					count[ty]++
				}
				// <unk>, <s> and </s> are special added tokens: control, as
				// convert_hf_to_gguf.py's LlamaHfVocab types them, with
				// <unk> named by unknown_token_id
				unk, _ := f.U32(keyUNK)
				if sp.Value != true || len(scores.Value.(gguf.Array).Values.([]float32)) != tok.VocabSize() ||
					count[bpe.TypeByte] != 256 || count[bpe.TypeControl] != 3 || count[bpe.TypeNormal] != tok.VocabSize()-259 || unk != 0 {
					t.Errorf("add_space_prefix %v, %d scores, token types %v, unknown_token_id %d: want true, one a token, 256 bytes, 3 control, 0",
						sp.Value, len(scores.Value.(gguf.Array).Values.([]float32)), count, unk)
				}
			}
			back, err := vocabOf(f, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range texts {
				if a, b := tok.Encode(nil, s), back.Encode(nil, s); !slices.Equal(a, b) {
					t.Errorf("%q: %v from llama.cpp's keys, %v from the tokenizer", s, b, a)
				}
			}
		})
	}
}
