package bpe

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
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
				// llama.cpp adds the BOS qat starts documents with, even
				// where the post-processor does not (this Llama 3 file):
				// read from llama.cpp's keys, the tokenizer adds it too
				_, errBOS := tok.BOS()
				addsBOS := tok.AddsBOS()
				if !tc.hf {
					addsBOS = addsBOS || errBOS == nil
				}
				if v.AddBOS != (tok.AddsBOS() || errBOS == nil) || back.AddsBOS() != addsBOS || back.ChatTemplate() != tok.ChatTemplate() {
					t.Errorf("%s: add_bos %v, AddsBOS %v, chat template %d bytes; original AddsBOS %v (BOS %v), %d", tc.what, v.AddBOS, back.AddsBOS(), len(back.ChatTemplate()), tok.AddsBOS(), errBOS == nil, len(tok.ChatTemplate()))
				}
				all := append(slices.Clone(texts), fuzzTexts(tok, 500, 7, name == "gpt2")...)
				// every token's own text: where a whole word is a token
				// that merges cannot reach (Llama 3's " việc"),
				// ignore_merges decides
				all = append(all, vocabTexts(tok)...)
				bad := 0
				for i, s := range all {
					a, b := tok.EncodeSpecial(nil, s), back.EncodeSpecial(nil, s)
					if addsBOS && !tok.AddsBOS() {
						a = append([]int32{back.ID(BOS)}, a...)
					}
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

// vocabTexts is the text of every token of the model's vocabulary (byte
// tokens, added tokens and pieces of characters left out), one text per
// token.
func vocabTexts(tok *Tokenizer) []string {
	h := tok.hf
	var out []string
	for id := range h.idTok {
		if h.isAdded[id] {
			continue
		}
		if _, ok := byteToken(h.idTok[id]); ok && h.byteFallback {
			continue
		}
		// a piece of a character is no text a Hugging Face tokenizer
		// can be given
		if s := h.tokenBytes(int32(id)); utf8.ValidString(s) {
			out = append(out, s)
		}
	}
	return out
}

// editedRef loads the named reference tokenizer with its tokenizer.json
// changed by edit.
func editedRef(t *testing.T, dir, name string, edit func(f map[string]any)) *Tokenizer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	edit(f)
	out := t.TempDir()
	if b, err = json.Marshal(f); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, name, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "tokenizer.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "tokenizer_config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return loadRef(t, filepath.Dir(out), filepath.Base(out))
}

// TestGGUFPreLlama3: llama.cpp's llama-bpe and smaug-bpe split text alike
// and differ in ignore_merges only; the name follows the file's
// ignore_merges, whatever convert_hf_to_gguf.py's check-text hash says
// (it hashes the BOS of the post-processor too: Meta's first Llama 3
// tokenizer.json, without it, hashes as Smaug's). The test also shows
// that the choice matters: with and without ignore_merges the same
// vocabulary encodes some of its own tokens' texts differently.
func TestGGUFPreLlama3(t *testing.T) {
	dir := needNode(t)
	bosPost := func(f map[string]any) {
		// the post-processor of Meta's current Llama 3 files
		f["post_processor"] = map[string]any{"type": "Sequence", "processors": []any{
			map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
			map[string]any{"type": "TemplateProcessing",
				"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<|begin_of_text|>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
				"pair":           []any{map[string]any{"SpecialToken": map[string]any{"id": "<|begin_of_text|>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
				"special_tokens": map[string]any{"<|begin_of_text|>": map[string]any{"id": "<|begin_of_text|>", "ids": []any{128000}, "tokens": []any{"<|begin_of_text|>"}}}}}}
	}
	noIgnore := func(f map[string]any) { f["model"].(map[string]any)["ignore_merges"] = false }
	toks := map[string]*Tokenizer{
		"as released":        loadRef(t, dir, "llama3"),
		"BOS post-processor": editedRef(t, dir, "llama3", bosPost),
		"no ignore_merges":   editedRef(t, dir, "llama3", noIgnore),
	}
	want := map[string]string{"as released": "llama-bpe", "BOS post-processor": "llama-bpe", "no ignore_merges": "smaug-bpe"}
	for what, tok := range toks {
		v, err := tok.GGUFVocab()
		if err != nil {
			t.Fatal(err)
		}
		if v.Pre != want[what] || !v.AddBOS {
			t.Errorf("%s: pre %q, add_bos %v; want %q, true", what, v.Pre, v.AddBOS, want[what])
		}
	}
	differ := 0
	for _, s := range vocabTexts(toks["as released"]) {
		if !slices.Equal(toks["as released"].Encode(nil, s), toks["no ignore_merges"].Encode(nil, s)) {
			differ++
		}
	}
	if differ == 0 {
		t.Error("ignore_merges changes no token's encoding: the test shows nothing")
	}
	t.Logf("%d of the vocabulary's texts encode differently without ignore_merges", differ)
}

// spmEncode is llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm,
// src/llama-vocab.cpp at c392e50) on a vocabulary as GGUFVocab writes it,
// for text without added tokens: a space before the text
// (add_space_prefix), spaces as ▁, UTF-8 characters as the first symbols;
// the adjacent pair whose joined text is a token with the highest score
// merges first (the leftmost among equal scores); a final symbol that is
// no token splits back along the merges that made it, down to byte tokens.
func spmEncode(v *Vocab, ids map[string]int32, text string) []int32 {
	if v.AddSpacePrefix {
		text = " " + text
	}
	text = strings.ReplaceAll(text, " ", "▁")
	type sym struct{ start, n, prev, next int }
	var syms []sym
	for off := 0; off < len(text); {
		_, n := utf8.DecodeRuneInString(text[off:])
		if b := text[off]; b >= 0xF0 { // llama.cpp's unicode_len_utf8: by the lead byte
			n = 4
		} else if b >= 0xE0 {
			n = 3
		} else if b >= 0xC0 {
			n = 2
		} else {
			n = 1
		}
		n = min(n, len(text)-off)
		next := len(syms) + 1
		if off+n == len(text) {
			next = -1
		}
		syms = append(syms, sym{off, n, len(syms) - 1, next})
		off += n
	}
	type bigram struct {
		left, right, size int
		score             float32
	}
	var queue []bigram // a heap by (score desc, left asc)
	less := func(a, b bigram) bool { return a.score > b.score || (a.score == b.score && a.left < b.left) }
	push := func(b bigram) {
		queue = append(queue, b)
		for i := len(queue) - 1; i > 0; {
			p := (i - 1) / 2
			if !less(queue[i], queue[p]) {
				break
			}
			queue[i], queue[p] = queue[p], queue[i]
			i = p
		}
	}
	pop := func() bigram {
		top := queue[0]
		last := len(queue) - 1
		queue[0] = queue[last]
		queue = queue[:last]
		for i := 0; ; {
			l, r, m := 2*i+1, 2*i+2, i
			if l < len(queue) && less(queue[l], queue[m]) {
				m = l
			}
			if r < len(queue) && less(queue[r], queue[m]) {
				m = r
			}
			if m == i {
				break
			}
			queue[i], queue[m] = queue[m], queue[i]
			i = m
		}
		return top
	}
	revMerge := map[string][2]int{}
	tryAdd := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		s := text[syms[l].start : syms[l].start+syms[l].n+syms[r].n]
		id, ok := ids[s]
		if !ok {
			return
		}
		push(bigram{l, r, len(s), v.Scores[id]})
		revMerge[s] = [2]int{l, r}
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for len(queue) > 0 {
		b := pop()
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}
	var out []int32
	var reseg func(s sym)
	reseg = func(s sym) {
		t := text[s.start : s.start+s.n]
		if id, ok := ids[t]; ok {
			out = append(out, id)
			return
		}
		if p, ok := revMerge[t]; ok {
			reseg(syms[p[0]])
			reseg(syms[p[1]])
			return
		}
		for i := 0; i < len(t); i++ {
			out = append(out, ids[fmt.Sprintf("<0x%02X>", t[i])])
		}
	}
	if len(syms) > 0 {
		for i := 0; i != -1; i = syms[i].next {
			reseg(syms[i])
		}
	}
	return out
}

// TestGGUFVocabLlamaSPM: llama.cpp's SentencePiece tokenizer, run on the
// scores and tokens GGUFVocab writes for Llama 2's tokenizer, gives the
// original's ids on SOTU text, fuzzed strings and every token's own text.
func TestGGUFVocabLlamaSPM(t *testing.T) {
	dir := needNode(t)
	tok := loadRef(t, dir, "llama2")
	v, err := tok.GGUFVocab()
	if err != nil {
		t.Fatal(err)
	}
	if v.Model != "llama" || !v.AddSpacePrefix || !v.AddBOS {
		t.Fatalf("model %q, add_space_prefix %v, add_bos %v", v.Model, v.AddSpacePrefix, v.AddBOS)
	}
	ids := make(map[string]int32, len(v.Tokens))
	for i, s := range v.Tokens {
		ids[s] = int32(i)
	}
	var added []string
	for _, a := range tok.hf.added {
		added = append(added, a.Content)
	}
	texts := append(corpus(t, 3), chunks(t, 3000)[:300]...)
	texts = append(texts, fuzzTexts(tok, 2000, 11, false)...)
	texts = append(texts, vocabTexts(tok)...)
	bad, n := 0, 0
	for i, s := range texts {
		// llama.cpp matches added tokens before the SentencePiece
		// tokenizer sees the text: texts with them are not this test's
		if slices.ContainsFunc(added, func(a string) bool { return strings.Contains(s, a) }) {
			continue
		}
		n++
		want, got := tok.Encode(nil, s), spmEncode(v, ids, s)
		if !slices.Equal(got, want) {
			if bad++; bad <= 5 {
				t.Errorf("text %d %.60q: %s", i, s, diffAt(tok, got, want))
			}
		}
	}
	if bad > 0 || n < 1000 {
		t.Errorf("%d of %d texts differ", bad, n)
	}
}
