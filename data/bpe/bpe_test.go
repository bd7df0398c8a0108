package bpe

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// gpt2 is the reference pattern. A backtracking engine can take
// quadratic time on long whitespace runs, so matches are bounded in time
// and the fuzz target skips inputs where the oracle gives up.
var gpt2 = func() *regexp2.Regexp {
	re := regexp2.MustCompile(`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, regexp2.None)
	re.MatchTimeout = 2 * time.Second
	return re
}()

func regexSplit(s string) ([]string, error) {
	var out []string
	m, err := gpt2.FindStringMatch(s)
	for m != nil && err == nil {
		out = append(out, m.String())
		m, err = gpt2.FindNextMatch(m)
	}
	return out, err
}

func ourSplit(s string) []string {
	var out []string
	Pretokenize(s, func(p string) { out = append(out, p) })
	return out
}

func corpus(t testing.TB, n int) []string {
	dir := filepath.Join("..", "..", "..", "shared", "data", "sotu")
	files, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	if len(files) == 0 {
		t.Skip("no ../shared/data/sotu")
	}
	sort.Strings(files)
	var out []string
	for _, f := range files[:min(n, len(files))] {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestPretokenizeMatchesGPT2Regex(t *testing.T) {
	cases := []string{"", "Hello world", "spaces\n\nnewlines", "  leading", "trailing  ", "it's they're I'll we'd 'x",
		"a\tb\r\nc", "1,234.56 and 7th", "Émile's café — naïve", "emoji 😀😀 x", "x  \n y", " ' ' s", "'s", "\u00a0nbsp", "a '\nb"}
	cases = append(cases, corpus(t, 5)...)
	for _, c := range cases {
		want, err := regexSplit(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := ourSplit(c); !reflect.DeepEqual(got, want) {
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Fatalf("%.40q: piece %d: got %q, regex %q", c, i, got[i], want[i])
				}
			}
			t.Fatalf("%.40q: %d pieces, regex %d", c, len(got), len(want))
		}
	}
}

func FuzzPretokenize(f *testing.F) {
	f.Add("Hello, world!  It's 2021.\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			if strings.Join(ourSplit(s), "") != s {
				t.Fatal("pieces do not cover the input")
			}
			return
		}
		if len(s) > 4096 {
			return // the regex oracle is too slow on long inputs
		}
		want, err := regexSplit(s)
		if err != nil {
			t.Skip("regex oracle timed out")
		}
		if got := ourSplit(s); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("%q: got %q, regex %q", s, got, want)
		}
	})
}

func trained(t testing.TB) *Tokenizer {
	tok, err := Train(corpus(t, 30), 1024)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTrainEncodeDecode(t *testing.T) {
	texts := corpus(t, 30)
	start := time.Now()
	tok, err := Train(texts, 1024)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trained 1024 tokens on %d texts in %v", len(texts), time.Since(start))
	if tok.VocabSize() != 1024 || len(tok.Merges) != 1024-259 {
		t.Fatalf("vocab %d, %d merges", tok.VocabSize(), len(tok.Merges))
	}
	again, _ := Train(texts, 1024)
	if !reflect.DeepEqual(again.Merges, tok.Merges) {
		t.Fatal("training is not deterministic")
	}
	var bytes, ids int
	for _, s := range texts[:5] {
		enc := tok.Encode(nil, s)
		dec, err := tok.Decode(enc)
		if err != nil || dec != s {
			t.Fatalf("round trip failed: %v", err)
		}
		bytes += len(s)
		ids += len(enc)
	}
	if r := float64(bytes) / float64(ids); r < 3 {
		t.Errorf("%.2f bytes per token with 1024 tokens on English; BPE should compress more", r)
	}
	// The first merge is the most frequent pair of the corpus.
	if tok.Tokens[256] != "e " && tok.Tokens[256] != " t" && tok.Tokens[256] != "th" && tok.Tokens[256] != "he" {
		t.Logf("first merge %q", tok.Tokens[256])
	}
	// Merging by rank: a token's bytes encode back to the token itself.
	for id := 256; id < 256+len(tok.Merges); id += 37 {
		if got := tok.encodePiece(tok.Tokens[id]); len(got) != 1 || got[0] != int32(id) {
			t.Errorf("token %d %q encodes to %v", id, tok.Tokens[id], got)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	tok := trained(t)
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := tok.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Tokens, tok.Tokens) || !reflect.DeepEqual(back.Merges, tok.Merges) || !reflect.DeepEqual(back.Special, tok.Special) {
		t.Fatal("tokenizer.json does not round-trip")
	}
	s := corpus(t, 1)[0]
	if !reflect.DeepEqual(back.Encode(nil, s), tok.Encode(nil, s)) {
		t.Fatal("loaded tokenizer encodes differently")
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{`"type": "BPE"`, `"type": "ByteLevel"`, `"<|bos|>"`, `"Ġ`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("tokenizer.json lacks %s", want)
		}
	}
}

func TestHostileJSON(t *testing.T) {
	tok := trained(t)
	good, _ := tok.MarshalJSON()
	for i, edit := range []func(string) string{
		func(s string) string { return s[:len(s)/2] },
		func(s string) string { return strings.Replace(s, `"type": "BPE"`, `"type": "WordPiece"`, 1) },
		func(s string) string { return strings.Replace(s, `"!": 33`, `"!": 99999`, 1) },
		func(s string) string { return strings.Replace(s, `"!": 33`, `"!": -1`, 1) },
		func(s string) string { return strings.Replace(s, `"merges": [`, `"merges": [ "zz qq",`, 1) },
		func(s string) string { return strings.Replace(s, `"merges": [`, `"merges": [ "abc",`, 1) },
		func(s string) string { return strings.Replace(s, `"!": 33`, `"\u4e00": 33`, 1) },
	} {
		if _, err := Parse([]byte(edit(string(good)))); err == nil {
			t.Errorf("edit %d: parsed a broken tokenizer.json", i)
		}
	}
}

func FuzzEncodeRoundTrip(f *testing.F) {
	tok, err := Train([]string{"the quick brown fox jumps over the lazy dog, the end. It's 1999!\n\n"}, 300)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("the fox's den"))
	f.Add([]byte{0xff, 0xfe, 'a', 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids := tok.Encode(nil, string(b))
		got, err := tok.Decode(ids)
		if err != nil || got != string(b) {
			t.Fatalf("%q: decoded %q (%v)", b, got, err)
		}
	})
}

func FuzzParse(f *testing.F) {
	tok, _ := Train([]string{"aaab abab"}, 262)
	b, _ := tok.MarshalJSON()
	f.Add(b)
	for _, c := range hostileTokenizers(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := Parse(b)
		if err != nil {
			return
		}
		if tok.hf != nil {
			// a Hugging Face file: whatever it encodes to are ids of its
			// vocabulary, and they decode
			ids := tok.EncodeSpecial(nil, "abc 123 xyz <|bos|> é😀")
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("id %d outside the vocabulary of %d", id, tok.VocabSize())
				}
			}
			if _, err := tok.Decode(ids); err != nil {
				t.Fatal(err)
			}
			return
		}
		// what parses as qat's own format has BOS and EOS in range
		for _, s := range []string{BOS, EOS} {
			if id, err := tok.SpecialID(s); err != nil || tok.ID(s) != id {
				t.Fatalf("parsed tokenizer: %s: %v", s, err)
			}
		}
		if tok.VocabSize() > MaxVocab {
			t.Fatalf("vocabulary of %d", tok.VocabSize())
		}
		s := "abc 123 xyz"
		ids := tok.Encode(nil, s)
		if d, err := tok.Decode(ids); err != nil || d != s {
			t.Fatalf("a tokenizer that parsed does not round-trip: %v", err)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	tok := trained(b)
	texts := corpus(b, 30)
	n := 0
	for _, s := range texts {
		n += len(s)
	}
	b.SetBytes(int64(n))
	for i := 0; i < b.N; i++ {
		tok.cache = map[string][]int32{}
		for _, s := range texts {
			tok.Encode(nil, s)
		}
	}
}
