// Package chat renders conversations with a model's chat template (the
// Jinja template of its tokenizer_config.json) and finds, in the rendered
// text, the parts the model is trained on: the assistant's replies.
//
// Rendering follows transformers' apply_chat_template: the template sees
// messages (a list of {role, content}), add_generation_prompt, bos_token
// and eos_token, and raise_exception aborts with the template's message.
// The Jinja engine is github.com/ardanlabs/jinja (pure Go, written for LLM
// chat templates: namespace, loop controls, slicing, tojson and the Python
// string methods the Llama 3 and Qwen3 templates call); the tests compare
// its output byte for byte with @huggingface/jinja, the implementation the
// Hugging Face hub runs.
//
// # Which characters are trained
//
// Templates are arbitrary programs, so the assistant's part is found by
// observing the template rather than parsing it. For assistant message k,
// the conversation is rendered again with that message's content replaced
// by "\x01", and again by "\x02": the characters of the full render that
// change are the reply's content as the template wrote it (trimmed,
// stripped, with its reasoning split off, whatever the template does).
// Two stand-ins make the boundaries exact: a render can agree with the
// real one for a character past the content's start (or before its end)
// only when that character equals the stand-in, and no character equals
// both. The span then extends over what follows the content up to and
// including the first special token (the end of turn: <|eot_id|>,
// <|im_end|>, </s>) when only white space comes between. Everything else
// (system and user messages, headers, the generation prompt, the blank
// think block Qwen3 writes into its last turn) is context, not target.
// Spans must come in message order and not overlap, or Spans fails.
package chat

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Template is a compiled chat template with the tokens it may refer to.
type Template struct {
	t        *jinja.Template
	bos, eos string
}

// MaxTemplateBytes bounds a chat template's source (real ones are a few KB;
// Llama 3.1's, with its tool-calling prose, is under 10 KB).
const MaxTemplateBytes = 1 << 20

// MaxRenderBytes bounds what one conversation may render to. The bound is
// checked on the result: a template is code from the model directory,
// trusted as its weights are, and one that loops over range(10**10) runs
// out of time or memory before it.
const MaxRenderBytes = 256 << 20

// Compile parses a chat template. bos and eos are the tokenizer's
// bos_token and eos_token texts ("" when it has none).
func Compile(src, bos, eos string) (tmpl *Template, err error) {
	defer func() {
		if r := recover(); r != nil { // the engine's, on a malformed template
			tmpl, err = nil, fmt.Errorf("chat template: %v", r)
		}
	}()
	if len(src) > MaxTemplateBytes {
		return nil, fmt.Errorf("chat template of %d bytes, limit %d", len(src), MaxTemplateBytes)
	}
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	return &Template{t: t, bos: bos, eos: eos}, nil
}

// Render returns the template's text for msgs, ending with the assistant's
// header when addGenerationPrompt (and the template honours it).
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat template: %v", r)
		}
	}()
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	ctx := map[string]any{
		"messages":              list,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.bos,
		"eos_token":             t.eos,
	}
	s, err := t.t.Render(ctx)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	if len(s) > MaxRenderBytes {
		return "", fmt.Errorf("chat template rendered %d bytes, limit %d", len(s), MaxRenderBytes)
	}
	return s, nil
}

// Span is a byte range [Start, End) of a rendered conversation.
type Span struct{ Start, End int }

// Spans renders msgs (no generation prompt) and returns the text with the
// byte ranges of the assistant's replies (see the package comment), in
// order. specials are the tokenizer's special-token texts.
func (t *Template) Spans(msgs []Message, specials []string) (string, []Span, error) {
	text, err := t.Render(msgs, false)
	if err != nil {
		return "", nil, err
	}
	var spans []Span
	end := 0
	for k, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		lo, hi := len(text), 0
		for _, stand := range []string{"\x01", "\x02"} {
			alt := append([]Message(nil), msgs...)
			alt[k].Content = stand
			r, err := t.Render(alt, false)
			if err != nil {
				return "", nil, fmt.Errorf("messages[%d] with its content replaced: %w", k, err)
			}
			p := commonPrefix(text, r)
			s := commonSuffix(text[p:], r[p:])
			lo, hi = min(lo, p), max(hi, len(text)-s)
		}
		if hi < lo { // the content rendered to nothing (empty, or dropped)
			hi = lo
		}
		if hi > lo {
			hi += endOfTurn(text[hi:], specials)
		}
		if lo < end {
			return "", nil, fmt.Errorf("messages[%d] (assistant): its reply at bytes [%d,%d) overlaps the previous one, ending at %d", k, lo, hi, end)
		}
		if hi > lo {
			spans = append(spans, Span{lo, hi})
			end = hi
		}
	}
	return text, spans, nil
}

// endOfTurn is the length of the white space and special token that
// follow a reply in rest, or 0 when rest does not go on with a special
// token after white space.
func endOfTurn(rest string, specials []string) int {
	ws := len(rest) - len(strings.TrimLeftFunc(rest, unicode.IsSpace))
	best := 0
	for _, sp := range specials {
		if sp != "" && strings.HasPrefix(rest[ws:], sp) && len(sp) > best {
			best = len(sp)
		}
	}
	if best == 0 {
		return 0
	}
	return ws + best
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

func commonSuffix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[len(a)-1-i] == b[len(b)-1-i] {
		i++
	}
	return i
}
