package bpe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// hfTokenizer is a Hugging Face tokenizer.json of model type BPE: the
// pipeline the tokenizers library runs (added tokens, normalizer,
// pre-tokenizer, model, post-processor; decoder), built once by parseHF.
type hfTokenizer struct {
	vocab     map[string]int32 // model.vocab
	idTok     []string         // id -> token text (model vocab, then added tokens over it)
	added     []addedTok       // added_tokens, in file order
	special   []bool           // id -> an added token marked special
	isAdded   []bool           // id -> an added token
	addedAt   map[int32]int    // id -> index in added
	addedText map[string]int32 // content -> id

	raw, normed *matcher // added tokens matched in the text / in normalized text
	norm        normalizer
	pre         []preTokenizer
	post        []int32 // ids the post-processor puts before the text
	postAfter   []int32 // and after it
	dec         []decoder

	// the BPE model
	merges       map[uint64]merge
	byteFallback bool
	byteIDs      [256]int32 // <0x00>..<0xFF>, -1 where missing
	unk          int32      // -1: none
	fuseUnk      bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix

	cache map[string][]int32
}

type merge struct{ rank, id int32 }

type addedTok struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

func (h *hfTokenizer) isSpecial(id int32) bool {
	return id >= 0 && int(id) < len(h.special) && h.special[id]
}

// maxDepth bounds the nesting of Sequence components: real files nest
// one level, and a hostile file must not recurse without end.
const maxDepth = 8

// maxPattern bounds a regex or literal pattern (the longest real one,
// Llama 3's pre-tokenizer, is under 200 bytes).
const maxPattern = 4096

// component is one normalizer/pre_tokenizer/decoder/post_processor
// object: its type and its fields, decoded on demand.
type component map[string]json.RawMessage

func (c component) typ() string {
	var s string
	if err := json.Unmarshal(c["type"], &s); err != nil {
		return ""
	}
	return s
}

// get decodes field name into v; a missing or null field leaves v.
func (c component) get(path, name string, v any) error {
	raw, ok := c[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("tokenizer.json: %s.%s: %v", path, name, err)
	}
	return nil
}

func (c component) list(path, name string) ([]component, error) {
	var out []component
	if err := c.get(path, name, &out); err != nil {
		return nil, err
	}
	if len(out) > 64 {
		return nil, fmt.Errorf("tokenizer.json: %s.%s: %d entries, at most 64", path, name, len(out))
	}
	return out, nil
}

func unsupported(path, typ string) error {
	return fmt.Errorf("tokenizer.json: %s.type %q not supported", path, typ)
}

type hfFile struct {
	AddedTokens   []addedTok      `json:"added_tokens"`
	Normalizer    component       `json:"normalizer"`
	PreTokenizer  component       `json:"pre_tokenizer"`
	PostProcessor component       `json:"post_processor"`
	Decoder       component       `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type hfModel struct {
	Type                    string           `json:"type"`
	Dropout                 *float64         `json:"dropout"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	FuseUnk                 bool             `json:"fuse_unk"`
	ByteFallback            bool             `json:"byte_fallback"`
	IgnoreMerges            bool             `json:"ignore_merges"`
	Vocab                   map[string]int32 `json:"vocab"`
	Merges                  json.RawMessage  `json:"merges"`
}

// parseHF builds the tokenizer of a Hugging Face tokenizer.json.
func parseHF(b []byte) (*Tokenizer, error) {
	var f hfFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	var m hfModel
	if len(f.Model) == 0 || string(f.Model) == "null" {
		return nil, fmt.Errorf("tokenizer.json: no model")
	}
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, fmt.Errorf("tokenizer.json: model: %w", err)
	}
	if m.Type != "BPE" && m.Type != "" {
		return nil, fmt.Errorf("tokenizer.json: model.type %q not supported (only BPE)", m.Type)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return nil, fmt.Errorf("tokenizer.json: model.dropout %v: only 0 or null (encoding must be deterministic)", *m.Dropout)
	}
	if len(m.Vocab) > MaxVocab || len(f.AddedTokens) > MaxVocab {
		return nil, fmt.Errorf("tokenizer.json: model.vocab of %d and added_tokens of %d: the limit is %d", len(m.Vocab), len(f.AddedTokens), MaxVocab)
	}
	if len(m.Vocab) == 0 {
		return nil, fmt.Errorf("tokenizer.json: model.vocab is empty")
	}
	h := &hfTokenizer{vocab: m.Vocab, unk: -1, fuseUnk: m.FuseUnk, byteFallback: m.ByteFallback, ignoreMerges: m.IgnoreMerges,
		cache: map[string][]int32{}}
	if m.ContinuingSubwordPrefix != nil {
		h.prefix = *m.ContinuingSubwordPrefix
	}
	if m.EndOfWordSuffix != nil {
		h.suffix = *m.EndOfWordSuffix
	}
	// Ids: the vocabulary's and the added tokens', each below MaxVocab, so
	// the id table is bounded before it is allocated.
	n := 0
	for tok, id := range m.Vocab {
		if id < 0 || id >= MaxVocab {
			return nil, fmt.Errorf("tokenizer.json: model.vocab[%q] id %d outside 0..%d", tok, id, MaxVocab-1)
		}
		n = max(n, int(id)+1)
	}
	for i, a := range f.AddedTokens {
		if a.ID < 0 || a.ID >= MaxVocab {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d].id %d outside 0..%d", i, a.ID, MaxVocab-1)
		}
		if a.Content == "" {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d].content is empty", i)
		}
		n = max(n, int(a.ID)+1)
	}
	h.idTok = make([]string, n)
	has := make([]bool, n)
	for tok, id := range m.Vocab {
		if has[id] {
			a, b := h.idTok[id], tok
			if a > b {
				a, b = b, a
			}
			return nil, fmt.Errorf("tokenizer.json: model.vocab: id %d is both %q and %q", id, a, b)
		}
		h.idTok[id], has[id] = tok, true
	}
	h.special = make([]bool, n)
	h.isAdded = make([]bool, n)
	seenAdded := map[string]int{}
	for i, a := range f.AddedTokens {
		if has[a.ID] && h.idTok[a.ID] != a.Content {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d] %q has id %d, which is %q", i, a.Content, a.ID, h.idTok[a.ID])
		}
		if j, dup := seenAdded[a.Content]; dup {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d] and [%d] are both %q", j, i, a.Content)
		}
		seenAdded[a.Content] = i
		if vid, ok := m.Vocab[a.Content]; ok && vid != a.ID {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d] %q has id %d, model.vocab %d", i, a.Content, a.ID, vid)
		}
		h.idTok[a.ID], has[a.ID] = a.Content, true
		h.special[a.ID] = a.Special
		h.isAdded[a.ID] = true
	}
	h.added = f.AddedTokens
	h.addedAt = make(map[int32]int, len(h.added))
	h.addedText = make(map[string]int32, len(h.added))
	for i, a := range h.added {
		if _, dup := h.addedAt[a.ID]; dup {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d] %q: id %d is taken by another added token", i, a.Content, a.ID)
		}
		h.addedAt[a.ID] = i
		h.addedText[a.Content] = a.ID
	}
	for id, ok := range has {
		if !ok {
			// Holes are legal in Hugging Face files (the id decodes to
			// nothing); a real file has none, so name it rather than guess.
			return nil, fmt.Errorf("tokenizer.json: no token has id %d (ids run to %d)", id, n-1)
		}
	}
	if m.UnkToken != nil {
		id, ok := m.Vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("tokenizer.json: model.unk_token %q is not in model.vocab", *m.UnkToken)
		}
		h.unk = id
	}
	for c := 0; c < 256; c++ {
		h.byteIDs[c] = -1
		if id, ok := m.Vocab[fmt.Sprintf("<0x%02X>", c)]; ok {
			h.byteIDs[c] = id
		}
	}
	t := &Tokenizer{Special: map[string]int32{}, hf: h}
	if err := h.parseMerges(t, m.Merges, len(m.Vocab)); err != nil {
		return nil, err
	}
	var err error
	if h.norm, err = parseNormalizer(f.Normalizer, "normalizer", 0); err != nil {
		return nil, err
	}
	if h.pre, err = parsePreTokenizer(f.PreTokenizer, "pre_tokenizer", 0); err != nil {
		return nil, err
	}
	if err = h.parsePost(f.PostProcessor, "post_processor", 0); err != nil {
		return nil, err
	}
	if h.dec, err = parseDecoder(f.Decoder, "decoder", 0); err != nil {
		return nil, err
	}
	var rawToks, normToks []string
	for _, a := range h.added {
		if a.Normalized && h.norm != nil {
			normToks = append(normToks, h.norm(a.Content))
		} else {
			rawToks = append(rawToks, a.Content)
		}
	}
	h.raw = newMatcher(h, rawToks, false)
	h.normed = newMatcher(h, normToks, true)
	t.Tokens = make([]string, n)
	for id := range n {
		t.Tokens[id] = h.tokenBytes(int32(id))
		if h.special[id] {
			t.Special[h.idTok[id]] = int32(id)
		}
	}
	return t, nil
}

// parseMerges reads model.merges, strings "a b" or pairs ["a", "b"], into
// the pair -> (rank, merged id) table.
func (h *hfTokenizer) parseMerges(t *Tokenizer, raw json.RawMessage, nVocab int) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var pairs [][2]string
	body := bytes.TrimSpace(bytes.TrimPrefix(raw, []byte("[")))
	if len(body) > 0 && body[0] == '"' {
		var ss []string
		if err := json.Unmarshal(raw, &ss); err != nil {
			return fmt.Errorf("tokenizer.json: model.merges: %v", err)
		}
		if len(ss) > MaxVocab {
			return fmt.Errorf("tokenizer.json: model.merges: %d, the limit is %d", len(ss), MaxVocab)
		}
		pairs = make([][2]string, len(ss))
		for i, s := range ss {
			a, b, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(b, " ") {
				return fmt.Errorf("tokenizer.json: model.merges[%d] %q is not two tokens", i, s)
			}
			pairs[i] = [2]string{a, b}
		}
	} else {
		var ps [][]string
		if err := json.Unmarshal(raw, &ps); err != nil {
			return fmt.Errorf("tokenizer.json: model.merges: %v", err)
		}
		if len(ps) > MaxVocab {
			return fmt.Errorf("tokenizer.json: model.merges: %d, the limit is %d", len(ps), MaxVocab)
		}
		pairs = make([][2]string, len(ps))
		for i, p := range ps {
			if len(p) != 2 {
				return fmt.Errorf("tokenizer.json: model.merges[%d] has %d tokens, want 2", i, len(p))
			}
			pairs[i] = [2]string{p[0], p[1]}
		}
	}
	h.merges = make(map[uint64]merge, len(pairs))
	t.Merges = make([][2]int32, 0, len(pairs))
	for r, p := range pairs {
		a, okA := h.vocab[p[0]]
		b, okB := h.vocab[p[1]]
		if !okA || !okB {
			return fmt.Errorf("tokenizer.json: model.merges[%d] %q %q names a token not in model.vocab", r, p[0], p[1])
		}
		right := p[1]
		if len(h.prefix) > 0 && strings.HasPrefix(right, h.prefix) {
			right = right[len(h.prefix):]
		}
		id, ok := h.vocab[p[0]+right]
		if !ok {
			return fmt.Errorf("tokenizer.json: model.merges[%d] %q %q makes %q, which is not in model.vocab", r, p[0], p[1], p[0]+right)
		}
		k := pairKey(a, b)
		if _, dup := h.merges[k]; dup {
			continue // the first (lowest) rank wins, as in the tokenizers library
		}
		h.merges[k] = merge{int32(r), id}
		t.Merges = append(t.Merges, [2]int32{a, b})
	}
	return nil
}

// tokenBytes is what id contributes to a decoded text in its middle: the
// decoder chain on the token alone, without the steps that only act at a
// text's start (Strip, Metaspace's leading space) or join tokens (Fuse).
func (h *hfTokenizer) tokenBytes(id int32) string {
	s := h.idTok[id]
	if h.isAdded[id] {
		return s
	}
	if h.byteFallback {
		if c, ok := byteToken(s); ok && h.byteIDs[c] == id {
			return string([]byte{c})
		}
	}
	for _, d := range h.dec {
		if _, ok := d.(byteLevelDecoder); ok {
			// the token's own bytes: a piece of a character is not U+FFFD
			return string(appendByteLevel(nil, s))
		}
	}
	toks := []string{s}
	for _, d := range h.dec {
		toks = d.apply(toks, h, true)
	}
	return strings.Join(toks, "")
}

// byteToken reports whether s is a byte-fallback token <0xXX>.
func byteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range s[3:5] {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | byte(c-'0')
		case 'A' <= c && c <= 'F':
			v = v<<4 | byte(c-'A'+10)
		case 'a' <= c && c <= 'f':
			v = v<<4 | byte(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// parsePost reads the post-processor: the special tokens it puts around a
// single text (TemplateProcessing's "single"), nothing for ByteLevel.
func (h *hfTokenizer) parsePost(c component, path string, depth int) error {
	if c == nil {
		return nil
	}
	if depth > maxDepth {
		return fmt.Errorf("tokenizer.json: %s: nested deeper than %d", path, maxDepth)
	}
	switch typ := c.typ(); typ {
	case "ByteLevel":
		return nil
	case "Sequence":
		ps, err := c.list(path, "processors")
		if err != nil {
			return err
		}
		for i, p := range ps {
			if err := h.parsePost(p, fmt.Sprintf("%s.processors[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
		return nil
	case "TemplateProcessing":
		var single []map[string]struct {
			ID     string `json:"id"`
			TypeID int    `json:"type_id"`
		}
		var specials map[string]struct {
			ID  string  `json:"id"`
			IDs []int32 `json:"ids"`
		}
		if err := c.get(path, "single", &single); err != nil {
			return err
		}
		if err := c.get(path, "special_tokens", &specials); err != nil {
			return err
		}
		if len(single) > 64 {
			return fmt.Errorf("tokenizer.json: %s.single: %d pieces, at most 64", path, len(single))
		}
		seenSeq := false
		for i, p := range single {
			if s, ok := p["SpecialToken"]; ok {
				st, ok := specials[s.ID]
				if !ok {
					return fmt.Errorf("tokenizer.json: %s.single[%d] %q is not in special_tokens", path, i, s.ID)
				}
				for _, id := range st.IDs {
					if id < 0 || int(id) >= len(h.idTok) {
						return fmt.Errorf("tokenizer.json: %s.special_tokens[%q] id %d outside the vocabulary", path, s.ID, id)
					}
					if seenSeq {
						h.postAfter = append(h.postAfter, id)
					} else {
						h.post = append(h.post, id)
					}
				}
			} else if _, ok := p["Sequence"]; ok {
				seenSeq = true
			} else {
				return fmt.Errorf("tokenizer.json: %s.single[%d] is neither SpecialToken nor Sequence", path, i)
			}
		}
		return nil
	case "RobertaProcessing", "BertProcessing":
		var cls, sep []json.RawMessage
		if err := c.get(path, "cls", &cls); err != nil {
			return err
		}
		if err := c.get(path, "sep", &sep); err != nil {
			return err
		}
		id := func(field string, v []json.RawMessage) (int32, error) {
			var x int32
			if len(v) != 2 || json.Unmarshal(v[1], &x) != nil || x < 0 || int(x) >= len(h.idTok) {
				return 0, fmt.Errorf("tokenizer.json: %s.%s: want [token, id] with an id in the vocabulary", path, field)
			}
			return x, nil
		}
		a, err := id("cls", cls)
		if err != nil {
			return err
		}
		b, err := id("sep", sep)
		if err != nil {
			return err
		}
		h.post, h.postAfter = append(h.post, a), append(h.postAfter, b)
		return nil
	default:
		return unsupported(path, typ)
	}
}

// lossyUTF8 decodes b as text the way TextDecoder and Rust's
// from_utf8_lossy do: each maximal ill-formed subsequence becomes one
// U+FFFD.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r != utf8.RuneError || size > 1 {
			sb.Write(b[:size])
			b = b[size:]
			continue
		}
		sb.WriteRune(utf8.RuneError)
		b = b[maximalSubpart(b):]
	}
	return sb.String()
}

// maximalSubpart is the length of the ill-formed prefix of b that counts
// as one error: a lead byte and the continuation bytes that could still
// have completed it (Unicode's "maximal subpart" practice).
func maximalSubpart(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	i := 1
	for ; i <= need && i < len(b); i++ {
		if b[i] < lo || b[i] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	return i
}

// sortedAdded returns the added tokens' ids sorted, for callers that list
// them (GGUF export).
func (h *hfTokenizer) sortedAdded() []int32 {
	ids := make([]int32, 0, len(h.added))
	for _, a := range h.added {
		ids = append(ids, a.ID)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}
