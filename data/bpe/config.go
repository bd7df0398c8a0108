package bpe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"qat/data/atomic"
)

// InputError is a tokenizer file that cannot be used: the CLI reports it
// as the user's to fix (exit status 2).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// BadInput marks the error as the user's to fix.
func (e *InputError) BadInput() {}

func bad(err error) error {
	if err == nil {
		return nil
	}
	var ie *InputError
	if errors.As(err, &ie) {
		return err
	}
	return &InputError{err}
}

// config is what tokenizer_config.json and generation_config.json say
// around tokenizer.json.
type config struct {
	set                    bool // roles come from here, not from Special
	bos, eos, pad          int32
	hasBOS, hasEOS, hasPad bool
	bosTok, eosTok         string
	stop                   []int32
	chatTemplate           string
	templateFile           bool   // chat_template.jinja, not tokenizer_config.json
	tokJSON, tokConfig     []byte // the files as read, for WriteFiles
	genConfig              []byte
}

// maxConfig bounds tokenizer_config.json and generation_config.json (real
// ones are under 100 kB; Llama 3's chat template is the largest part).
const maxConfig = 16 << 20

// maxTokenizerJSON bounds tokenizer.json (Qwen3's is 11 MB).
const maxTokenizerJSON = 256 << 20

// Parse reads tokenizer.json bytes: qat's own format (byte-level BPE with
// <|bos|>/<|eos|> added tokens, as Train writes it), or a Hugging Face
// file of model type BPE, whose bos/eos come from its configs (Load,
// LoadDir) or SetRole. Errors name the field; nothing in the file can make
// it panic.
func Parse(b []byte) (*Tokenizer, error) {
	t, err := parse(b)
	return t, bad(err)
}

func parse(b []byte) (*Tokenizer, error) {
	if len(b) > maxTokenizerJSON {
		return nil, fmt.Errorf("tokenizer.json: %d bytes, at most %d", len(b), maxTokenizerJSON)
	}
	if err := checkJSONDepth(b, 64); err != nil {
		return nil, err
	}
	var head struct {
		AddedTokens []struct {
			Content string `json:"content"`
		} `json:"added_tokens"`
		Normalizer    json.RawMessage `json:"normalizer"`
		PreTokenizer  component       `json:"pre_tokenizer"`
		PostProcessor json.RawMessage `json:"post_processor"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	var bos, eos bool
	for _, a := range head.AddedTokens {
		bos = bos || a.Content == BOS
		eos = eos || a.Content == EOS
	}
	null := func(r json.RawMessage) bool { return len(r) == 0 || string(r) == "null" }
	// qat's own files: what Train and MarshalJSON write. They keep their
	// own parser, whose encoding is the one existing runs were prepared
	// with.
	if bos && eos && null(head.Normalizer) && null(head.PostProcessor) && (head.PreTokenizer == nil || head.PreTokenizer.typ() == "ByteLevel") {
		var f fileJSON
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("tokenizer.json: %w", err)
		}
		return parseOwn(&f)
	}
	t, err := parseHF(b)
	if err != nil {
		return nil, err
	}
	t.conf.tokJSON = b
	return t, nil
}

// Load reads a tokenizer.json file, and tokenizer_config.json,
// generation_config.json and chat_template.jinja beside it when present.
func Load(path string) (*Tokenizer, error) {
	t, err := load(path)
	return t, bad(err)
}

func load(path string) (*Tokenizer, error) {
	b, err := readBounded(path, maxTokenizerJSON)
	if err != nil {
		return nil, err
	}
	t, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if t.hf == nil {
		return t, nil
	}
	if err := t.readConfigs(dir); err != nil {
		return nil, err
	}
	return t, nil
}

// LoadDir reads a Hugging Face tokenizer directory: tokenizer.json,
// tokenizer_config.json, and generation_config.json and
// chat_template.jinja when present.
func LoadDir(dir string) (*Tokenizer, error) {
	return Load(filepath.Join(dir, "tokenizer.json"))
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, at most %d", path, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// tokenText reads a special token setting: a string, an AddedToken object
// ({"content": ...}) or null.
func tokenText(raw json.RawMessage) (string, bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true, nil
	}
	var o struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &o); err != nil || o.Content == nil {
		return "", false, fmt.Errorf("want a string or an object with \"content\"")
	}
	return *o.Content, true, nil
}

// tokenID is the id of a token's text: an added token's, or the model
// vocabulary's.
func (t *Tokenizer) tokenID(s string) (int32, bool) {
	if t.hf != nil {
		return t.hf.vocabOrAdded(s)
	}
	id, ok := t.Special[s]
	return id, ok
}

func (t *Tokenizer) readConfigs(dir string) error {
	cpath := filepath.Join(dir, "tokenizer_config.json")
	cb, err := readBounded(cpath, maxConfig)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var tc struct {
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
		PAD          json.RawMessage `json:"pad_token"`
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if cb != nil {
		if err := json.Unmarshal(cb, &tc); err != nil {
			return fmt.Errorf("%s: %w", cpath, err)
		}
		t.conf.tokConfig = cb
		for _, f := range []struct {
			name string
			raw  json.RawMessage
			id   *int32
			has  *bool
			text *string
		}{{"bos_token", tc.BOS, &t.conf.bos, &t.conf.hasBOS, &t.conf.bosTok}, {"eos_token", tc.EOS, &t.conf.eos, &t.conf.hasEOS, &t.conf.eosTok},
			{"pad_token", tc.PAD, &t.conf.pad, &t.conf.hasPad, nil}} {
			s, ok, err := tokenText(f.raw)
			if err != nil {
				return fmt.Errorf("%s: %s: %v", cpath, f.name, err)
			}
			if !ok {
				continue
			}
			id, found := t.tokenID(s)
			if !found {
				return fmt.Errorf("%s: %s %q is not a token of tokenizer.json", cpath, f.name, s)
			}
			*f.id, *f.has = id, true
			if f.text != nil {
				*f.text = s
			}
		}
		if err := t.readChatTemplate(tc.ChatTemplate, cpath); err != nil {
			return err
		}
	}
	jpath := filepath.Join(dir, "chat_template.jinja")
	if jb, err := readBounded(jpath, maxConfig); err == nil {
		if t.conf.chatTemplate == "" {
			t.conf.chatTemplate, t.conf.templateFile = string(jb), true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	gpath := filepath.Join(dir, "generation_config.json")
	gb, err := readBounded(gpath, maxConfig)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if gb != nil {
		var gc struct {
			BOS json.RawMessage `json:"bos_token_id"`
			EOS json.RawMessage `json:"eos_token_id"`
			PAD json.RawMessage `json:"pad_token_id"`
		}
		if err := json.Unmarshal(gb, &gc); err != nil {
			return fmt.Errorf("%s: %w", gpath, err)
		}
		t.conf.genConfig = gb
		ids := func(name string, raw json.RawMessage) ([]int32, error) {
			raw = bytes.TrimSpace(raw)
			if len(raw) == 0 || string(raw) == "null" {
				return nil, nil
			}
			var one int64
			var list []int64
			if err := json.Unmarshal(raw, &one); err == nil {
				list = []int64{one}
			} else if err := json.Unmarshal(raw, &list); err != nil {
				return nil, fmt.Errorf("%s: %s: want an id or a list of ids", gpath, name)
			}
			if len(list) > 1024 {
				return nil, fmt.Errorf("%s: %s: %d ids, at most 1024", gpath, name, len(list))
			}
			out := make([]int32, len(list))
			for i, v := range list {
				if v < 0 || v >= int64(len(t.Tokens)) {
					return nil, fmt.Errorf("%s: %s: id %d outside the vocabulary of %d", gpath, name, v, len(t.Tokens))
				}
				out[i] = int32(v)
			}
			return out, nil
		}
		bos, err := ids("bos_token_id", gc.BOS)
		if err != nil {
			return err
		}
		eos, err := ids("eos_token_id", gc.EOS)
		if err != nil {
			return err
		}
		pad, err := ids("pad_token_id", gc.PAD)
		if err != nil {
			return err
		}
		if len(bos) > 0 && !t.conf.hasBOS {
			t.conf.bos, t.conf.hasBOS, t.conf.bosTok = bos[0], true, t.hf.idTok[bos[0]]
		}
		if len(eos) > 0 && !t.conf.hasEOS {
			t.conf.eos, t.conf.hasEOS, t.conf.eosTok = eos[0], true, t.hf.idTok[eos[0]]
		}
		if len(pad) > 0 && !t.conf.hasPad {
			t.conf.pad, t.conf.hasPad = pad[0], true
		}
		t.conf.stop = eos
	}
	t.conf.set = true
	return nil
}

func (t *Tokenizer) readChatTemplate(raw json.RawMessage, path string) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		t.conf.chatTemplate = s
		return nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &named); err != nil {
		return fmt.Errorf("%s: chat_template: want a string or a list of {name, template}", path)
	}
	for _, n := range named {
		if n.Name == "default" {
			t.conf.chatTemplate = n.Template
			return nil
		}
	}
	return fmt.Errorf("%s: chat_template: %d named templates, none named \"default\"", path, len(named))
}

// SetRole makes the token whose text is token the tokenizer's BOS, EOS or
// PAD (role is bpe.BOS, bpe.EOS or bpe.PAD), for a tokenizer.json parsed
// without its configs.
func (t *Tokenizer) SetRole(role, token string) error {
	id, ok := t.tokenID(token)
	if !ok {
		return fmt.Errorf("bpe: %q is not a token", token)
	}
	switch role {
	case BOS:
		t.conf.bos, t.conf.hasBOS, t.conf.bosTok = id, true, token
	case EOS:
		t.conf.eos, t.conf.hasEOS, t.conf.eosTok = id, true, token
	case PAD:
		t.conf.pad, t.conf.hasPad = id, true
	default:
		return fmt.Errorf("bpe: role %q, want %s, %s or %s", role, BOS, EOS, PAD)
	}
	t.conf.set = true
	return nil
}

func (t *Tokenizer) role(name string, id int32, has bool, key string) (int32, error) {
	if has {
		return id, nil
	}
	if t.hf == nil {
		if id, ok := t.Special[name]; ok {
			if id < 0 || int(id) >= len(t.Tokens) {
				return 0, fmt.Errorf("bpe: special token %s has id %d outside the vocabulary of %d", name, id, len(t.Tokens))
			}
			return id, nil
		}
		return 0, fmt.Errorf("bpe: tokenizer has no special token %s", name)
	}
	return 0, bad(fmt.Errorf("bpe: the tokenizer has no %s (tokenizer_config.json %s or generation_config.json %s_id)", name, key, key))
}

// BOS is the id of the beginning-of-sequence token.
func (t *Tokenizer) BOS() (int32, error) { return t.role(BOS, t.conf.bos, t.conf.hasBOS, "bos_token") }

// EOS is the id of the end-of-sequence token.
func (t *Tokenizer) EOS() (int32, error) { return t.role(EOS, t.conf.eos, t.conf.hasEOS, "eos_token") }

// PAD is the id of the padding token.
func (t *Tokenizer) PAD() (int32, error) { return t.role(PAD, t.conf.pad, t.conf.hasPad, "pad_token") }

// StopIDs are the ids that end generation: generation_config.json's
// eos_token_id list and EOS.
func (t *Tokenizer) StopIDs() []int32 {
	out := append([]int32(nil), t.conf.stop...)
	if eos, err := t.EOS(); err == nil {
		found := false
		for _, id := range out {
			found = found || id == eos
		}
		if !found {
			out = append(out, eos)
		}
	}
	return out
}

// BOSToken is the text of BOS ("" when there is none).
func (t *Tokenizer) BOSToken() string {
	if t.conf.hasBOS {
		return t.conf.bosTok
	}
	if id, err := t.BOS(); err == nil {
		return t.Tokens[id]
	}
	return ""
}

// EOSToken is the text of EOS ("" when there is none).
func (t *Tokenizer) EOSToken() string {
	if t.conf.hasEOS {
		return t.conf.eosTok
	}
	if id, err := t.EOS(); err == nil {
		return t.Tokens[id]
	}
	return ""
}

// ChatTemplate is tokenizer_config.json's chat_template (the one named
// "default" of a list), or chat_template.jinja's; "" when there is none.
func (t *Tokenizer) ChatTemplate() string { return t.conf.chatTemplate }

// AddsBOS says whether EncodeSpecial puts BOS first (the post-processor
// does). qat's own tokenizers have no post-processor: the caller adds BOS.
func (t *Tokenizer) AddsBOS() bool {
	if t.hf == nil || len(t.hf.post) == 0 {
		return false
	}
	bos, err := t.BOS()
	return err == nil && t.hf.post[0] == bos
}

// EncodeSpecial appends the ids of text with the special tokens the
// post-processor adds (BOS for Llama), as Hugging Face's encode(text).
// For qat's own tokenizers it is Encode.
func (t *Tokenizer) EncodeSpecial(dst []int32, text string) []int32 {
	if t.hf == nil {
		return t.Encode(dst, text)
	}
	dst = append(dst, t.hf.post...)
	dst = t.hf.encode(dst, text)
	return append(dst, t.hf.postAfter...)
}

// WriteFiles writes tokenizer.json and tokenizer_config.json into dir
// (an imported tokenizer's files as they were read; chat_template.jinja
// too when the template came from one, and generation_config.json when
// one was read: its stop ids and the model's sampling defaults travel
// with every checkpoint and export).
func (t *Tokenizer) WriteFiles(dir string) error {
	tj := t.conf.tokJSON
	if tj == nil {
		var err error
		if tj, err = t.MarshalJSON(); err != nil {
			return err
		}
	}
	if err := atomic.WriteFile(filepath.Join(dir, "tokenizer.json"), tj); err != nil {
		return err
	}
	tc := t.conf.tokConfig
	if tc == nil {
		c := map[string]any{"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false}
		if s := t.BOSToken(); s != "" {
			c["bos_token"] = s
		}
		if s := t.EOSToken(); s != "" {
			c["eos_token"] = s
		}
		if id, err := t.PAD(); err == nil {
			c["pad_token"] = t.hfText(id)
		}
		if t.conf.chatTemplate != "" && !t.conf.templateFile {
			c["chat_template"] = t.conf.chatTemplate
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(c); err != nil {
			return err
		}
		tc = buf.Bytes()
	}
	if err := atomic.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tc); err != nil {
		return err
	}
	if t.conf.genConfig != nil {
		if err := atomic.WriteFile(filepath.Join(dir, "generation_config.json"), t.conf.genConfig); err != nil {
			return err
		}
	}
	if t.conf.templateFile {
		return atomic.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte(t.conf.chatTemplate))
	}
	return nil
}

// hfText is the tokenizer.json text of id.
func (t *Tokenizer) hfText(id int32) string {
	if t.hf != nil {
		return t.hf.idTok[id]
	}
	return t.Tokens[id]
}
