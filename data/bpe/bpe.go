// Package bpe is the BPE tokenizers qat uses: its own byte-level BPE in the
// GPT-2 style (text split by GPT-2's pre-tokenizer pattern, each piece a
// sequence of bytes, learned merges joining adjacent tokens by rank), which
// it trains on a corpus, and Hugging Face tokenizer.json files of model type
// BPE as Llama 2/Mistral (SentencePiece-style, byte fallback), Llama 3,
// Qwen2/3 and GPT-2 ship them: normalizers, pre-tokenizers, added tokens,
// post-processor and decoder as the tokenizers library runs them, with
// bos/eos from tokenizer_config.json and generation_config.json.
package bpe

import (
	"container/heap"
	"fmt"
	"sort"
	"strings"
)

// Special tokens of qat's own tokenizers, appended after the merges. As
// arguments of ID and SpecialID they are roles too: BOS, EOS and PAD
// resolve to the ids tokenizer_config.json / generation_config.json name
// for an imported tokenizer (whose tokens have other names).
const (
	BOS = "<|bos|>"
	EOS = "<|eos|>"
	PAD = "<|pad|>"
)

// MaxVocab bounds the vocabulary a tokenizer may have (4,194,304 tokens;
// Llama 3 has 128,256): Train, Parse and FromGGUFVocab refuse more.
const MaxVocab = 1 << 22

// Tokenizer maps bytes to token ids and back.
type Tokenizer struct {
	// Tokens[id] is the token's bytes (specials: their text); for an
	// imported tokenizer, the bytes it decodes to in the middle of a text
	// (Metaspace's ▁ a space, <0x41> the byte 0x41).
	Tokens []string
	// Merges[r] is the pair of ids merged at rank r: into id 256+r for
	// qat's own tokenizers, into the token their texts make for imported
	// ones.
	Merges [][2]int32
	// Special maps special tokens' texts to their ids (for imported
	// tokenizers: the added tokens marked special).
	Special map[string]int32
	ranks   map[uint64]int32 // pair -> rank
	cache   map[string][]int32

	hf   *hfTokenizer // nil for qat's own format
	conf config       // bos/eos/pad, chat template, original files
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// ID returns the id of a special token; it panics for an unknown name.
// Tokenizers from Train, Parse, Load and FromGGUFVocab always have BOS and
// EOS; for other names, or a Tokenizer built by hand, use SpecialID.
func (t *Tokenizer) ID(special string) int32 {
	id, err := t.SpecialID(special)
	if err != nil {
		panic(err.Error())
	}
	return id
}

// SpecialID returns the id of a special token, or an error naming the
// token when the tokenizer lacks it or its id is outside the vocabulary.
func (t *Tokenizer) SpecialID(special string) (int32, error) {
	if t.hf != nil || t.conf.set {
		switch special {
		case BOS:
			return t.BOS()
		case EOS:
			return t.EOS()
		case PAD:
			return t.PAD()
		}
	}
	id, ok := t.Special[special]
	if !ok {
		return 0, fmt.Errorf("bpe: tokenizer has no special token %s", special)
	}
	if id < 0 || int(id) >= len(t.Tokens) {
		return 0, fmt.Errorf("bpe: special token %s has id %d outside the vocabulary of %d", special, id, len(t.Tokens))
	}
	return id, nil
}

// VocabSize is the number of ids: the largest id of the model's
// vocabulary and the added tokens, plus one.
func (t *Tokenizer) VocabSize() int { return len(t.Tokens) }

func (t *Tokenizer) index() {
	t.ranks = make(map[uint64]int32, len(t.Merges))
	for r, m := range t.Merges {
		t.ranks[pairKey(m[0], m[1])] = int32(r)
	}
	t.cache = map[string][]int32{}
}

// Encode appends the ids of text to dst, as Hugging Face's
// encode(text, add_special_tokens=False): for an imported tokenizer, added
// tokens in text are matched first. For qat's own tokenizers,
// special-token strings in text are encoded as ordinary text: specials are
// only ever inserted by the caller.
func (t *Tokenizer) Encode(dst []int32, text string) []int32 {
	if t.hf != nil {
		return t.hf.encode(dst, text)
	}
	Pretokenize(text, func(p string) {
		if ids, ok := t.cache[p]; ok {
			dst = append(dst, ids...)
			return
		}
		ids := t.encodePiece(p)
		if len(t.cache) < 1<<20 {
			t.cache[p] = ids
		}
		dst = append(dst, ids...)
	})
	return dst
}

// encodePiece applies merges by rank, lowest first, as GPT-2 does.
func (t *Tokenizer) encodePiece(p string) []int32 {
	ids := make([]int32, len(p))
	for i := 0; i < len(p); i++ {
		ids[i] = int32(p[i])
	}
	for len(ids) > 1 {
		best, at := int32(-1), -1
		for i := 0; i+1 < len(ids); i++ {
			if r, ok := t.ranks[pairKey(ids[i], ids[i+1])]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		a, b := t.Merges[best][0], t.Merges[best][1]
		out := ids[:0]
		for i := 0; i < len(ids); i++ {
			if i+1 < len(ids) && ids[i] == a && ids[i+1] == b {
				out = append(out, 256+best)
				i++
			} else {
				out = append(out, ids[i])
			}
		}
		ids = out
	}
	return ids
}

// Decode returns the text of ids. For an imported tokenizer it is Hugging
// Face's decode(ids, skip_special_tokens=False) without the clean-up of
// spaces before punctuation (so that decode(encode(x)) == x); for qat's own
// tokenizers, the bytes of ids, special tokens decoding to nothing.
func (t *Tokenizer) Decode(ids []int32) (string, error) {
	if t.hf != nil {
		return t.hf.decode(ids)
	}
	var sb strings.Builder
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.Tokens) {
			return "", fmt.Errorf("bpe: token id %d outside vocabulary of %d", id, len(t.Tokens))
		}
		if _, sp := t.Special[t.Tokens[id]]; sp && int(id) >= 256+len(t.Merges) {
			continue
		}
		sb.WriteString(t.Tokens[id])
	}
	return sb.String(), nil
}

// ByteLen is the number of text bytes id stands for (0 for specials and
// ids outside the vocabulary).
func (t *Tokenizer) ByteLen(id int32) int {
	if t.hf != nil {
		if id < 0 || int(id) >= len(t.Tokens) || t.hf.isSpecial(id) {
			return 0
		}
		return len(t.Tokens[id])
	}
	if id < 0 || int(id) >= 256+len(t.Merges) || int(id) >= len(t.Tokens) {
		return 0
	}
	return len(t.Tokens[id])
}

// Train learns vocabSize-256-len(specials) merges from the texts. Ties
// between equally frequent pairs go to the smaller pair of ids, so training
// is deterministic.
func Train(texts []string, vocabSize int) (*Tokenizer, error) {
	specials := []string{BOS, EOS, PAD}
	nMerges := vocabSize - 256 - len(specials)
	if nMerges < 0 || vocabSize > MaxVocab {
		return nil, fmt.Errorf("bpe: vocabulary size %d, want %d (the byte and special tokens) to %d", vocabSize, 256+len(specials), MaxVocab)
	}
	counts := map[string]int{}
	for _, s := range texts {
		Pretokenize(s, func(p string) { counts[p]++ })
	}
	pieces := make([]string, 0, len(counts))
	for p := range counts {
		pieces = append(pieces, p)
	}
	sort.Strings(pieces) // map order must not leak into the result
	words := make([][]int32, len(pieces))
	freq := make([]int, len(pieces))
	pairs := map[uint64]int{}
	where := map[uint64][]int32{}
	for w, p := range pieces {
		freq[w] = counts[p]
		ids := make([]int32, len(p))
		for i := range ids {
			ids[i] = int32(p[i])
		}
		words[w] = ids
		for i := 0; i+1 < len(ids); i++ {
			k := pairKey(ids[i], ids[i+1])
			pairs[k] += freq[w]
			where[k] = append(where[k], int32(w))
		}
	}
	h := &pairHeap{}
	for k, c := range pairs {
		h.items = append(h.items, pairCount{k, c})
	}
	heap.Init(h)
	t := &Tokenizer{Special: map[string]int32{}}
	for b := 0; b < 256; b++ {
		t.Tokens = append(t.Tokens, string([]byte{byte(b)}))
	}
	seen := make([]int, len(words)) // merge number that last touched a word
	for m := 1; len(t.Merges) < nMerges && h.Len() > 0; {
		top := heap.Pop(h).(pairCount)
		if c := pairs[top.key]; c != top.count {
			if c > 0 {
				heap.Push(h, pairCount{top.key, c})
			}
			continue
		}
		if top.count < 2 {
			break // nothing left worth merging
		}
		a, b := int32(top.key>>32), int32(uint32(top.key))
		id := int32(256 + len(t.Merges))
		t.Merges = append(t.Merges, [2]int32{a, b})
		t.Tokens = append(t.Tokens, t.Tokens[a]+t.Tokens[b])
		changed := map[uint64]bool{}
		for _, w := range where[top.key] {
			if seen[w] == m {
				continue
			}
			seen[w] = m
			ids, f := words[w], freq[w]
			has := false
			for i := 0; i+1 < len(ids); i++ {
				if ids[i] == a && ids[i+1] == b {
					has = true
					break
				}
			}
			if !has {
				continue
			}
			for i := 0; i+1 < len(ids); i++ {
				k := pairKey(ids[i], ids[i+1])
				pairs[k] -= f
				changed[k] = true
			}
			out := make([]int32, 0, len(ids))
			for i := 0; i < len(ids); i++ {
				if i+1 < len(ids) && ids[i] == a && ids[i+1] == b {
					out = append(out, id)
					i++
				} else {
					out = append(out, ids[i])
				}
			}
			words[w] = out
			for i := 0; i+1 < len(out); i++ {
				k := pairKey(out[i], out[i+1])
				pairs[k] += f
				changed[k] = true
				where[k] = append(where[k], int32(w))
			}
		}
		delete(where, top.key)
		keys := make([]uint64, 0, len(changed))
		for k := range changed {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		for _, k := range keys {
			if c := pairs[k]; c > 0 {
				heap.Push(h, pairCount{k, c})
			} else {
				delete(pairs, k)
			}
		}
		m++
	}
	for _, s := range specials {
		t.Special[s] = int32(len(t.Tokens))
		t.Tokens = append(t.Tokens, s)
	}
	for len(t.Tokens) < vocabSize { // a corpus too small for the asked size: pad ids stay unused
		name := fmt.Sprintf("<|unused%d|>", len(t.Tokens))
		t.Special[name] = int32(len(t.Tokens))
		t.Tokens = append(t.Tokens, name)
	}
	t.index()
	return t, nil
}

type pairCount struct {
	key   uint64
	count int
}

// pairHeap is a max-heap on count, ties to the smaller pair key.
type pairHeap struct{ items []pairCount }

func (h *pairHeap) Len() int { return len(h.items) }
func (h *pairHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	return a.count > b.count || (a.count == b.count && a.key < b.key)
}
func (h *pairHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *pairHeap) Push(x any)    { h.items = append(h.items, x.(pairCount)) }
func (h *pairHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
