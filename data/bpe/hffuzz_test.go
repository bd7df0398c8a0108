package bpe

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// fuzzByteLevel is a Llama 3 style tokenizer (NFC, the Llama 3 Split
// pattern, ByteLevel without regex, ignore_merges, a BOS template) with a
// small trained vocabulary: qat's own file, renamed and rewired.
func fuzzByteLevel(t testing.TB) *Tokenizer {
	good, err := small(t).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	b := editJSON(t, good, func(m map[string]any) {
		renameSpecial(BOS, "<|begin_of_text|>")(m)
		m["normalizer"] = map[string]any{"type": "NFC"}
		m["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3Pattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}}}
		m["model"].(map[string]any)["ignore_merges"] = true
		m["post_processor"] = map[string]any{"type": "TemplateProcessing", "single": []any{map[string]any{"SpecialToken": map[string]any{"id": "<|begin_of_text|>"}},
			map[string]any{"Sequence": map[string]any{"id": "A"}}}, "special_tokens": map[string]any{"<|begin_of_text|>": map[string]any{"ids": []any{m["model"].(map[string]any)["vocab"].(map[string]any)["<|begin_of_text|>"]}}}}
	})
	tok, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if tok.hf == nil {
		t.Fatal("parsed as qat's own format")
	}
	if err := tok.SetRole(BOS, "<|begin_of_text|>"); err != nil {
		t.Fatal(err)
	}
	return tok
}

// fuzzSentencePiece is a Llama 2 style tokenizer: Prepend/Replace
// normalizers, byte fallback over <0x00>..<0xFF>, a few merges, the
// Replace/ByteFallback/Fuse/Strip decoder.
func fuzzSentencePiece(t testing.TB) *Tokenizer {
	var vocab []string
	for _, s := range []string{"<unk>", "<s>", "</s>"} {
		vocab = append(vocab, fmt.Sprintf("%q: %d", s, len(vocab)))
	}
	for c := range 256 {
		vocab = append(vocab, fmt.Sprintf("\"<0x%02X>\": %d", c, len(vocab)))
	}
	for _, s := range []string{"▁", "t", "h", "e", "th", "▁th", "▁the", "a", "▁a", "é", "▁▁"} {
		vocab = append(vocab, fmt.Sprintf("%q: %d", s, len(vocab)))
	}
	js := `{"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
	 "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
	 "pre_tokenizer": null,
	 "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
	 "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
	 "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true, "vocab": {` + strings.Join(vocab, ", ") + `},
	   "merges": [["▁", "▁"], ["t", "h"], ["▁", "th"], ["▁th", "e"], ["▁", "a"]]}}`
	tok, err := Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.SetRole(BOS, "<s>"); err != nil {
		t.Fatal(err)
	}
	return tok
}

// FuzzHFEncodeRoundTrip: for both kinds of imported tokenizer, every
// NFC-normal UTF-8 text encodes to ids of the vocabulary that decode back
// to it, EncodeSpecial is BOS then Encode, and ByteLen sums to the text's
// length.
func FuzzHFEncodeRoundTrip(f *testing.F) {
	toks := []*Tokenizer{fuzzByteLevel(f), fuzzSentencePiece(f)}
	for _, s := range []string{"the quick brown fox", " é\n\n  x", "<|begin_of_text|>the", "<s> </s>", "😀 12345 it's", "\x00\t\r\n", "ab\xff\xfecd é\xe2\x82"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			// invalid UTF-8 (a --text file, a --prompt) encodes as
			// Python's errors="replace" decoding of it would, no panic
			for i, tok := range toks {
				if got, want := tok.Encode(nil, s), tok.Encode(nil, validUTF8(s)); !slices.Equal(got, want) {
					t.Fatalf("tokenizer %d: %q encodes to %v, its replacement to %v", i, s, got, want)
				}
			}
			return
		}
		if !norm.NFC.IsNormalString(s) {
			return
		}
		for i, tok := range toks {
			ids := tok.Encode(nil, s)
			n := 0
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("tokenizer %d: id %d outside", i, id)
				}
				n += tok.ByteLen(id)
			}
			got, err := tok.Decode(ids)
			// Around added tokens a SentencePiece-style text does not
			// round-trip in Hugging Face either: each text segment gets
			// its own ▁ prefix ("<s> x" decodes to "<s>  x").
			hasAdded := false
			for _, a := range tok.hf.added {
				hasAdded = hasAdded || strings.Contains(s, a.Content)
			}
			if err != nil || (got != s && !(i == 1 && hasAdded)) {
				t.Fatalf("tokenizer %d: %q decodes to %q (%v)", i, s, got, err)
			}
			if sp := tok.EncodeSpecial(nil, s); len(sp) != len(ids)+1 || sp[0] != tok.ID(BOS) {
				t.Fatalf("tokenizer %d: EncodeSpecial %v, Encode %v", i, sp, ids)
			}
			// ByteLen counts the text a token stands for; specials count
			// nothing and SentencePiece's prefix space is one more byte.
			if i == 0 && !hasAdded && n != len(s) {
				t.Fatalf("tokenizer %d: ByteLen sums to %d for %d bytes", i, n, len(s))
			}
		}
	})
}

// FuzzParseHF: no Hugging Face tokenizer.json makes Parse panic or
// allocate beyond its bounds; what parses encodes to ids of its
// vocabulary, which decode.
func FuzzParseHF(f *testing.F) {
	f.Add([]byte(tinyHF))
	for _, c := range hostileHF(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := Parse(b)
		if err != nil {
			return
		}
		ids := tok.EncodeSpecial(nil, "abc 123 xyz <|begin|> é😀\n\n")
		for _, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("id %d outside the vocabulary of %d", id, tok.VocabSize())
			}
		}
		if _, err := tok.Decode(ids); err != nil {
			t.Fatal(err)
		}
	})
}
