package data

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"qat/data/bpe"
	"qat/data/chat"
)

// realDir is a real model's tokenizer directory that tools/tokref extracts
// (make npm-deps); without node and it the test skips, unless
// QAT_REQUIRE_NODE=1, which makes their absence fail.
func realDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join("..", ".cache", "tokref", name)
	_, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "tokenizer_config.json"))
	}
	if err != nil {
		if os.Getenv("QAT_REQUIRE_NODE") == "1" {
			t.Fatalf("QAT_REQUIRE_NODE=1 but node or %s is missing (make npm-deps): %v", dir, err)
		}
		t.Skipf("node or %s missing (make npm-deps)", dir)
	}
	return dir
}

// nodeEncode tokenizes texts with the real tokenizer of dir in
// @lenml/tokenizers (tools/chatref), adding no special tokens.
func nodeEncode(t *testing.T, dir string, texts []string) [][]int32 {
	t.Helper()
	in, _ := json.Marshal(texts)
	cmd := exec.Command("node", filepath.Join("..", "tools", "chatref", "chatref.mjs"), "encode", dir)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chatref encode: %v\n%s", err, stderr.String())
	}
	var ids [][]int32
	if err := json.Unmarshal(out, &ids); err != nil || len(ids) != len(texts) {
		t.Fatalf("chatref encode: %d results for %d texts (%v)", len(ids), len(texts), err)
	}
	return ids
}

// replySpans is the independent rule for the Llama 3 and Qwen3 templates,
// from their text: a reply runs from after the assistant header (and
// Qwen3's empty think block) to the end-of-turn token, inclusive.
func replySpans(name, text string) [][2]int {
	header, eot, think := "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", ""
	if name == "qwen3" {
		header, eot, think = "<|im_start|>assistant\n", "<|im_end|>", "<think>\n\n</think>\n\n"
	}
	var spans [][2]int
	for at := 0; ; {
		i := strings.Index(text[at:], header)
		if i < 0 {
			return spans
		}
		lo := at + i + len(header)
		if think != "" && strings.HasPrefix(text[lo:], think) {
			lo += len(think)
		}
		j := strings.Index(text[lo:], eot)
		if j < 0 {
			return spans
		}
		if j > 0 {
			spans = append(spans, [2]int{lo, lo + j + len(eot)})
		}
		at = lo + j
	}
}

// TestRealChatTokensAndMasks prepares conversations with the Llama 3 and
// Qwen3 tokenizer directories and checks each document against the
// reference tokenizer: its tokens are the whole render's, and its mask is
// 1 exactly on the tokens of the replies, placed where the render's text
// before each reply ends.
func TestRealChatTokensAndMasks(t *testing.T) {
	convs := [][]chat.Message{
		conv("system", "You are terse.", "user", "What is 2+2?", "assistant", "4"),
		conv("user", "Hi", "assistant", "Hello! How can I help?", "user", "Tell me a joke.", "assistant", "Why did the chicken cross the road?\nTo get to the other side."),
		conv("user", "  Übersetze: 猫  ", "assistant", "\n Katze 🐈 (ネコ) — «chat» \n"),
		conv("system", "Think first.", "user", "Is 91 prime?", "assistant", "<think>\n91 = 7 * 13\n</think>\n\nNo: 91 = 7 × 13.", "user", "And 97?", "assistant", "Yes."),
	}
	for _, name := range []string{"llama3", "qwen3"} {
		dir := realDir(t, name)
		tok, err := bpe.Load(filepath.Join(dir, "tokenizer.json"))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := ReadTokenizerConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := chat.Compile(cfg.ChatTemplate, cfg.BOS, cfg.EOS)
		if err != nil {
			t.Fatal(err)
		}
		v, err := NewVocab(tok, cfg.BOS, cfg.EOS, tmpl, []byte("{}"), nil)
		if err != nil {
			t.Fatal(err)
		}
		var in []Input
		for i, c := range convs {
			in = append(in, Input{File: "c.jsonl", Name: "c.jsonl:" + string(rune('1'+i)), Messages: c})
		}
		out := t.TempDir()
		if _, err := PrepareInputs(in, v, out, regexp.MustCompile(`^$`), 1<<20); err != nil {
			t.Fatal(err)
		}
		docs, err := ReadShard(filepath.Join(out, "train-00000.parquet"), "")
		if err != nil {
			t.Fatal(err)
		}
		// the reference: the render (jinja2-equal, data/chat tests it),
		// its tokens, and each reply's place and tokens
		var texts []string
		var spans [][][2]int
		for _, c := range convs {
			text, err := tmpl.Render(c, false)
			if err != nil {
				t.Fatal(err)
			}
			sp := replySpans(name, text)
			texts = append(texts, text)
			for _, s := range sp {
				texts = append(texts, text[:s[0]], text[s[0]:s[1]])
			}
			spans = append(spans, sp)
		}
		ref := nodeEncode(t, dir, texts)
		k := 0
		for i, d := range docs {
			whole := ref[k]
			k++
			mask := make([]uint8, len(whole))
			for range spans[i] {
				at, n := len(ref[k]), len(ref[k+1])
				k += 2
				for j := at; j < at+n && j < len(mask); j++ {
					mask[j] = 1
				}
			}
			if !reflect.DeepEqual(d.Tokens, whole) {
				t.Errorf("%s conversation %d: tokens %v\nreference %v", name, i, d.Tokens, whole)
			}
			if !reflect.DeepEqual(d.Mask, mask) {
				t.Errorf("%s conversation %d: mask %v\nreference %v", name, i, d.Mask, mask)
			}
		}
	}
}
