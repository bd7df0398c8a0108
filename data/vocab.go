package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"qat/data/bpe"
	"qat/data/chat"
)

// IgnoreTarget marks a target that does not count in the loss: the loader
// writes it where a token lies outside the assistant's replies. It equals
// layers.IgnoreIndex (data sits below layers, so a test checks they agree).
const IgnoreTarget = -100

// Vocab is what Prepare needs of a tokenizer.
type Vocab struct {
	// Encode appends the ids of text: special-token texts in it (a
	// template's <|eot_id|>) become their ids, no BOS or EOS is added.
	Encode func(dst []int32, text string) []int32
	// BOS and EOS frame each text document; -1 when the model has none
	// (Qwen3 has no BOS). Conversations get what their template writes.
	BOS, EOS int32
	Size     int
	// Specials are the special-token texts, longest first: a reply's span
	// takes the end-of-turn special that follows it.
	Specials []string
	// Template renders conversations; nil refuses them.
	Template *chat.Template
	// Files are written beside the shards: tokenizer.json (required; the
	// manifest records its SHA-256) and tokenizer_config.json.
	Files map[string][]byte
}

// MaxConfigBytes bounds a tokenizer_config.json or chat_template.jinja.
const MaxConfigBytes = 16 << 20

// NewVocab wraps a tokenizer: special-token texts in the text become their
// ids, as Hugging Face tokenizers do with added tokens. bos and eos are the texts of the tokens that frame a
// text document ("" for none); tmpl may be nil. tokJSON is tokenizer.json
// as written beside the shards, config the tokenizer_config.json (nil for
// none).
func NewVocab(tok *bpe.Tokenizer, bos, eos string, tmpl *chat.Template, tokJSON, config []byte) (*Vocab, error) {
	v := &Vocab{BOS: -1, EOS: -1, Size: tok.VocabSize(), Template: tmpl, Files: map[string][]byte{"tokenizer.json": tokJSON}}
	if config != nil {
		v.Files["tokenizer_config.json"] = config
	}
	for _, s := range []struct {
		text string
		id   *int32
	}{{bos, &v.BOS}, {eos, &v.EOS}} {
		if s.text == "" {
			continue
		}
		id, err := tok.SpecialID(s.text)
		if err != nil {
			return nil, inputErr("tokenizer: %v", err)
		}
		*s.id = id
	}
	ids := map[string]int32{}
	for text, id := range tok.Special {
		if text != "" {
			ids[text] = id
			v.Specials = append(v.Specials, text)
		}
	}
	sort.Slice(v.Specials, func(i, j int) bool {
		a, b := v.Specials[i], v.Specials[j]
		return len(a) > len(b) || len(a) == len(b) && a < b
	})
	// An imported tokenizer matches its added tokens in the text itself
	// (with their lstrip/rstrip rules, as Hugging Face does); qat's own
	// encode them as text, so for those they are split out here.
	native := true
	for text, id := range ids {
		if e := tok.Encode(nil, text); len(e) != 1 || e[0] != id {
			native = false
		}
	}
	if native {
		v.Encode = tok.Encode
		return v, nil
	}
	specials := v.Specials
	v.Encode = func(dst []int32, text string) []int32 {
		for text != "" {
			at, sp := len(text), ""
			for _, s := range specials { // longest first: the longest wins at a position
				if i := strings.Index(text[:min(len(text), at+len(s))], s); i >= 0 && i < at {
					at, sp = i, s
				}
			}
			dst = tok.Encode(dst, text[:at])
			if sp == "" {
				break
			}
			dst = append(dst, ids[sp])
			text = text[at+len(sp):]
		}
		return dst
	}
	return v, nil
}

// OwnVocab is the Vocab of a tokenizer qat trained: <|bos|> text <|eos|>
// documents, no chat template.
func OwnVocab(tok *bpe.Tokenizer) (*Vocab, error) {
	tj, err := tok.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return NewVocab(tok, bpe.BOS, bpe.EOS, nil, tj, nil)
}

// TokenizerConfig is what Prepare reads of a Hugging Face tokenizer
// directory's tokenizer_config.json.
type TokenizerConfig struct {
	BOS, EOS     string // bos_token, eos_token texts ("" when null)
	ChatTemplate string // chat_template (or chat_template.jinja beside it)
	Raw          []byte
}

// ReadTokenizerConfig reads dir/tokenizer_config.json: bos_token and
// eos_token (a string, an {"content": ...} object, or null) and the chat
// template: chat_template.jinja when the directory has one (transformers
// writes it there since 4.43), else chat_template (a string, or a list of
// {name, template} of which "default" is taken). Errors name the file and
// the field.
func ReadTokenizerConfig(dir string) (*TokenizerConfig, error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	b, err := readBounded(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, inputErr("%v", err)
	}
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return nil, inputErr("%s: not a JSON object: %v", path, err)
	}
	c := &TokenizerConfig{Raw: b}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"bos_token", &c.BOS}, {"eos_token", &c.EOS}} {
		v, ok := raw[f.name]
		if !ok || string(v) == "null" {
			continue
		}
		if json.Unmarshal(v, f.dst) == nil {
			continue
		}
		var obj struct {
			Content *string `json:"content"`
		}
		if json.Unmarshal(v, &obj) != nil || obj.Content == nil {
			return nil, inputErr("%s: %s: %s is not a string or {\"content\": string}", path, f.name, clip(v))
		}
		*f.dst = *obj.Content
	}
	jinja := filepath.Join(dir, "chat_template.jinja")
	if t, err := readBounded(jinja); err == nil {
		c.ChatTemplate = string(t)
		return c, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if v, ok := raw["chat_template"]; ok && string(v) != "null" {
		if json.Unmarshal(v, &c.ChatTemplate) != nil {
			var list []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if json.Unmarshal(v, &list) != nil {
				return nil, inputErr("%s: chat_template: %s is not a string or a list of {name, template}", path, clip(v))
			}
			for _, t := range list {
				if t.Name == "default" {
					c.ChatTemplate = t.Template
				}
			}
			if c.ChatTemplate == "" {
				return nil, inputErr("%s: chat_template: no template named \"default\" among %d", path, len(list))
			}
		}
	}
	return c, nil
}

// readBounded reads a file of at most MaxConfigBytes; a missing file's
// error wraps os.ErrNotExist.
func readBounded(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, inputErr("%v", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, MaxConfigBytes+1))
	if err != nil {
		return nil, inputErr("%s: %v", path, err)
	}
	if len(b) > MaxConfigBytes {
		return nil, inputErr("%s: over %d bytes", path, MaxConfigBytes)
	}
	return b, nil
}

// String names the vocabulary's framing for messages.
func (v *Vocab) String() string {
	return fmt.Sprintf("%d tokens, bos %d, eos %d, chat template %t", v.Size, v.BOS, v.EOS, v.Template != nil)
}
