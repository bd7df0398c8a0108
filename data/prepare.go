package data

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"unicode/utf8"

	"qat/data/atomic"
	"qat/data/bpe"
)

// InputError marks a problem with the user's files or arguments.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(format string, a ...any) error { return &InputError{fmt.Errorf(format, a...)} }

// Manifest describes a prepared dataset directory.
type Manifest struct {
	Tokenizer       string           `json:"tokenizer_sha256"`
	VocabSize       int              `json:"vocab_size"`
	ValidationRule  string           `json:"validation_rule"`
	Splits          map[string]Split `json:"splits"`
	TokensPerShard  int              `json:"tokens_per_shard"`
	TokenizerSource string           `json:"tokenizer_source,omitempty"`
}

// Split lists one split's shards and totals.
type Split struct {
	Docs   int     `json:"docs"`
	Tokens int64   `json:"tokens"`
	Bytes  int64   `json:"bytes"`
	Shards []Shard `json:"shards"`
}

// Shard is one Parquet file of a split.
type Shard struct {
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Docs   int    `json:"docs"`
	Tokens int64  `json:"tokens"`
}

// ValidationYear7 is the default split rule: documents whose file name
// starts with a year ending in 7 (the 23 held-out State of the Union
// addresses) are validation, the rest training.
var ValidationYear7 = regexp.MustCompile(`^\d{3}7[^0-9]`)

// Sources expands inputs (files, or directories whose *.txt files are
// taken) into a sorted list of text files.
func Sources(inputs []string) ([]string, error) {
	var files []string
	for _, in := range inputs {
		st, err := os.Stat(in)
		if err != nil {
			return nil, inputErr("input %s: %v", in, err)
		}
		if !st.IsDir() {
			files = append(files, in)
			continue
		}
		m, _ := filepath.Glob(filepath.Join(in, "*.txt"))
		if len(m) == 0 {
			return nil, inputErr("input %s: no *.txt files", in)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	return files, nil
}

// ReadTexts reads the files, rejecting text that is not UTF-8 and an
// empty corpus.
func ReadTexts(files []string) ([]string, error) {
	var texts []string
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, inputErr("%v", err)
		}
		if !utf8.Valid(b) {
			off := 0
			for off < len(b) {
				r, n := utf8.DecodeRune(b[off:])
				if r == utf8.RuneError && n <= 1 {
					break
				}
				off += n
			}
			return nil, inputErr("%s: not UTF-8 text (invalid byte 0x%02x at offset %d)", f, b[off], off)
		}
		texts = append(texts, string(b))
		total += len(b)
	}
	if total == 0 {
		return nil, inputErr("corpus %v is empty", files)
	}
	return texts, nil
}

// Prepare tokenizes files into train and validation shards in outDir and
// writes manifest.json and tokenizer.json there. Each document becomes
// <|bos|> text <|eos|>; isVal decides the split from the file name.
func Prepare(files []string, texts []string, tok *bpe.Tokenizer, outDir string, isVal *regexp.Regexp, tokensPerShard int) (*Manifest, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, inputErr("output %s: %v", outDir, err)
	}
	tj, err := tok.MarshalJSON()
	if err != nil {
		return nil, err
	}
	if err := atomic.WriteFile(filepath.Join(outDir, "tokenizer.json"), tj); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(tj)
	m := &Manifest{Tokenizer: hex.EncodeToString(sum[:]), VocabSize: tok.VocabSize(), ValidationRule: isVal.String(),
		Splits: map[string]Split{}, TokensPerShard: tokensPerShard}
	bos, eos := tok.ID(bpe.BOS), tok.ID(bpe.EOS)
	pending := map[string][]Doc{}
	var pendingTokens = map[string]int64{}
	flush := func(split string) error {
		docs := pending[split]
		if len(docs) == 0 {
			return nil
		}
		s := m.Splits[split]
		name := fmt.Sprintf("%s-%05d.parquet", split, len(s.Shards))
		sha, err := WriteShard(filepath.Join(outDir, name), docs)
		if err != nil {
			return err
		}
		s.Shards = append(s.Shards, Shard{File: name, SHA256: sha, Docs: len(docs), Tokens: pendingTokens[split]})
		m.Splits[split] = s
		pending[split], pendingTokens[split] = nil, 0
		return nil
	}
	for i, f := range files {
		split := "train"
		if isVal.MatchString(filepath.Base(f)) {
			split = "validation"
		}
		ids := append([]int32{bos}, tok.Encode(nil, texts[i])...)
		ids = append(ids, eos)
		pending[split] = append(pending[split], Doc{ID: int32(i), Name: filepath.Base(f), Bytes: int64(len(texts[i])), Tokens: ids})
		pendingTokens[split] += int64(len(ids))
		s := m.Splits[split]
		s.Docs++
		s.Tokens += int64(len(ids))
		s.Bytes += int64(len(texts[i]))
		m.Splits[split] = s
		if pendingTokens[split] >= int64(tokensPerShard) {
			if err := flush(split); err != nil {
				return nil, err
			}
		}
	}
	for _, split := range []string{"train", "validation"} {
		if err := flush(split); err != nil {
			return nil, err
		}
	}
	if m.Splits["train"].Docs == 0 {
		return nil, inputErr("no training documents: every file matched the validation rule %s", isVal)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return m, atomic.WriteFile(filepath.Join(outDir, "manifest.json"), b)
}

// ReadManifest reads dir/manifest.json.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, inputErr("data directory %s: no manifest.json (run qat data prepare)", dir)
		}
		return nil, inputErr("%v", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, inputErr("%s: %v", filepath.Join(dir, "manifest.json"), err)
	}
	return &m, nil
}

// Dataset is one split as a single token stream (documents back to back).
type Dataset struct {
	Tokens []int32
	Bytes  int64 // UTF-8 bytes of the documents' text
	Docs   int
}

// LoadSplit reads and verifies every shard of a split, checking that all
// token ids are below vocab.
func LoadSplit(dir, split string, vocab int) (*Dataset, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	s, ok := m.Splits[split]
	if !ok || len(s.Shards) == 0 {
		return nil, inputErr("data directory %s: no %s split", dir, split)
	}
	if m.VocabSize > vocab {
		return nil, inputErr("data directory %s: tokenized with vocabulary %d, model has %d", dir, m.VocabSize, vocab)
	}
	ds := &Dataset{}
	for _, sh := range s.Shards {
		docs, err := ReadShard(filepath.Join(dir, sh.File), sh.SHA256)
		if err != nil {
			return nil, inputErr("%v", err)
		}
		for _, d := range docs {
			for _, t := range d.Tokens {
				if t < 0 || int(t) >= vocab {
					return nil, inputErr("%s: token id %d outside vocabulary %d", sh.File, t, vocab)
				}
			}
			ds.Tokens = append(ds.Tokens, d.Tokens...)
			ds.Bytes += d.Bytes
			ds.Docs++
		}
	}
	return ds, nil
}
