package bpe

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"qat/data/internal/hostile"
)

func small(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := Train([]string{"the quick brown fox jumps over the lazy dog, the end. It's 1999!\n\nthe fox, the dog"}, 300)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// editJSON decodes a tokenizer.json into generic maps, edits it and
// encodes it again.
func editJSON(t testing.TB, good []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// renameSpecial renames a special token (as a tokenizer trained
// elsewhere names its own) in added_tokens and model.vocab.
func renameSpecial(name, to string) func(m map[string]any) {
	return func(m map[string]any) {
		for _, a := range m["added_tokens"].([]any) {
			if a.(map[string]any)["content"] == name {
				a.(map[string]any)["content"] = to
			}
		}
		v := m["model"].(map[string]any)["vocab"].(map[string]any)
		v[to] = v[name]
		delete(v, name)
	}
}

func setSpecialID(name string, id float64) func(m map[string]any) {
	return func(m map[string]any) {
		for _, a := range m["added_tokens"].([]any) {
			if a.(map[string]any)["content"] == name {
				a.(map[string]any)["id"] = id
			}
		}
		m["model"].(map[string]any)["vocab"].(map[string]any)[name] = id
	}
}

type hostileJSON struct {
	name string
	b    []byte
	want string
}

func (c hostileJSON) Case() hostile.Case { return hostile.Case{Name: c.name, B: c.b, Want: c.want} }

func hostileTokenizers(t testing.TB) []hostileJSON {
	good, err := small(t).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var cs []hostileJSON
	for i := 1; i <= 25; i++ {
		n := len(good) * i / 26
		cs = append(cs, hostileJSON{fmt.Sprintf("truncated to %d", n), good[:n], "tokenizer.json"})
	}
	for _, c := range []struct {
		name, want string
		edit       func(m map[string]any)
	}{
		{"no bos", "has no <|bos|>", renameSpecial(BOS, "<|begin_of_text|>")},
		{"no eos", "has no <|eos|>", renameSpecial(EOS, "<|endoftext|>")},
		{"bos id past the vocabulary", "id 99999 of \"<|bos|>\" outside", setSpecialID(BOS, 99999)},
		{"bos id negative", "id -1 of \"<|bos|>\" outside", setSpecialID(BOS, -1)},
		{"bos id beyond int32", "tokenizer.json", setSpecialID(BOS, 1<<40)},
		{"bos on a byte's id", "id 65 used by", setSpecialID(BOS, 65)},
		{"no added_tokens", "has no <|bos|>", func(m map[string]any) { delete(m, "added_tokens") }},
		{"no vocab", "tokens, want 256", func(m map[string]any) { delete(m["model"].(map[string]any), "vocab") }},
		{"vocab not an object", "tokenizer.json", func(m map[string]any) { m["model"].(map[string]any)["vocab"] = []any{1, 2} }},
		{"merge of one token", "is not two tokens", func(m map[string]any) {
			mm := m["model"].(map[string]any)
			mm["merges"] = append([]any{"abc"}, mm["merges"].([]any)...)
		}},
		{"merge names unknown tokens", "unknown token", func(m map[string]any) {
			mm := m["model"].(map[string]any)
			mm["merges"] = append([]any{"zzqq yyxx"}, mm["merges"].([]any)...)
		}},
		{"extra merge", "must produce token", func(m map[string]any) {
			mm := m["model"].(map[string]any)
			mm["merges"] = append(mm["merges"].([]any), "a b")
		}},
		{"model type", "model.type", func(m map[string]any) { m["model"].(map[string]any)["type"] = "Unigram" }},
		{"pre_tokenizer", "pre_tokenizer.type", func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "Whitespace"} }},
		{"byte tokens swapped", "byte 0x21 must be token 33", func(m map[string]any) {
			v := m["model"].(map[string]any)["vocab"].(map[string]any)
			v["!"], v["\""] = v["\""], v["!"]
		}},
	} {
		cs = append(cs, hostileJSON{c.name, editJSON(t, good, c.edit), c.want})
	}
	return cs
}

// TestHostileTokenizers: broken tokenizer.json files are errors naming
// what is wrong (a missing special token by name, from Parse or, for a
// file that is not qat's own and has no configs, from BOS/EOS), never
// panics, and cost no more than their size.
func TestHostileTokenizers(t *testing.T) {
	hostile.Check(t, hostile.Cases(hostileTokenizers(t)), 0, parseWithRoles)
}

// parseWithRoles is what a caller needs of a tokenizer.json alone: it
// parses, and has BOS and EOS.
func parseWithRoles(b []byte) error {
	tok, err := Parse(b)
	if err != nil {
		return err
	}
	_, errB := tok.BOS()
	_, errE := tok.EOS()
	return errors.Join(errB, errE)
}

// TestSpecialID: SpecialID names a missing special token; ID panics only
// for tokenizers that did not come from Train, Parse or FromGGUFVocab.
func TestSpecialID(t *testing.T) {
	tok := small(t)
	if id, err := tok.SpecialID(BOS); err != nil || id != tok.ID(BOS) {
		t.Fatalf("SpecialID(BOS) = %d, %v", id, err)
	}
	delete(tok.Special, BOS)
	if _, err := tok.SpecialID(BOS); err == nil || !strings.Contains(err.Error(), "no special token <|bos|>") {
		t.Errorf("missing BOS: %v", err)
	}
	tok.Special[EOS] = 1 << 30
	if _, err := tok.SpecialID(EOS); err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
		t.Errorf("EOS out of range: %v", err)
	}
	for _, id := range []int32{-1, 1 << 30} {
		if n := tok.ByteLen(id); n != 0 {
			t.Errorf("ByteLen(%d) = %d", id, n)
		}
	}
	if _, err := tok.Decode([]int32{1 << 30}); err == nil {
		t.Error("decoded an id outside the vocabulary")
	}
}

// TestGGUFVocabBounds: FromGGUFVocab refuses a vocabulary without BOS or
// EOS, or over MaxVocab, with an error naming it.
func TestGGUFVocabBounds(t *testing.T) {
	tok := small(t)
	v, err := tok.GGUFVocab()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FromGGUFVocab(v); err != nil {
		t.Fatal(err)
	}
	bos := tok.ID(BOS)
	noBOS := *v
	noBOS.Tokens = append(append([]string(nil), v.Tokens[:bos]...), v.Tokens[bos+1:]...)
	noBOS.Types = append(append([]int32(nil), v.Types[:bos]...), v.Types[bos+1:]...)
	if _, err := fromOwnGGUF(&noBOS); err == nil || !strings.Contains(err.Error(), "no control token <|bos|>") {
		t.Errorf("no BOS: %v", err)
	}
	if _, err := FromGGUFVocab(&Vocab{Model: "gpt2", Tokens: make([]string, MaxVocab+1)}); err == nil || !strings.Contains(err.Error(), fmt.Sprint(MaxVocab)) {
		t.Errorf("MaxVocab+1 tokens: %v", err)
	}
	if _, err := Train([]string{"x"}, MaxVocab+1); err == nil {
		t.Error("trained a vocabulary over MaxVocab")
	}
}
