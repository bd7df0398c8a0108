package bpe

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a text segment (between added tokens) before it is
// pre-tokenized.
type normalizer func(string) string

// pattern is a Replace/Split pattern: {"String": s} or {"Regex": r}.
type pattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func compilePattern(c component, path string) (*pattern, *regexp2.Regexp, error) {
	var p pattern
	if err := c.get(path, "pattern", &p); err != nil {
		return nil, nil, err
	}
	switch {
	case p.String != nil:
		if len(*p.String) == 0 || len(*p.String) > maxPattern {
			return nil, nil, fmt.Errorf("tokenizer.json: %s.pattern.String of %d bytes, want 1 to %d", path, len(*p.String), maxPattern)
		}
		return &p, nil, nil
	case p.Regex != nil:
		if len(*p.Regex) > maxPattern {
			return nil, nil, fmt.Errorf("tokenizer.json: %s.pattern.Regex of %d bytes, at most %d", path, len(*p.Regex), maxPattern)
		}
		re, err := regexp2.Compile(*p.Regex, regexp2.None)
		if err != nil {
			return nil, nil, fmt.Errorf("tokenizer.json: %s.pattern.Regex %q: %v", path, *p.Regex, err)
		}
		// A backtracking engine can take exponential time on a hostile
		// pattern: bound each match rather than hang.
		re.MatchTimeout = 10 * time.Second
		return &p, re, nil
	}
	return nil, nil, fmt.Errorf("tokenizer.json: %s.pattern: want {\"String\": ...} or {\"Regex\": ...}", path)
}

// regexMatches returns the byte ranges re matches in s, left to right.
func regexMatches(re *regexp2.Regexp, s string) [][2]int {
	var out [][2]int
	runes := []rune(s)
	// rune index -> byte offset
	offs := make([]int, len(runes)+1)
	o := 0
	for i, r := range runes {
		offs[i] = o
		o += utf8.RuneLen(r)
		if r == utf8.RuneError {
			o += 0
		}
	}
	offs[len(runes)] = o
	m, err := re.FindRunesMatch(runes)
	for m != nil && err == nil {
		if m.Length > 0 {
			out = append(out, [2]int{offs[m.Index], offs[m.Index+m.Length]})
		}
		m, err = re.FindNextMatch(m)
	}
	return out
}

func literalMatches(lit, s string) [][2]int {
	var out [][2]int
	for i := 0; ; {
		j := strings.Index(s[i:], lit)
		if j < 0 {
			return out
		}
		out = append(out, [2]int{i + j, i + j + len(lit)})
		i += j + len(lit)
	}
}

func parseNormalizer(c component, path string, depth int) (normalizer, error) {
	if c == nil {
		return nil, nil
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("tokenizer.json: %s: nested deeper than %d", path, maxDepth)
	}
	switch typ := c.typ(); typ {
	case "Sequence":
		cs, err := c.list(path, "normalizers")
		if err != nil {
			return nil, err
		}
		var ns []normalizer
		for i, sub := range cs {
			n, err := parseNormalizer(sub, fmt.Sprintf("%s.normalizers[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			if n != nil {
				ns = append(ns, n)
			}
		}
		return func(s string) string {
			for _, n := range ns {
				s = n(s)
			}
			return s
		}, nil
	case "Prepend":
		var p string
		if err := c.get(path, "prepend", &p); err != nil {
			return nil, err
		}
		return func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}, nil
	case "Replace":
		var content string
		if err := c.get(path, "content", &content); err != nil {
			return nil, err
		}
		p, re, err := compilePattern(c, path)
		if err != nil {
			return nil, err
		}
		if re == nil {
			lit := *p.String
			return func(s string) string { return strings.ReplaceAll(s, lit, content) }, nil
		}
		return func(s string) string { return replaceRegex(re, s, content) }, nil
	case "NFC":
		return norm.NFC.String, nil
	case "NFD":
		return norm.NFD.String, nil
	case "NFKC":
		return norm.NFKC.String, nil
	case "NFKD":
		return norm.NFKD.String, nil
	case "Lowercase":
		return strings.ToLower, nil
	case "Strip":
		left, right := true, true
		if err := c.get(path, "strip_left", &left); err != nil {
			return nil, err
		}
		if err := c.get(path, "strip_right", &right); err != nil {
			return nil, err
		}
		return func(s string) string {
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}, nil
	default:
		return nil, unsupported(path, typ)
	}
}

func replaceRegex(re *regexp2.Regexp, s, content string) string {
	ms := regexMatches(re, s)
	if len(ms) == 0 {
		return s
	}
	var sb strings.Builder
	at := 0
	for _, m := range ms {
		sb.WriteString(s[at:m[0]])
		sb.WriteString(content)
		at = m[1]
	}
	sb.WriteString(s[at:])
	return sb.String()
}

// preTokenizer splits pieces further; first says whether the text segment
// starts the whole text (Metaspace's prepend_scheme "first").
type preTokenizer func(pieces []string, first bool) []string

// splitBehavior: how matches and the text between them become pieces.
type splitBehavior int

const (
	removed splitBehavior = iota
	isolated
	mergedWithPrevious
	mergedWithNext
	contiguous
)

var behaviors = map[string]splitBehavior{"Removed": removed, "Isolated": isolated, "MergedWithPrevious": mergedWithPrevious,
	"MergedWithNext": mergedWithNext, "Contiguous": contiguous}

// splitBy cuts s at the matches (byte ranges, sorted, disjoint) as the
// tokenizers library's split with the given behavior does.
func splitBy(s string, matches [][2]int, b splitBehavior, invert bool, out []string) []string {
	type seg struct {
		a, z  int
		match bool
	}
	segs := make([]seg, 0, 2*len(matches)+1)
	at := 0
	for _, m := range matches {
		if m[0] > at {
			segs = append(segs, seg{at, m[0], invert})
		}
		segs = append(segs, seg{m[0], m[1], !invert})
		at = m[1]
	}
	if at < len(s) {
		segs = append(segs, seg{at, len(s), invert})
	}
	switch b {
	case removed:
		for _, g := range segs {
			if !g.match {
				out = append(out, s[g.a:g.z])
			}
		}
		return out
	case isolated:
		for _, g := range segs {
			out = append(out, s[g.a:g.z])
		}
		return out
	case mergedWithPrevious:
		var acc []seg
		prev := false
		for _, g := range segs {
			if g.match && !prev && len(acc) > 0 {
				acc[len(acc)-1].z = g.z
			} else {
				acc = append(acc, g)
			}
			prev = g.match
		}
		segs = acc
	case mergedWithNext:
		var acc []seg
		prev := false
		for i := len(segs) - 1; i >= 0; i-- {
			g := segs[i]
			if g.match && !prev && len(acc) > 0 {
				acc[len(acc)-1].a = g.a
			} else {
				acc = append(acc, g)
			}
			prev = g.match
		}
		for i, j := 0, len(acc)-1; i < j; i, j = i+1, j-1 {
			acc[i], acc[j] = acc[j], acc[i]
		}
		segs = acc
	case contiguous:
		var acc []seg
		prev := false
		for i, g := range segs {
			if i > 0 && g.match == prev {
				acc[len(acc)-1].z = g.z
			} else {
				acc = append(acc, g)
			}
			prev = g.match
		}
		segs = acc
	}
	for _, g := range segs {
		out = append(out, s[g.a:g.z])
	}
	return out
}

func parsePreTokenizer(c component, path string, depth int) ([]preTokenizer, error) {
	if c == nil {
		return nil, nil
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("tokenizer.json: %s: nested deeper than %d", path, maxDepth)
	}
	switch typ := c.typ(); typ {
	case "Sequence":
		cs, err := c.list(path, "pretokenizers")
		if err != nil {
			return nil, err
		}
		var out []preTokenizer
		for i, sub := range cs {
			p, err := parsePreTokenizer(sub, fmt.Sprintf("%s.pretokenizers[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, p...)
		}
		return out, nil
	case "ByteLevel":
		addPrefix, useRegex := false, true
		if err := c.get(path, "add_prefix_space", &addPrefix); err != nil {
			return nil, err
		}
		if err := c.get(path, "use_regex", &useRegex); err != nil {
			return nil, err
		}
		return []preTokenizer{func(pieces []string, _ bool) []string {
			out := make([]string, 0, len(pieces))
			for _, p := range pieces {
				if addPrefix && !strings.HasPrefix(p, " ") {
					p = " " + p
				}
				if useRegex {
					Pretokenize(p, func(q string) { out = append(out, toUnicode(q)) })
				} else {
					out = append(out, toUnicode(p))
				}
			}
			return out
		}}, nil
	case "Split":
		var behavior string
		invert := false
		if err := c.get(path, "behavior", &behavior); err != nil {
			return nil, err
		}
		if err := c.get(path, "invert", &invert); err != nil {
			return nil, err
		}
		b, ok := behaviors[behavior]
		if !ok {
			return nil, fmt.Errorf("tokenizer.json: %s.behavior %q not supported", path, behavior)
		}
		p, re, err := compilePattern(c, path)
		if err != nil {
			return nil, err
		}
		find := func(s string) [][2]int { return literalMatches(*p.String, s) }
		if re != nil {
			find = func(s string) [][2]int { return regexMatches(re, s) }
			if fast := fastSplit(*p.Regex); fast != nil {
				find = fast
			}
		}
		return []preTokenizer{func(pieces []string, _ bool) []string {
			out := make([]string, 0, len(pieces))
			for _, s := range pieces {
				out = splitBy(s, find(s), b, invert, out)
			}
			return out
		}}, nil
	case "Metaspace":
		replacement, scheme, split := "▁", "always", true
		if err := c.get(path, "replacement", &replacement); err != nil {
			return nil, err
		}
		if err := c.get(path, "split", &split); err != nil {
			return nil, err
		}
		if _, ok := c["prepend_scheme"]; ok {
			if err := c.get(path, "prepend_scheme", &scheme); err != nil {
				return nil, err
			}
		} else if _, ok := c["add_prefix_space"]; ok {
			// older files: add_prefix_space true is "always"
			add := true
			if err := c.get(path, "add_prefix_space", &add); err != nil {
				return nil, err
			}
			if !add {
				scheme = "never"
			}
		}
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return nil, fmt.Errorf("tokenizer.json: %s.prepend_scheme %q, want always, first or never", path, scheme)
		}
		if replacement == "" {
			return nil, fmt.Errorf("tokenizer.json: %s.replacement is empty", path)
		}
		return []preTokenizer{func(pieces []string, first bool) []string {
			out := make([]string, 0, len(pieces))
			for i, s := range pieces {
				s = strings.ReplaceAll(s, " ", replacement)
				if !strings.HasPrefix(s, replacement) && (scheme == "always" || (scheme == "first" && first && i == 0)) {
					s = replacement + s
				}
				if split {
					out = splitBy(s, literalMatches(replacement, s), mergedWithNext, false, out)
				} else {
					out = append(out, s)
				}
			}
			return out
		}}, nil
	case "Digits":
		individual := false
		if err := c.get(path, "individual_digits", &individual); err != nil {
			return nil, err
		}
		return []preTokenizer{func(pieces []string, _ bool) []string {
			var out []string
			for _, s := range pieces {
				var ms [][2]int
				for i, r := range s {
					if !unicode.IsDigit(r) {
						continue
					}
					n := utf8.RuneLen(r)
					if !individual && len(ms) > 0 && ms[len(ms)-1][1] == i {
						ms[len(ms)-1][1] = i + n
					} else {
						ms = append(ms, [2]int{i, i + n})
					}
				}
				out = splitBy(s, ms, isolated, false, out)
			}
			return out
		}}, nil
	case "WhitespaceSplit":
		return []preTokenizer{func(pieces []string, _ bool) []string {
			var out []string
			for _, s := range pieces {
				out = append(out, strings.Fields(s)...)
			}
			return out
		}}, nil
	default:
		return nil, unsupported(path, typ)
	}
}

// decoder is one step of the decoder chain over token texts. mid says the
// tokens are not at the start of the text (ByteLen decodes tokens alone).
type decoder interface {
	apply(toks []string, h *hfTokenizer, mid bool) []string
}

// byteLevelDecoder turns byte-level text back to bytes; added tokens stay
// as they are and split the byte runs, as the reference implementation
// does.
type byteLevelDecoder struct{}

func (byteLevelDecoder) apply(toks []string, h *hfTokenizer, _ bool) []string {
	var out []string
	var run []byte
	flush := func() {
		if len(run) > 0 {
			out = append(out, lossyUTF8(run))
			run = run[:0]
		}
	}
	for _, t := range toks {
		if _, ok := h.addedContent(t); ok {
			flush()
			out = append(out, t)
			continue
		}
		run = appendByteLevel(run, t)
	}
	flush()
	return out
}

// appendByteLevel appends the bytes of a byte-level token (a character
// outside GPT-2's alphabet stands for itself).
func appendByteLevel(dst []byte, t string) []byte {
	for _, r := range t {
		if b, ok := runeToByte[r]; ok {
			dst = append(dst, b)
		} else {
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}

type decFunc func(toks []string, h *hfTokenizer, mid bool) []string

func (f decFunc) apply(toks []string, h *hfTokenizer, mid bool) []string { return f(toks, h, mid) }

func parseDecoder(c component, path string, depth int) ([]decoder, error) {
	if c == nil {
		return nil, nil
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("tokenizer.json: %s: nested deeper than %d", path, maxDepth)
	}
	switch typ := c.typ(); typ {
	case "Sequence":
		cs, err := c.list(path, "decoders")
		if err != nil {
			return nil, err
		}
		var out []decoder
		for i, sub := range cs {
			d, err := parseDecoder(sub, fmt.Sprintf("%s.decoders[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, d...)
		}
		return out, nil
	case "ByteLevel":
		return []decoder{byteLevelDecoder{}}, nil
	case "Metaspace":
		replacement, scheme := "▁", "always"
		if err := c.get(path, "replacement", &replacement); err != nil {
			return nil, err
		}
		if err := c.get(path, "prepend_scheme", &scheme); err != nil {
			return nil, err
		}
		if replacement == "" {
			return nil, fmt.Errorf("tokenizer.json: %s.replacement is empty", path)
		}
		return []decoder{decFunc(func(toks []string, _ *hfTokenizer, mid bool) []string {
			out := make([]string, len(toks))
			for i, t := range toks {
				t = strings.ReplaceAll(t, replacement, " ")
				if i == 0 && !mid && scheme != "never" {
					t = strings.TrimPrefix(t, " ")
				}
				out[i] = t
			}
			return out
		})}, nil
	case "Replace":
		var content string
		if err := c.get(path, "content", &content); err != nil {
			return nil, err
		}
		p, re, err := compilePattern(c, path)
		if err != nil {
			return nil, err
		}
		return []decoder{decFunc(func(toks []string, _ *hfTokenizer, _ bool) []string {
			out := make([]string, len(toks))
			for i, t := range toks {
				if re != nil {
					out[i] = replaceRegex(re, t, content)
				} else {
					out[i] = strings.ReplaceAll(t, *p.String, content)
				}
			}
			return out
		})}, nil
	case "ByteFallback":
		return []decoder{decFunc(func(toks []string, _ *hfTokenizer, _ bool) []string {
			var out []string
			var run []byte
			for _, t := range toks {
				if b, ok := byteToken(t); ok {
					run = append(run, b)
					continue
				}
				if len(run) > 0 {
					out = append(out, lossyUTF8(run))
					run = run[:0]
				}
				out = append(out, t)
			}
			if len(run) > 0 {
				out = append(out, lossyUTF8(run))
			}
			return out
		})}, nil
	case "Fuse":
		return []decoder{decFunc(func(toks []string, _ *hfTokenizer, mid bool) []string {
			if mid {
				return toks
			}
			return []string{strings.Join(toks, "")}
		})}, nil
	case "Strip":
		var content string
		var start, stop int
		if err := c.get(path, "content", &content); err != nil {
			return nil, err
		}
		if err := c.get(path, "start", &start); err != nil {
			return nil, err
		}
		if err := c.get(path, "stop", &stop); err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(content) != 1 || start < 0 || stop < 0 {
			return nil, fmt.Errorf("tokenizer.json: %s: content %q start %d stop %d: want one character and counts >= 0", path, content, start, stop)
		}
		return []decoder{decFunc(func(toks []string, _ *hfTokenizer, mid bool) []string {
			if mid {
				return toks
			}
			out := make([]string, len(toks))
			for i, t := range toks {
				for k := 0; k < start && strings.HasPrefix(t, content); k++ {
					t = t[len(content):]
				}
				for k := 0; k < stop && strings.HasSuffix(t, content); k++ {
					t = t[:len(t)-len(content)]
				}
				out[i] = t
			}
			return out
		})}, nil
	default:
		return nil, unsupported(path, typ)
	}
}

// checkJSONDepth is a guard used by Parse: encoding/json recurses on
// nested arrays and objects; a hostile file of a million '[' must be
// refused before that.
func checkJSONDepth(b []byte, limit int) error {
	depth := 0
	inStr, esc := false, false
	for i, c := range b {
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '[', '{':
			depth++
			if depth > limit {
				return fmt.Errorf("tokenizer.json: nested deeper than %d at byte %d", limit, i)
			}
		case ']', '}':
			depth--
		}
	}
	return nil
}

var _ = json.RawMessage(nil)
