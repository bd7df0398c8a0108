package chat

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// specialTexts reads the special added tokens of a real tokenizer.json.
func specialTexts(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, ".cache/tokref", name, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Added []struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range f.Added {
		if a.Special {
			s = append(s, a.Content)
		}
	}
	return s
}

// handSpans is the independent rule for the two real templates, written
// from their text: a reply starts after the assistant header (after
// Qwen3's empty think block, which the template writes, not the model) and
// ends after the end-of-turn token; an empty reply is no span.
func handSpans(name, text string) []Span {
	header, eot, think := "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", ""
	if name == "qwen3" {
		header, eot, think = "<|im_start|>assistant\n", "<|im_end|>", "<think>\n\n</think>\n\n"
	}
	var spans []Span
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
			spans = append(spans, Span{lo, lo + j + len(eot)})
		}
		at = lo + j
	}
}

// TestSpansOfRealTemplates checks the reply spans of every conversation
// under the Llama 3 and Qwen3 templates against handSpans, and that
// tokenizing the text cut at the spans' ends gives the tokens of the whole
// text (the real tokenizers, in @lenml/tokenizers via tools/chatref),
// so the mask lines up with the tokens the model sees at inference.
func TestSpansOfRealTemplates(t *testing.T) {
	needNode(t)
	for _, name := range []string{"llama3", "qwen3"} {
		src, bos, eos := realTemplate(t, name)
		tmpl, err := Compile(src, bos, eos)
		if err != nil {
			t.Fatal(err)
		}
		specials := specialTexts(t, name)
		var texts []string
		var cuts [][]int
		for ci, c := range conversations {
			text, spans, err := tmpl.Spans(c, specials)
			if err != nil {
				t.Fatalf("%s conversation %d: %v", name, ci, err)
			}
			if want := handSpans(name, text); !slices.Equal(spans, want) {
				t.Errorf("%s conversation %d: spans %v, want %v in %q", name, ci, spans, want, text)
			}
			cut := []int{0}
			for _, s := range spans {
				cut = append(cut, s.Start, s.End)
			}
			cut = append(cut, len(text))
			texts = append(texts, text)
			for i := 0; i+1 < len(cut); i++ {
				texts = append(texts, text[cut[i]:cut[i+1]])
			}
			cuts = append(cuts, cut)
		}
		ids := refEncode(t, name, texts)
		k := 0
		for ci, cut := range cuts {
			whole := ids[k]
			k++
			var joined []int32
			for i := 0; i+1 < len(cut); i++ {
				joined = append(joined, ids[k]...)
				k++
			}
			if !slices.Equal(joined, whole) {
				t.Errorf("%s conversation %d: the segments tokenize to %v, the whole text to %v", name, ci, joined, whole)
			}
		}
	}
}

// refEncode tokenizes texts with a real tokenizer in @lenml/tokenizers
// (tools/chatref), adding no special tokens.
func refEncode(t *testing.T, name string, texts []string) [][]int32 {
	t.Helper()
	in, _ := json.Marshal(texts)
	cmd := exec.Command("node", filepath.Join(repo, "tools/chatref/chatref.mjs"), "encode", filepath.Join(repo, ".cache/tokref", name))
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

// TestSpansRefuseOverlap: a template that writes a reply twice (once
// within the next turn) has no well-defined reply span; Spans says so.
func TestSpansRefuseOverlap(t *testing.T) {
	tmpl, err := Compile(`{% for m in messages %}[{{ m.role }}]{{ m.content }}{% if not loop.first %}{{ messages[loop.index0 - 1].content }}{% endif %}{% endfor %}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = tmpl.Spans([]Message{{"user", "q"}, {"assistant", "a"}, {"assistant", "b"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "messages[2]") {
		t.Fatalf("err %v, want an overlap at messages[2]", err)
	}
}
