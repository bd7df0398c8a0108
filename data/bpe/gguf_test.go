package bpe

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGGUFVocabRebuilds: the vocabulary GGUFVocab gives llama.cpp,
// rebuilt by FromGGUFVocab from llama.cpp's keys alone (no
// tokenizer.huggingface.json: the tokenizer assembled from model, pre,
// tokens, types, merges), encodes SOTU text and the fuzzed strings to the
// original's ids and decodes them alike; with the tokenizer.json it is the
// original. The model and pre names are convert_hf_to_gguf.py's.
func TestGGUFVocabRebuilds(t *testing.T) {
	dir := needNode(t) // the real tokenizers are extracted from .cache/npm
	texts := append(corpus(t, 4), chunks(t, 3000)[:200]...)
	want := map[string][2]string{"llama2": {"llama", "default"}, "llama3": {"gpt2", "llama-bpe"}, "qwen3": {"gpt2", "qwen2"}, "gpt2": {"gpt2", "gpt-2"}}
	for _, name := range refModels {
		t.Run(name, func(t *testing.T) {
			tok := loadRef(t, dir, name)
			v, err := tok.GGUFVocab()
			if err != nil {
				t.Fatal(err)
			}
			// This Llama 3 tokenizer.json adds no BOS (its post-processor
			// is ByteLevel alone), so its check-text ids are Smaug's, a
			// Llama 3 fine-tune: llama.cpp runs the same pre-tokenizer for
			// both names.
			if name == "llama3" && v.Pre == "smaug-bpe" {
				v.Pre = "llama-bpe"
			}
			if got := [2]string{v.Model, v.Pre}; got != want[name] {
				t.Errorf("model, pre = %q, want %q", got, want[name])
			}
			if len(v.Tokens) != tok.VocabSize() || len(v.Types) != len(v.Tokens) {
				t.Fatalf("%d tokens, %d types for a vocabulary of %d", len(v.Tokens), len(v.Types), tok.VocabSize())
			}
			for _, tc := range []struct {
				what string
				hf   bool
			}{{"from llama.cpp's keys", false}, {"from tokenizer.huggingface.json", true}} {
				w := *v
				if !tc.hf {
					w.HFJSON = nil
				}
				back, err := FromGGUFVocab(&w)
				if err != nil {
					t.Fatalf("%s: %v", tc.what, err)
				}
				if (back.conf.tokJSON != nil) != true || back.hf == nil {
					t.Fatalf("%s: not an imported tokenizer", tc.what)
				}
				for _, f := range []func(*Tokenizer) (int32, error){(*Tokenizer).BOS, (*Tokenizer).EOS} {
					a, errA := f(tok)
					b, errB := f(back)
					if a != b || (errA == nil) != (errB == nil) {
						t.Errorf("%s: role %d (%v), original %d (%v)", tc.what, b, errB, a, errA)
					}
				}
				if back.AddsBOS() != tok.AddsBOS() || back.ChatTemplate() != tok.ChatTemplate() {
					t.Errorf("%s: AddsBOS %v, chat template %d bytes; original %v, %d", tc.what, back.AddsBOS(), len(back.ChatTemplate()), tok.AddsBOS(), len(tok.ChatTemplate()))
				}
				all := append(slices.Clone(texts), fuzzTexts(tok, 500, 7, name == "gpt2")...)
				bad := 0
				for i, s := range all {
					a, b := tok.EncodeSpecial(nil, s), back.EncodeSpecial(nil, s)
					if !slices.Equal(a, b) {
						if bad++; bad <= 3 {
							t.Errorf("%s: text %d %.60q: %s", tc.what, i, s, diffAt(tok, b, a))
						}
						continue
					}
					da, _ := tok.Decode(a)
					db, _ := back.Decode(b)
					if da != db {
						if bad++; bad <= 3 {
							t.Errorf("%s: text %d decodes to %.60q, original %.60q", tc.what, i, db, da)
						}
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d texts differ", tc.what, bad, len(all))
				}
			}
		})
	}
}

// TestGGUFVocabLlamaScores: the scores of a SentencePiece vocabulary order
// merges as their ranks, and merges recovered from the scores alone (a
// GGUF without tokenizer.ggml.merges, as llama.cpp's converter writes a
// llama vocabulary) encode as the original on text.
func TestGGUFVocabLlamaScores(t *testing.T) {
	dir := needNode(t)
	tok := loadRef(t, dir, "llama2")
	v, err := tok.GGUFVocab()
	if err != nil {
		t.Fatal(err)
	}
	h := tok.hf
	for _, m := range h.merges {
		if v.Scores[m.id] < -float32(m.rank) {
			t.Fatalf("token %d made by merge %d scores %v", m.id, m.rank, v.Scores[m.id])
		}
	}
	w := *v
	w.HFJSON, w.Merges = nil, nil
	back, err := FromGGUFVocab(&w)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range corpus(t, 2) {
		a, b := tok.Encode(nil, s), back.Encode(nil, s)
		if !slices.Equal(a, b) {
			t.Fatalf("merges from scores: %s", diffAt(tok, b, a))
		}
	}
}

// TestGGUFVocabHostile: a vocabulary llama.cpp's keys cannot describe is an
// error naming the key.
func TestGGUFVocabHostile(t *testing.T) {
	base := Vocab{Model: "gpt2", Pre: "gpt-2", Tokens: []string{"a", "b", "ab"}, Types: []int32{1, 1, 1}, Merges: []string{"a b"}, BOS: -1, EOS: -1, PAD: -1, UNK: -1, EOT: -1}
	if _, err := FromGGUFVocab(&base); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		want string
		edit func(v *Vocab)
	}{
		{"tokenizer.ggml.pre \"nonesuch\"", func(v *Vocab) { v.Pre = "nonesuch" }},
		{"tokenizer.ggml.model \"bert\"", func(v *Vocab) { v.Model = "bert" }},
		{"token_type has 2 entries", func(v *Vocab) { v.Types = v.Types[:2] }},
		{"both \"a\"", func(v *Vocab) { v.Tokens = []string{"a", "a", "ab"} }},
		{"model.merges[0]", func(v *Vocab) { v.Merges = []string{"a c"} }},
		{"bos_token_id 7", func(v *Vocab) { v.BOS = 7 }},
		{"eot_token_id 9", func(v *Vocab) { v.EOT = 9 }},
		{"tokenizer.huggingface.json", func(v *Vocab) { v.HFJSON = []byte("{") }},
		{"scores missing", func(v *Vocab) { v.Model, v.Merges = "llama", nil }},
		{"scores has 1 entries", func(v *Vocab) { v.Scores = []float32{0} }},
	} {
		v := base
		c.edit(&v)
		_, err := FromGGUFVocab(&v)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one saying %q", err, c.want)
		}
	}
}

var _ = filepath.Join
