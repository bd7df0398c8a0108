package bpe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"qat/data/atomic"
)

// byteToRune is GPT-2's bytes_to_unicode: printable Latin-1 bytes map to
// themselves, the rest to U+0100 upwards, so every token is a printable
// string in tokenizer.json.
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF) {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()

func toUnicode(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		sb.WriteRune(byteToRune[s[i]])
	}
	return sb.String()
}

func fromUnicode(s string) (string, bool) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		c, ok := runeToByte[r]
		if !ok {
			return "", false
		}
		b = append(b, c)
	}
	return string(b), true
}

type addedToken struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type byteLevel struct {
	Type           string `json:"type"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	TrimOffsets    bool   `json:"trim_offsets"`
	UseRegex       bool   `json:"use_regex"`
}

type bpeModel struct {
	Type                    string           `json:"type"`
	Dropout                 *float64         `json:"dropout"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	FuseUnk                 bool             `json:"fuse_unk"`
	ByteFallback            bool             `json:"byte_fallback"`
	Vocab                   map[string]int32 `json:"vocab"`
	Merges                  []string         `json:"merges"`
}

type fileJSON struct {
	Version       string       `json:"version"`
	Truncation    any          `json:"truncation"`
	Padding       any          `json:"padding"`
	AddedTokens   []addedToken `json:"added_tokens"`
	Normalizer    any          `json:"normalizer"`
	PreTokenizer  *byteLevel   `json:"pre_tokenizer"`
	PostProcessor any          `json:"post_processor"`
	Decoder       *byteLevel   `json:"decoder"`
	Model         bpeModel     `json:"model"`
}

// MarshalJSON writes the Hugging Face tokenizer.json form.
func (t *Tokenizer) MarshalJSON() ([]byte, error) {
	if t.conf.tokJSON != nil {
		// an imported tokenizer is its file as read: the fields below
		// describe only qat's own byte-ordered BPE
		return t.conf.tokJSON, nil
	}
	f := fileJSON{
		Version:      "1.0",
		PreTokenizer: &byteLevel{Type: "ByteLevel", TrimOffsets: true, UseRegex: true},
		Decoder:      &byteLevel{Type: "ByteLevel", TrimOffsets: true, UseRegex: true},
		Model:        bpeModel{Type: "BPE", Vocab: map[string]int32{}, Merges: []string{}},
	}
	nBase := 256 + len(t.Merges)
	for id := 0; id < nBase; id++ {
		f.Model.Vocab[toUnicode(t.Tokens[id])] = int32(id)
	}
	for _, m := range t.Merges {
		f.Model.Merges = append(f.Model.Merges, toUnicode(t.Tokens[m[0]])+" "+toUnicode(t.Tokens[m[1]]))
	}
	names := make([]string, 0, len(t.Special))
	for s := range t.Special {
		names = append(names, s)
	}
	sort.Slice(names, func(i, j int) bool { return t.Special[names[i]] < t.Special[names[j]] })
	for _, s := range names {
		f.Model.Vocab[s] = t.Special[s]
		f.AddedTokens = append(f.AddedTokens, addedToken{ID: t.Special[s], Content: s, Special: true})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<|bos|>", not "\u003c|bos|\u003e"
	enc.SetIndent("", " ")
	err := enc.Encode(f)
	return buf.Bytes(), err
}

// parseOwn reads qat's own tokenizer.json (see isOwn): model type BPE with
// byte-level tokens in byte order, at most MaxVocab of them, with the
// special tokens BOS and EOS among its added_tokens.
func parseOwn(f *fileJSON) (*Tokenizer, error) {
	if f.Model.Type != "BPE" {
		return nil, fmt.Errorf("tokenizer.json: model.type %q, want BPE", f.Model.Type)
	}
	if f.PreTokenizer != nil && f.PreTokenizer.Type != "ByteLevel" {
		return nil, fmt.Errorf("tokenizer.json: pre_tokenizer.type %q, want ByteLevel", f.PreTokenizer.Type)
	}
	if len(f.Model.Vocab) > MaxVocab || len(f.AddedTokens) > MaxVocab || len(f.Model.Merges) > MaxVocab {
		return nil, fmt.Errorf("tokenizer.json: model.vocab of %d, added_tokens of %d, model.merges of %d: the limit is %d",
			len(f.Model.Vocab), len(f.AddedTokens), len(f.Model.Merges), MaxVocab)
	}
	n := len(f.Model.Vocab)
	for _, a := range f.AddedTokens {
		if _, ok := f.Model.Vocab[a.Content]; !ok {
			n++
		}
	}
	if n < 256 || n > MaxVocab {
		return nil, fmt.Errorf("tokenizer.json: %d tokens, want 256 to %d", n, MaxVocab)
	}
	t := &Tokenizer{Tokens: make([]string, n), Special: map[string]int32{}}
	filled := make([]bool, n)
	set := func(id int32, tok string) error {
		if id < 0 || int(id) >= n {
			return fmt.Errorf("tokenizer.json: id %d of %q outside 0..%d", id, tok, n-1)
		}
		if filled[id] && t.Tokens[id] != tok {
			return fmt.Errorf("tokenizer.json: id %d used by %q and %q", id, t.Tokens[id], tok)
		}
		t.Tokens[id], filled[id] = tok, true
		return nil
	}
	special := map[string]bool{}
	for _, a := range f.AddedTokens {
		special[a.Content] = true
		if err := set(a.ID, a.Content); err != nil {
			return nil, fmt.Errorf("%w (added_tokens)", err)
		}
		t.Special[a.Content] = a.ID
	}
	for _, s := range []string{BOS, EOS} {
		if _, ok := t.Special[s]; !ok {
			return nil, fmt.Errorf("tokenizer.json: added_tokens has no %s (documents are %s text %s)", s, BOS, EOS)
		}
	}
	byID := map[string]int32{}
	for tok, id := range f.Model.Vocab {
		if special[tok] {
			continue
		}
		raw, ok := fromUnicode(tok)
		if !ok {
			return nil, fmt.Errorf("tokenizer.json: token %q is not byte-level", tok)
		}
		if err := set(id, raw); err != nil {
			return nil, fmt.Errorf("%w (model.vocab)", err)
		}
		byID[raw] = id
	}
	// Byte tokens must be ids 0..255 in byte order, as Train writes them;
	// Encode relies on it.
	for c := 0; c < 256; c++ {
		if id, ok := byID[string([]byte{byte(c)})]; !ok || id != int32(c) {
			return nil, fmt.Errorf("tokenizer.json: byte 0x%02x must be token %d", c, c)
		}
	}
	for r, m := range f.Model.Merges {
		parts := strings.Split(m, " ")
		if len(parts) != 2 {
			return nil, fmt.Errorf("tokenizer.json: merge %d %q is not two tokens", r, m)
		}
		a, okA := fromUnicode(parts[0])
		b, okB := fromUnicode(parts[1])
		ia, inA := byID[a]
		ib, inB := byID[b]
		if !okA || !okB || !inA || !inB {
			return nil, fmt.Errorf("tokenizer.json: merge %d %q names an unknown token", r, m)
		}
		if id, ok := byID[a+b]; !ok || id != int32(256+r) {
			return nil, fmt.Errorf("tokenizer.json: merge %d %q must produce token %d", r, m, 256+r)
		}
		t.Merges = append(t.Merges, [2]int32{ia, ib})
	}
	for id, ok := range filled {
		if !ok {
			return nil, fmt.Errorf("tokenizer.json: no token has id %d", id)
		}
		if id >= 256+len(t.Merges) && !special[t.Tokens[id]] {
			return nil, fmt.Errorf("tokenizer.json: token %d %q comes after the merges but is not special", id, t.Tokens[id])
		}
	}
	t.index()
	return t, nil
}

// Save writes tokenizer.json to path.
func (t *Tokenizer) Save(path string) error {
	b, err := t.MarshalJSON()
	if err != nil {
		return err
	}
	return atomic.WriteFile(path, b)
}
