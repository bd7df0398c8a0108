package data

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
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
	// LossMask says the shards carry a mask: only the assistant's replies
	// count in the loss (conversations). Manifests before it have none.
	LossMask bool `json:"loss_mask,omitempty"`
}

// Split lists one split's shards and totals.
type Split struct {
	Docs   int   `json:"docs"`
	Tokens int64 `json:"tokens"`
	Bytes  int64 `json:"bytes"`
	// Targets counts the tokens the mask lets count (loss_mask only).
	Targets int64   `json:"targets,omitempty"`
	Shards  []Shard `json:"shards"`
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

// Sources expands inputs (files, or directories whose *.txt, *.jsonl and
// *.parquet files are taken) into a sorted list of files.
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
		n := len(files)
		for _, ext := range inputExts {
			m, _ := filepath.Glob(filepath.Join(in, "*"+ext))
			files = append(files, m...)
		}
		if len(files) == n {
			return nil, inputErr("input %s: no *.txt, *.jsonl or *.parquet files", in)
		}
	}
	sort.Strings(files)
	return files, nil
}

// ReadTexts reads the files as text, rejecting text that is not UTF-8 and
// an empty corpus.
func ReadTexts(files []string) ([]string, error) {
	var texts []string
	total := 0
	for _, f := range files {
		t, err := readText(f)
		if err != nil {
			return nil, err
		}
		texts = append(texts, t)
		total += len(t)
	}
	if total == 0 {
		return nil, inputErr("corpus %v is empty", files)
	}
	return texts, nil
}

// readText reads a file that must be UTF-8 text.
func readText(f string) (string, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return "", inputErr("%v", err)
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
		return "", inputErr("%s: not UTF-8 text (invalid byte 0x%02x at offset %d)", f, b[off], off)
	}
	return string(b), nil
}

// Prepare tokenizes files into train and validation shards in outDir and
// writes manifest.json and tokenizer.json there. Each document becomes
// <|bos|> text <|eos|>; isVal decides the split from the file name.
func Prepare(files []string, texts []string, tok *bpe.Tokenizer, outDir string, isVal *regexp.Regexp, tokensPerShard int) (*Manifest, error) {
	v, err := OwnVocab(tok)
	if err != nil {
		return nil, err
	}
	in := make([]Input, len(files))
	for i, f := range files {
		in[i] = Input{File: f, Name: filepath.Base(f), Text: texts[i]}
	}
	return PrepareInputs(in, v, outDir, isVal, tokensPerShard)
}

// PrepareInputs tokenizes documents into train and validation shards in
// outDir (isVal matches a document's file's base name) and writes
// manifest.json and v's files (tokenizer.json, ...) there.
//
// A text becomes BOS text EOS (each where v has one). A conversation
// becomes its chat template's render, tokenized in pieces cut at the
// assistant's replies (chat.Template.Spans), each piece on its own, so a
// token never straddles a reply's edge; its mask is 1 on the replies'
// tokens (with the end-of-turn token) and 0 elsewhere, and the manifest
// says loss_mask: training and evaluation count only the masked-in
// targets. With the real templates and tokenizers the pieces tokenize to
// the whole render's tokens (data/chat's tests check it).
func PrepareInputs(inputs []Input, v *Vocab, outDir string, isVal *regexp.Regexp, tokensPerShard int) (*Manifest, error) {
	if tokensPerShard < 1 || tokensPerShard > MaxTokens {
		return nil, inputErr("tokens per shard %d, want 1 to %d", tokensPerShard, MaxTokens)
	}
	tj, ok := v.Files["tokenizer.json"]
	if !ok {
		return nil, fmt.Errorf("data: Vocab without tokenizer.json")
	}
	// tokenize first: a bad conversation fails before anything is written
	docs := make([]Doc, len(inputs))
	masked := false
	for i, in := range inputs {
		d := Doc{ID: int32(i), Name: in.Name}
		if in.Messages == nil {
			if v.BOS >= 0 {
				d.Tokens = append(d.Tokens, v.BOS)
			}
			d.Tokens = v.Encode(d.Tokens, in.Text)
			if v.EOS >= 0 {
				d.Tokens = append(d.Tokens, v.EOS)
			}
			d.Bytes = int64(len(in.Text))
		} else {
			if v.Template == nil {
				return nil, inputErr("%s: a conversation, and the tokenizer has no chat template (give --tokenizer a model directory whose tokenizer_config.json has chat_template)", in.Name)
			}
			text, spans, err := v.Template.Spans(in.Messages, v.Specials)
			if err != nil {
				return nil, inputErr("%s: %v", in.Name, err)
			}
			at := 0
			piece := func(end int, bit uint8) {
				n := len(d.Tokens)
				d.Tokens = v.Encode(d.Tokens, text[at:end])
				for range len(d.Tokens) - n {
					d.Mask = append(d.Mask, bit)
				}
				at = end
			}
			for _, s := range spans {
				piece(s.Start, 0)
				piece(s.End, 1)
			}
			piece(len(text), 0)
			d.Bytes = int64(len(text))
			masked = true
		}
		docs[i] = d
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, inputErr("output %s: %v", outDir, err)
	}
	names := make([]string, 0, len(v.Files))
	for name := range v.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := atomic.WriteFile(filepath.Join(outDir, name), v.Files[name]); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(tj)
	m := &Manifest{Tokenizer: hex.EncodeToString(sum[:]), VocabSize: v.Size, ValidationRule: isVal.String(),
		Splits: map[string]Split{}, TokensPerShard: tokensPerShard, LossMask: masked}
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
	for i, d := range docs {
		split := "train"
		if isVal.MatchString(filepath.Base(inputs[i].File)) {
			split = "validation"
		}
		if masked && d.Mask == nil { // a text among conversations: every target counts
			d.Mask = make([]uint8, len(d.Tokens))
			for j := range d.Mask {
				d.Mask[j] = 1
			}
		}
		pending[split] = append(pending[split], d)
		pendingTokens[split] += int64(len(d.Tokens))
		s := m.Splits[split]
		s.Docs++
		s.Tokens += int64(len(d.Tokens))
		s.Bytes += d.Bytes
		for _, b := range d.Mask {
			s.Targets += int64(b)
		}
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
	if masked && m.Splits["train"].Targets == 0 {
		return nil, inputErr("no assistant replies in the training documents: the loss would count no token")
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	path := filepath.Join(outDir, "manifest.json")
	// what is written must read back (a --validation rule over the
	// limit, say, is refused here rather than at training time)
	if _, err := ParseManifest(path, b); err != nil {
		return nil, err
	}
	return m, atomic.WriteFile(path, b)
}

// Limits on a manifest.json: generous for real corpora, small enough that
// nothing read from a hostile one makes a large allocation.
const (
	MaxManifestBytes = 64 << 20 // the file
	MaxShards        = 1 << 20  // shards per split
	MaxTokens        = 1 << 40  // tokens (and docs, bytes) per split
	maxText          = 4096     // validation_rule, tokenizer_source
)

// ReadManifest reads and validates dir/manifest.json (ParseManifest).
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, "manifest.json")
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, inputErr("data directory %s: no manifest.json (run qat data prepare)", dir)
		}
		return nil, inputErr("%v", err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.Size() > MaxManifestBytes {
		return nil, inputErr("%s: %d bytes, over %d bytes", path, st.Size(), MaxManifestBytes)
	}
	b, err := io.ReadAll(io.LimitReader(fh, MaxManifestBytes+1))
	if err != nil {
		return nil, inputErr("%s: %v", path, err)
	}
	return ParseManifest(path, b)
}

var (
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	plainName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// ParseManifest decodes a manifest.json (path names it in errors) and
// checks every field: known fields only, vocab_size 1 to bpe.MaxVocab,
// counts non-negative and at most MaxTokens, at most MaxShards shards a
// split, shard files plain names (no path separators, not "." or "..")
// used once, checksums 64 hex digits, and split totals equal to the sums
// of their shards'. Errors are *InputError naming the file and the field.
func ParseManifest(path string, b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, inputErr("%s: over %d bytes", path, MaxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, inputErr("%s: %v", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, inputErr("%s: data after the manifest object", path)
	}
	bad := func(field, format string, a ...any) error {
		return inputErr("%s: %s: "+format, append([]any{path, field}, a...)...)
	}
	if !hexSHA256.MatchString(m.Tokenizer) {
		return nil, bad("tokenizer_sha256", "%q is not 64 hex digits", m.Tokenizer)
	}
	if m.VocabSize < 1 || m.VocabSize > bpe.MaxVocab {
		return nil, bad("vocab_size", "%d, want 1 to %d", m.VocabSize, bpe.MaxVocab)
	}
	if m.TokensPerShard < 1 || int64(m.TokensPerShard) > MaxTokens {
		return nil, bad("tokens_per_shard", "%d, want 1 to %d", m.TokensPerShard, int64(MaxTokens))
	}
	if len(m.ValidationRule) > maxText || len(m.TokenizerSource) > maxText {
		return nil, bad("validation_rule", "validation_rule and tokenizer_source are limited to %d bytes", maxText)
	}
	if _, err := regexp.Compile(m.ValidationRule); err != nil {
		return nil, bad("validation_rule", "%v", err)
	}
	if _, ok := m.Splits["train"]; !ok {
		return nil, bad("splits", "no train split")
	}
	names := make([]string, 0, len(m.Splits))
	for name := range m.Splits {
		names = append(names, name)
	}
	sort.Strings(names) // the first error is the same every time
	files := map[string]string{}
	for _, name := range names {
		s := m.Splits[name]
		field := "splits." + name
		if len(name) > 64 || !plainName.MatchString(name) {
			return nil, bad("splits", "split name %q is not [A-Za-z0-9._-]{1,64}", name)
		}
		for _, c := range []struct {
			what string
			v    int64
		}{{"docs", int64(s.Docs)}, {"tokens", s.Tokens}, {"bytes", s.Bytes}, {"targets", s.Targets}} {
			if c.v < 0 || c.v > MaxTokens {
				return nil, bad(field+"."+c.what, "%d, want 0 to %d", c.v, int64(MaxTokens))
			}
		}
		if s.Targets > s.Tokens || s.Targets > 0 && !m.LossMask {
			return nil, bad(field+".targets", "%d, with %d tokens and loss_mask %t", s.Targets, s.Tokens, m.LossMask)
		}
		if len(s.Shards) > MaxShards {
			return nil, bad(field+".shards", "%d shards, limit %d", len(s.Shards), MaxShards)
		}
		var docs, tokens int64
		for i, sh := range s.Shards {
			f := fmt.Sprintf("%s.shards[%d]", field, i)
			if err := checkFileName(sh.File); err != nil {
				return nil, bad(f+".file", "%q: %v", sh.File, err)
			}
			if other, dup := files[sh.File]; dup {
				return nil, bad(f+".file", "%q is also %s", sh.File, other)
			}
			files[sh.File] = f
			if !hexSHA256.MatchString(sh.SHA256) {
				return nil, bad(f+".sha256", "%q is not 64 hex digits", sh.SHA256)
			}
			if sh.Docs < 0 || int64(sh.Docs) > MaxTokens || sh.Tokens < 0 || sh.Tokens > MaxTokens {
				return nil, bad(f, "docs %d, tokens %d: want 0 to %d", sh.Docs, sh.Tokens, int64(MaxTokens))
			}
			docs += int64(sh.Docs)
			tokens += sh.Tokens
		}
		if docs != int64(s.Docs) || tokens != s.Tokens {
			return nil, bad(field, "docs %d and tokens %d, its shards hold %d and %d", s.Docs, s.Tokens, docs, tokens)
		}
	}
	return &m, nil
}

// checkFileName accepts a plain file name: no path separators, not "." or
// "..", no NUL, at most 255 bytes.
func checkFileName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("not a file name")
	case len(name) > 255:
		return fmt.Errorf("over 255 bytes")
	case strings.ContainsAny(name, "/\\\x00") || filepath.Base(name) != name || filepath.IsAbs(name) || filepath.VolumeName(name) != "":
		return fmt.Errorf("not a plain file name (no directories)")
	}
	return nil
}

// Dataset is one split as a single token stream (documents back to back).
type Dataset struct {
	Tokens []int32
	// Mask, when not nil, says which tokens count as targets (1) and which
	// do not (0: outside the assistant's replies); len(Tokens) long.
	Mask  []uint8
	Bytes int64 // UTF-8 bytes of the documents' text
	Docs  int
}

// LoadSplit reads and verifies every shard of a split, checking that all
// token ids are below vocab. A manifest with loss_mask gives a Dataset
// with a Mask, and every shard must carry one; shards from before masks
// read as unmasked.
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
	var targets int64
	for i, sh := range s.Shards {
		docs, err := ReadShard(filepath.Join(dir, sh.File), sh.SHA256)
		if err != nil {
			return nil, inputErr("%v", err)
		}
		var tokens int64
		for _, d := range docs {
			tokens += int64(len(d.Tokens))
		}
		if len(docs) != sh.Docs || tokens != sh.Tokens {
			return nil, inputErr("%s: splits.%s.shards[%d] (%s): the manifest says %d docs and %d tokens, the shard holds %d and %d",
				filepath.Join(dir, "manifest.json"), split, i, sh.File, sh.Docs, sh.Tokens, len(docs), tokens)
		}
		for _, d := range docs {
			for _, t := range d.Tokens {
				if t < 0 || int(t) >= vocab {
					return nil, inputErr("%s: token id %d outside vocabulary %d", sh.File, t, vocab)
				}
			}
			if (d.Mask != nil) != m.LossMask {
				return nil, inputErr("%s: document %q has a mask %t, the manifest says loss_mask %t", sh.File, d.Name, d.Mask != nil, m.LossMask)
			}
			if m.LossMask {
				for _, b := range d.Mask {
					targets += int64(b)
				}
				ds.Mask = append(ds.Mask, d.Mask...)
			}
			ds.Tokens = append(ds.Tokens, d.Tokens...)
			ds.Bytes += d.Bytes
			ds.Docs++
		}
	}
	if targets != s.Targets {
		return nil, inputErr("%s: splits.%s.targets: the manifest says %d, the shards' masks hold %d", filepath.Join(dir, "manifest.json"), split, s.Targets, targets)
	}
	return ds, nil
}
