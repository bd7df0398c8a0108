package bpe

import (
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// matcher finds added tokens in a text, leftmost first and, among those
// starting at one place, longest first (as the tokenizers library's
// Aho-Corasick LeftmostLongest and the JavaScript port's regex of
// length-sorted alternatives do).
type matcher struct {
	byFirst map[byte][]int32 // first byte -> ids, longest content first
	h       *hfTokenizer
}

func newMatcher(h *hfTokenizer, contents []string, normalized bool) *matcher {
	m := &matcher{byFirst: map[byte][]int32{}, h: h}
	for _, a := range h.added {
		if isNorm := a.Normalized && h.norm != nil; isNorm != normalized {
			continue
		}
		c := a.Content
		if normalized {
			c = h.norm(c)
		}
		if c == "" {
			continue
		}
		m.byFirst[c[0]] = append(m.byFirst[c[0]], a.ID)
	}
	for k, ids := range m.byFirst {
		sort.SliceStable(ids, func(i, j int) bool { return len(m.content(ids[i])) > len(m.content(ids[j])) })
		m.byFirst[k] = ids
	}
	_ = contents
	return m
}

func (m *matcher) content(id int32) string {
	a := m.h.addedByID(id)
	if a.Normalized && m.h.norm != nil {
		return m.h.norm(a.Content)
	}
	return a.Content
}

// section is a piece of text, or an added token (id >= 0).
type section struct {
	s  string
	id int32
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// split cuts s into text and added-token sections; lstrip/rstrip tokens
// take the whitespace beside them, single_word tokens match only between
// non-word characters.
func (m *matcher) split(s string, out []section) []section {
	if len(m.byFirst) == 0 {
		return append(out, section{s, -1})
	}
	at := 0
	for i := 0; i < len(s); i++ {
		ids, ok := m.byFirst[s[i]]
		if !ok {
			continue
		}
		for _, id := range ids {
			c := m.content(id)
			if !strings.HasPrefix(s[i:], c) {
				continue
			}
			a := m.h.addedByID(id)
			if a.SingleWord {
				if r, _ := utf8.DecodeLastRuneInString(s[:i]); i > 0 && isWordRune(r) {
					continue
				}
				if r, _ := utf8.DecodeRuneInString(s[i+len(c):]); i+len(c) < len(s) && isWordRune(r) {
					continue
				}
			}
			text := s[at:i]
			if a.LStrip {
				text = strings.TrimRightFunc(text, unicode.IsSpace)
			}
			if text != "" {
				out = append(out, section{text, -1})
			}
			out = append(out, section{"", id})
			i += len(c)
			if a.RStrip {
				for i < len(s) {
					r, n := utf8.DecodeRuneInString(s[i:])
					if !unicode.IsSpace(r) {
						break
					}
					i += n
				}
			}
			at = i
			i--
			break
		}
	}
	if at < len(s) {
		out = append(out, section{s[at:], -1})
	}
	return out
}

// validUTF8 is s with each byte that is not part of a valid UTF-8
// sequence replaced by U+FFFD (s itself when it is valid).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		b.WriteRune(r) // a bad byte ranges as utf8.RuneError, one byte wide
	}
	return b.String()
}

func (h *hfTokenizer) addedByID(id int32) *addedTok { return &h.added[h.addedAt[id]] }

// addedContent is the id of the added token whose text is s.
func (h *hfTokenizer) addedContent(s string) (int32, bool) {
	id, ok := h.addedText[s]
	return id, ok
}

func (h *hfTokenizer) encode(dst []int32, text string) []int32 {
	// Hugging Face tokenizers take str, never invalid UTF-8 (Python's
	// bytes.decode(errors="replace") puts U+FFFD for each bad byte); the
	// regex pre-tokenizers count runes and would cut a bad byte's
	// replacement apart.
	text = validUTF8(text)
	secs := h.raw.split(text, nil)
	for i, sec := range secs {
		if sec.id >= 0 {
			dst = append(dst, sec.id)
			continue
		}
		s := sec.s
		if h.norm != nil {
			s = h.norm(s)
		}
		if s == "" {
			continue
		}
		for _, sub := range h.normed.split(s, nil) {
			if sub.id >= 0 {
				dst = append(dst, sub.id)
				continue
			}
			pieces := []string{sub.s}
			for _, p := range h.pre {
				pieces = p(pieces, i == 0)
			}
			for _, p := range pieces {
				dst = h.encodeWord(dst, p)
			}
		}
	}
	return dst
}

// maxCached: words longer than this are merged without the cache (a
// SentencePiece-style model sees whole paragraphs as one word).
const maxCached = 256

func (h *hfTokenizer) encodeWord(dst []int32, w string) []int32 {
	if w == "" {
		return dst
	}
	if len(w) <= maxCached {
		if ids, ok := h.cache[w]; ok {
			return append(dst, ids...)
		}
	}
	start := len(dst)
	if id, ok := h.vocab[w]; ok && h.ignoreMerges {
		dst = append(dst, id)
	} else {
		dst = h.mergeWord(dst, w)
	}
	if len(w) <= maxCached && len(h.cache) < 1<<20 {
		h.cache[w] = append([]int32(nil), dst[start:]...)
	}
	return dst
}

type sym struct {
	id         int32
	prev, next int32
}

type cand struct {
	rank, pos   int32
	left, right int32
}

// candHeap is a min-heap on (rank, pos): the lowest-ranked merge first,
// leftmost among equals, as the tokenizers library applies them.
type candHeap []cand

func (q candHeap) less(i, j int) bool {
	return q[i].rank < q[j].rank || (q[i].rank == q[j].rank && q[i].pos < q[j].pos)
}

func (q *candHeap) push(c cand) {
	*q = append(*q, c)
	s := *q
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (q *candHeap) pop() cand {
	s := *q
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && s.less(l, m) {
			m = l
		}
		if r < n && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*q = s
	return top
}

// mergeWord is the BPE model on one word: characters (with byte fallback
// or the unknown token for those not in the vocabulary), then merges by
// rank.
func (h *hfTokenizer) mergeWord(dst []int32, w string) []int32 {
	syms := make([]sym, 0, len(w))
	add := func(id int32) {
		n := int32(len(syms))
		syms = append(syms, sym{id: id, prev: n - 1, next: n + 1})
	}
	pendingUnk := false
	for i := 0; i < len(w); {
		_, n := utf8.DecodeRuneInString(w[i:])
		c := w[i : i+n]
		if h.prefix != "" && i > 0 {
			c = h.prefix + c
		}
		if h.suffix != "" && i+n == len(w) {
			c += h.suffix
		}
		i += n
		if id, ok := h.vocab[c]; ok {
			if pendingUnk {
				add(h.unk)
				pendingUnk = false
			}
			add(id)
			continue
		}
		if h.byteFallback {
			all := true
			for k := 0; k < len(c); k++ {
				if h.byteIDs[c[k]] < 0 {
					all = false
				}
			}
			if all {
				if pendingUnk {
					add(h.unk)
					pendingUnk = false
				}
				for k := 0; k < len(c); k++ {
					add(h.byteIDs[c[k]])
				}
				continue
			}
		}
		if h.unk >= 0 {
			if pendingUnk && !h.fuseUnk {
				add(h.unk)
			}
			pendingUnk = true
		}
	}
	if pendingUnk {
		add(h.unk)
	}
	if len(syms) == 0 {
		return dst
	}
	syms[len(syms)-1].next = -1
	if len(syms) > 1 && len(h.merges) > 0 {
		q := make(candHeap, 0, len(syms))
		for i := 0; i+1 < len(syms); i++ {
			if m, ok := h.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
				q.push(cand{m.rank, int32(i), syms[i].id, syms[i+1].id})
			}
		}
		for len(q) > 0 {
			c := q.pop()
			s := &syms[c.pos]
			if s.id != c.left || s.next < 0 || syms[s.next].id != c.right {
				continue // stale: a neighbour merged since
			}
			m := h.merges[pairKey(c.left, c.right)]
			nx := s.next
			s.id = m.id
			s.next = syms[nx].next
			syms[nx].id = -1
			if s.next >= 0 {
				syms[s.next].prev = c.pos
			}
			if s.prev >= 0 {
				if pm, ok := h.merges[pairKey(syms[s.prev].id, s.id)]; ok {
					q.push(cand{pm.rank, s.prev, syms[s.prev].id, s.id})
				}
			}
			if s.next >= 0 {
				if nm, ok := h.merges[pairKey(s.id, syms[s.next].id)]; ok {
					q.push(cand{nm.rank, c.pos, s.id, syms[s.next].id})
				}
			}
		}
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		dst = append(dst, syms[i].id)
	}
	return dst
}

func (h *hfTokenizer) decode(ids []int32) (string, error) {
	toks := make([]string, len(ids))
	for i, id := range ids {
		if id < 0 || int(id) >= len(h.idTok) {
			return "", fmt.Errorf("bpe: token id %d outside vocabulary of %d", id, len(h.idTok))
		}
		toks[i] = h.idTok[id]
	}
	if h.dec == nil {
		return strings.Join(toks, " "), nil
	}
	for _, d := range h.dec {
		toks = d.apply(toks, h, false)
	}
	s := strings.Join(toks, "")
	if h.suffix != "" {
		s = strings.ReplaceAll(s, h.suffix, " ")
	}
	return s, nil
}

// vocabOrAdded is the id of a token text: an added token's, or the model
// vocabulary's.
func (h *hfTokenizer) vocabOrAdded(s string) (int32, bool) {
	if id, ok := h.addedText[s]; ok {
		return id, true
	}
	id, ok := h.vocab[s]
	return id, ok
}
