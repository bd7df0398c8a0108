package bpe

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"qat/data/internal/hostile"
)

// tinyHF is a Hugging Face tokenizer.json of the Llama 3 kind, small
// enough to edit: Split + ByteLevel, ignore_merges, added special tokens.
const tinyHF = `{"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [{"id": 7, "content": "<|begin|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                  {"id": 8, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
 "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "\\p{L}+|\\s+"}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
 "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<|begin|>": {"id": "<|begin|>", "ids": [7], "tokens": ["<|begin|>"]}}},
 "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
    "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
    "vocab": {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġa": 4, "c": 5, "abc": 6},
    "merges": ["a b", "Ġ a", "ab c"]}}`

func hostileHF(t testing.TB) []hostileJSON {
	good := []byte(tinyHF)
	var cs []hostileJSON
	add := func(name, want string, edit func(m map[string]any)) {
		cs = append(cs, hostileJSON{name, editJSON(t, good, edit), want})
	}
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	vocab := func(m map[string]any) map[string]any { return model(m)["vocab"].(map[string]any) }
	pre := func(m map[string]any, i int) map[string]any {
		return m["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[i].(map[string]any)
	}
	add("vocab id past MaxVocab", `model.vocab["abc"] id 1073741824 outside`, func(m map[string]any) { vocab(m)["abc"] = 1 << 30 })
	add("vocab id negative", `model.vocab["abc"] id -1 outside`, func(m map[string]any) { vocab(m)["abc"] = -1 })
	add("added id negative", "added_tokens[0].id -1", func(m map[string]any) {
		m["added_tokens"].([]any)[0].(map[string]any)["id"] = -1
	})
	add("added id huge", "added_tokens[1].id 4194304", func(m map[string]any) {
		m["added_tokens"].([]any)[1].(map[string]any)["id"] = MaxVocab
	})
	add("duplicated vocab id", "model.vocab: id 6 is both", func(m map[string]any) { vocab(m)["zz"] = 6 })
	add("added token on a vocab id", `added_tokens[0] "<|begin|>" has id 7, which is`, func(m map[string]any) { vocab(m)["zz"] = 7 })
	add("hole in ids", "no token has id 6", func(m map[string]any) { delete(vocab(m), "abc"); model(m)["merges"] = []any{"a b", "Ġ a"} })
	add("merge of an unknown token", `model.merges[1] "Ġ" "q" names a token not in model.vocab`, func(m map[string]any) {
		model(m)["merges"] = []any{"a b", "Ġ q", "ab c"}
	})
	add("merge making an unknown token", `makes "bc", which is not in model.vocab`, func(m map[string]any) { model(m)["merges"] = []any{"b c"} })
	add("merge of three", `model.merges[0] "a b c" is not two tokens`, func(m map[string]any) { model(m)["merges"] = []any{"a b c"} })
	add("pair merge of one", "model.merges[0] has 1 tokens", func(m map[string]any) { model(m)["merges"] = []any{[]any{"a"}} })
	add("bad regex", "pre_tokenizer.pretokenizers[0].pattern.Regex", func(m map[string]any) {
		pre(m, 0)["pattern"] = map[string]any{"Regex": "(\\p{L}+"}
	})
	add("no pattern", "pre_tokenizer.pretokenizers[0].pattern", func(m map[string]any) { delete(pre(m, 0), "pattern") })
	add("split behavior", `pre_tokenizer.pretokenizers[0].behavior "Sideways"`, func(m map[string]any) { pre(m, 0)["behavior"] = "Sideways" })
	add("unknown normalizer", `normalizer.normalizers[1].type "Foo" not supported`, func(m map[string]any) {
		n := m["normalizer"].(map[string]any)
		n["normalizers"] = append(n["normalizers"].([]any), map[string]any{"type": "Foo"})
	})
	add("unknown pre-tokenizer", `pre_tokenizer.pretokenizers[1].type "Bert" not supported`, func(m map[string]any) { pre(m, 1)["type"] = "Bert" })
	add("unknown decoder", `decoder.type "CTC" not supported`, func(m map[string]any) { m["decoder"] = map[string]any{"type": "CTC"} })
	add("unknown post-processor", `post_processor.type "Magic" not supported`, func(m map[string]any) { m["post_processor"] = map[string]any{"type": "Magic"} })
	add("template names an unknown special", `post_processor.single[0] "<|begin|>" is not in special_tokens`, func(m map[string]any) {
		m["post_processor"].(map[string]any)["special_tokens"] = map[string]any{}
	})
	add("template id outside", "post_processor.special_tokens[\"<|begin|>\"] id 99", func(m map[string]any) {
		m["post_processor"].(map[string]any)["special_tokens"] = map[string]any{"<|begin|>": map[string]any{"id": "<|begin|>", "ids": []any{99}}}
	})
	add("dropout", "model.dropout 0.1", func(m map[string]any) { model(m)["dropout"] = 0.1 })
	add("unk not in vocab", `model.unk_token "<unk>" is not in model.vocab`, func(m map[string]any) { model(m)["unk_token"] = "<unk>" })
	add("model type", `model.type "Unigram"`, func(m map[string]any) { model(m)["type"] = "Unigram" })
	add("empty added content", "added_tokens[0].content is empty", func(m map[string]any) {
		m["added_tokens"].([]any)[0].(map[string]any)["content"] = ""
	})
	add("duplicated added token", `added_tokens[0] and [1] are both "<|begin|>"`, func(m map[string]any) {
		a := m["added_tokens"].([]any)
		a[1].(map[string]any)["content"] = "<|begin|>"
	})
	add("metaspace scheme", `pre_tokenizer.pretokenizers[1].prepend_scheme "sometimes"`, func(m map[string]any) {
		pre(m, 1)["type"] = "Metaspace"
		pre(m, 1)["prepend_scheme"] = "sometimes"
	})
	add("field of the wrong type", "pre_tokenizer.pretokenizers[1].add_prefix_space", func(m map[string]any) { pre(m, 1)["add_prefix_space"] = "yes" })
	// Sequences nested past maxDepth, and JSON nested past what the
	// decoder is allowed to recurse into.
	deep := map[string]any{"type": "NFC"}
	for range 12 {
		deep = map[string]any{"type": "Sequence", "normalizers": []any{deep}}
	}
	add("deep Sequence", "nested deeper than 8", func(m map[string]any) { m["normalizer"] = deep })
	cs = append(cs, hostileJSON{"deep JSON", []byte(`{"model": ` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`), "nested deeper than 64"})
	cs = append(cs, hostileJSON{"not JSON", []byte("\x00\xff"), "tokenizer.json"})
	return cs
}

// TestHostileHF: broken Hugging Face tokenizer.json files are errors
// naming the field (its JSON path), quickly and within the allocation
// bound, never panics.
func TestHostileHF(t *testing.T) {
	if _, err := Parse([]byte(tinyHF)); err != nil {
		t.Fatalf("the base file: %v", err)
	}
	hostile.Check(t, hostile.Cases(hostileHF(t)), 25, func(b []byte) error { _, err := Parse(b); return err })
}

// TestTinyHF: the small file encodes as its rules say: added tokens
// first, ignore_merges takes whole words, BOS from the template, and
// decodes back.
func TestTinyHF(t *testing.T) {
	tok, err := Parse([]byte(tinyHF))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.BOS(); err == nil {
		t.Error("BOS without configs or SetRole")
	}
	if err := tok.SetRole(BOS, "<|begin|>"); err != nil {
		t.Fatal(err)
	}
	if err := tok.SetRole(EOS, "<|end|>"); err != nil {
		t.Fatal(err)
	}
	got := tok.EncodeSpecial(nil, "abc<|end|> ab")
	// "abc" is a vocab word (ignore_merges), " " and "ab" pieces of the Split
	if want := []int32{7, 6, 8, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("ids %v, want %v", got, want)
	}
	if !tok.AddsBOS() || tok.ID(BOS) != 7 || tok.ID(EOS) != 8 || !slices.Equal(tok.StopIDs(), []int32{8}) {
		t.Errorf("AddsBOS %v, BOS %d, EOS %d, stop %v", tok.AddsBOS(), tok.ID(BOS), tok.ID(EOS), tok.StopIDs())
	}
	if s, err := tok.Decode(got); err != nil || s != "<|begin|>abc<|end|> ab" {
		t.Errorf("decoded %q, %v", s, err)
	}
	if tok.ByteLen(7) != 0 || tok.ByteLen(4) != 2 || tok.ByteLen(6) != 3 {
		t.Errorf("ByteLen: %d %d %d", tok.ByteLen(7), tok.ByteLen(4), tok.ByteLen(6))
	}
}

// TestConfigs: tokenizer_config.json and generation_config.json give the
// roles (bos_token as a string or an AddedToken object, eos_token_id as
// a list), the chat template (a string, or a list with "default"), and
// broken ones are errors naming the file and the field.
func TestConfigs(t *testing.T) {
	write := func(dir, name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	write(dir, "tokenizer.json", tinyHF)
	write(dir, "tokenizer_config.json", `{"bos_token": {"content": "<|begin|>", "lstrip": false}, "eos_token": "<|end|>",
		"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ bos_token }}"}]}`)
	write(dir, "generation_config.json", `{"bos_token_id": 7, "eos_token_id": [8, 6]}`)
	tok, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := tok.BOS(); b != 7 || tok.BOSToken() != "<|begin|>" || tok.EOSToken() != "<|end|>" || tok.ChatTemplate() != "{{ bos_token }}" ||
		!slices.Equal(tok.StopIDs(), []int32{8, 6}) || tok.ID(EOS) != 8 {
		t.Errorf("BOS %d %q, EOS %q, template %q, stop %v", b, tok.BOSToken(), tok.EOSToken(), tok.ChatTemplate(), tok.StopIDs())
	}
	out := t.TempDir()
	if err := tok.WriteFiles(out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json"} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(out, f))
		if string(a) != string(b) {
			t.Errorf("WriteFiles: %s is not the file read", f)
		}
	}
	// a checkpoint's tokenizer (written by WriteFiles, loaded again) keeps
	// the stop ids
	if again, err := LoadDir(out); err != nil {
		t.Error(err)
	} else if !slices.Equal(again.StopIDs(), []int32{8, 6}) {
		t.Errorf("written and loaded again: stop ids %v", again.StopIDs())
	}
	for _, c := range []struct{ file, body, want string }{
		{"tokenizer_config.json", `{"bos_token": "<nope>"}`, `tokenizer_config.json: bos_token "<nope>" is not a token`},
		{"tokenizer_config.json", `{"eos_token": 5}`, "tokenizer_config.json: eos_token: want a string"},
		{"tokenizer_config.json", `{"chat_template": [{"name": "x", "template": "y"}]}`, `none named "default"`},
		{"tokenizer_config.json", `{"chat_template": 3}`, "chat_template: want a string"},
		{"tokenizer_config.json", `[`, "tokenizer_config.json"},
		{"generation_config.json", `{"eos_token_id": [8, 99]}`, "generation_config.json: eos_token_id: id 99 outside"},
		{"generation_config.json", `{"eos_token_id": "x"}`, "generation_config.json: eos_token_id: want an id"},
	} {
		d := t.TempDir()
		write(d, "tokenizer.json", tinyHF)
		write(d, c.file, c.body)
		_, err := LoadDir(d)
		var bad interface{ BadInput() }
		if err == nil || !strings.Contains(err.Error(), c.want) || !errorsAs(err, &bad) {
			t.Errorf("%s %s: error %v, want a BadInput one saying %q", c.file, c.body, err, c.want)
		}
	}
	// no configs: an error, not a panic, where BOS is asked for
	d := t.TempDir()
	write(d, "tokenizer.json", tinyHF)
	tok, err = LoadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.SpecialID(BOS); err == nil || !strings.Contains(err.Error(), "bos_token") {
		t.Errorf("no bos: %v", err)
	}
	if tok.AddsBOS() || tok.StopIDs() != nil {
		t.Errorf("AddsBOS %v, stop %v without configs", tok.AddsBOS(), tok.StopIDs())
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
