package data

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"qat/data/chat"
)

// Input is one document of a corpus: a text, or a conversation.
type Input struct {
	// File is the source file; the validation rule matches its base name,
	// so a file's documents all go to one split.
	File string
	// Name identifies the document in shards and messages: the file's base
	// name, with ":LINE" for a JSON Lines record, ":ROW" for a Parquet row
	// (1-based).
	Name     string
	Text     string
	Messages []chat.Message // a conversation; Text is then empty
}

// Input formats by file extension; a directory contributes its files of
// these kinds.
var inputExts = []string{".txt", ".jsonl", ".parquet"}

// Limits on input files: generous for real corpora, and what keeps a
// hostile file from making an allocation its bytes do not justify.
const (
	// MaxLineBytes bounds one JSON Lines record (64 MiB).
	MaxLineBytes = 64 << 20
	// MaxMessages bounds the messages of one conversation: finding the
	// replies renders the conversation twice per assistant message, so
	// the work grows with the square of its length.
	MaxMessages = 1024
)

// ReadInputs reads the files (Sources) by extension: .txt is one text,
// .jsonl has one JSON object a line with a "text" string or a "messages"
// list of {"role", "content"} strings, .parquet has a "text" string column.
// Errors are *InputError naming the file, the line or row, and the field.
func ReadInputs(files []string) ([]Input, error) {
	var out []Input
	total := 0
	for _, f := range files {
		var docs []Input
		var err error
		switch strings.ToLower(filepath.Ext(f)) {
		case ".jsonl":
			docs, err = readJSONLFile(f)
		case ".parquet":
			docs, err = readParquetText(f)
		default:
			var text string
			if text, err = readText(f); err == nil {
				docs = []Input{{File: f, Name: filepath.Base(f), Text: text}}
			}
		}
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			total += len(d.Text)
			for _, m := range d.Messages {
				total += len(m.Content)
			}
		}
		out = append(out, docs...)
	}
	if total == 0 {
		return nil, inputErr("corpus %v is empty", files)
	}
	return out, nil
}

func readJSONLFile(path string) ([]Input, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, inputErr("%v", err)
	}
	defer fh.Close()
	return ParseJSONL(path, fh)
}

// ParseJSONL reads JSON Lines records from r (path names them in errors):
// one object a line with either "text" (a string) or "messages" (a list of
// objects whose "role" and "content" are strings); other fields are
// ignored, blank lines skipped. A line over MaxLineBytes, a line that is
// not one JSON object, a missing or mistyped field, or text that is not
// UTF-8 is an *InputError naming path:line and the field.
func ParseJSONL(path string, r io.Reader) ([]Input, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	base := filepath.Base(path)
	var out []Input
	var line []byte
	for n := 1; ; n++ {
		line = line[:0]
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			if len(line)+len(chunk) > MaxLineBytes {
				return nil, inputErr("%s:%d: line over %d bytes", path, n, MaxLineBytes)
			}
			line = append(line, chunk...)
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if err != nil && err != io.EOF {
			return nil, inputErr("%s:%d: %v", path, n, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			in, perr := parseRecord(line)
			if perr != nil {
				return nil, inputErr("%s:%d: %v", path, n, perr)
			}
			in.File, in.Name = path, fmt.Sprintf("%s:%d", base, n)
			out = append(out, in)
		}
		if err == io.EOF {
			return out, nil
		}
	}
}

// parseRecord decodes one JSON Lines record.
func parseRecord(line []byte) (Input, error) {
	if !utf8.Valid(line) {
		return Input{}, fmt.Errorf("not UTF-8")
	}
	var rec map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&rec); err != nil {
		return Input{}, fmt.Errorf("not a JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Input{}, fmt.Errorf("more than one JSON value on the line")
	}
	if rec == nil {
		return Input{}, fmt.Errorf("not a JSON object (null)")
	}
	text, hasText := rec["text"]
	msgs, hasMsgs := rec["messages"]
	switch {
	case hasText && hasMsgs:
		return Input{}, fmt.Errorf(`both "text" and "messages": a record is one or the other`)
	case hasText:
		var s string
		if err := json.Unmarshal(text, &s); err != nil {
			return Input{}, fmt.Errorf("field text: %s is not a string", clip(text))
		}
		return Input{Text: s}, nil
	case hasMsgs:
		var raw []json.RawMessage
		if err := json.Unmarshal(msgs, &raw); err != nil {
			return Input{}, fmt.Errorf("field messages: %s is not a list", clip(msgs))
		}
		if len(raw) == 0 || len(raw) > MaxMessages {
			return Input{}, fmt.Errorf("field messages: %d messages, want 1 to %d", len(raw), MaxMessages)
		}
		out := Input{Messages: make([]chat.Message, len(raw))}
		for i, r := range raw {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(r, &m); err != nil || m == nil {
				return Input{}, fmt.Errorf("field messages[%d]: %s is not an object", i, clip(r))
			}
			for _, f := range []struct {
				name string
				dst  *string
			}{{"role", &out.Messages[i].Role}, {"content", &out.Messages[i].Content}} {
				v, ok := m[f.name]
				if !ok {
					return Input{}, fmt.Errorf("field messages[%d].%s: missing", i, f.name)
				}
				if err := json.Unmarshal(v, f.dst); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
					return Input{}, fmt.Errorf("field messages[%d].%s: %s is not a string", i, f.name, clip(v))
				}
			}
			if out.Messages[i].Role == "" {
				return Input{}, fmt.Errorf("field messages[%d].role: empty", i)
			}
		}
		return out, nil
	}
	return Input{}, fmt.Errorf(`no "text" or "messages" field`)
}

// clip quotes at most 40 bytes of a JSON value for a message.
func clip(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 40 {
		return fmt.Sprintf("%q...", b[:40])
	}
	return fmt.Sprintf("%q", b)
}

// readParquetText reads the "text" column of a Parquet file: a top-level
// string column without nulls. The file is checked as shards are
// (CheckFooter, CheckPages) before the reader sizes anything from it, and
// the row count is bounded by the file's size.
func readParquetText(path string) ([]Input, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, inputErr("%v", err)
	}
	texts, err := decodeParquetText(b)
	if err != nil {
		return nil, inputErr("%s: %v", path, err)
	}
	base := filepath.Base(path)
	out := make([]Input, len(texts))
	for i, t := range texts {
		out[i] = Input{File: path, Name: fmt.Sprintf("%s:%d", base, i+1), Text: t}
	}
	return out, nil
}

func decodeParquetText(b []byte) (texts []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			texts, err = nil, fmt.Errorf("malformed parquet: %v", r)
		}
	}()
	if err := CheckFooter(b); err != nil {
		return nil, err
	}
	pf, err := file.NewParquetReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	sch := pf.MetaData().Schema
	col := sch.ColumnIndexByName("text")
	if col < 0 {
		return nil, fmt.Errorf(`no column "text"`)
	}
	if p := sch.Column(col).Path(); p != "text" {
		return nil, fmt.Errorf(`column "text" is nested (%s)`, p)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		return nil, err
	}
	rows := pf.NumRows()
	// A hostile footer can claim any row count and the reader allocates
	// offsets for it; real text rows take bytes, so more than 8 rows per
	// byte of file is a lie.
	if rows < 0 || rows > 8*int64(len(b))+1024 {
		return nil, fmt.Errorf("footer claims %d rows in a %d-byte file", rows, len(b))
	}
	if err := CheckPages(pf, b); err != nil {
		return nil, err
	}
	cr, err := fr.GetColumn(context.Background(), col)
	if err != nil {
		return nil, err
	}
	ch, err := cr.NextBatch(rows)
	if err != nil {
		return nil, err
	}
	defer ch.Release()
	if int64(ch.Len()) != rows {
		return nil, fmt.Errorf("column text has %d rows, want %d", ch.Len(), rows)
	}
	texts = make([]string, 0, rows)
	for _, c := range ch.Chunks() {
		var get func(int) string
		switch a := c.(type) {
		case *array.String:
			get = a.Value
		case *array.LargeString:
			get = a.Value
		default:
			return nil, fmt.Errorf("column text holds %s, want string", c.DataType())
		}
		for i := 0; i < c.Len(); i++ {
			row := len(texts) + 1
			if c.IsNull(i) {
				return nil, fmt.Errorf("row %d: text is null", row)
			}
			s := get(i)
			if !utf8.ValidString(s) {
				return nil, fmt.Errorf("row %d: text is not UTF-8", row)
			}
			texts = append(texts, strings.Clone(s))
		}
	}
	return texts, nil
}
