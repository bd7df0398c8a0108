package data

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
)

func TestParseJSONL(t *testing.T) {
	in := "{\"text\": \"plain \\u00e9 text\", \"id\": 7}\n\n  \n" +
		`{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 🐈"}, {"role": "assistant", "content": "Hello", "extra": 1}], "source": "x"}` + "\r\n" +
		`{"text": ""}` // last line without a newline
	got, err := ParseJSONL("dir/a.jsonl", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Input{
		{File: "dir/a.jsonl", Name: "a.jsonl:1", Text: "plain é text"},
		{File: "dir/a.jsonl", Name: "a.jsonl:4", Messages: conv("system", "Be brief.", "user", "Hi 🐈", "assistant", "Hello")},
		{File: "dir/a.jsonl", Name: "a.jsonl:5", Text: ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// TestParseJSONLBad: every malformed record is an *InputError naming the
// file, the line and the field.
func TestParseJSONLBad(t *testing.T) {
	good := `{"text": "ok"}` + "\n"
	for _, c := range []struct{ line, want string }{
		{`{"text": "a"`, "not a JSON object"},
		{`not json`, "not a JSON object"},
		{`["text"]`, "not a JSON object"},
		{`null`, "not a JSON object"},
		{`{"text": "a"} {"text": "b"}`, "more than one JSON value"},
		{`{"body": "a"}`, `no "text" or "messages" field`},
		{`{"text": 5}`, "field text: \"5\" is not a string"},
		{`{"text": "a", "messages": []}`, `both "text" and "messages"`},
		{`{"messages": "hi"}`, "field messages: \"\\\"hi\\\"\" is not a list"},
		{`{"messages": []}`, "field messages: 0 messages"},
		{`{"messages": [1]}`, "field messages[0]: \"1\" is not an object"},
		{`{"messages": [{"role": "user", "content": "a"}, {"role": 3, "content": "b"}]}`, "field messages[1].role: \"3\" is not a string"},
		{`{"messages": [{"role": ["user"], "content": "b"}]}`, "field messages[0].role"},
		{`{"messages": [{"role": "user", "content": null}]}`, "field messages[0].content: \"null\" is not a string"},
		{`{"messages": [{"role": "user"}]}`, "field messages[0].content: missing"},
		{`{"messages": [{"content": "x"}]}`, "field messages[0].role: missing"},
		{`{"messages": [{"role": "", "content": "x"}]}`, "field messages[0].role: empty"},
		{"{\"text\": \"\xff\"}", "not UTF-8"},
	} {
		_, err := ParseJSONL("d/bad.jsonl", strings.NewReader(good+c.line+"\n"+good))
		var ie *InputError
		if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "d/bad.jsonl:2: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want an InputError at d/bad.jsonl:2 saying %s", c.line, err, c.want)
		}
	}
}

// TestParseJSONLLongLine: a line over MaxLineBytes is refused when the
// reader has read past the limit, not after reading the whole line.
func TestParseJSONLLongLine(t *testing.T) {
	r := &endless{}
	_, err := ParseJSONL("big.jsonl", r)
	if err == nil || !strings.Contains(err.Error(), "big.jsonl:1: line over") {
		t.Fatalf("err %v", err)
	}
	if r.n > MaxLineBytes+1<<20 {
		t.Fatalf("read %d bytes before refusing", r.n)
	}
}

// endless is a reader of one endless line.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += len(p)
	return len(p), nil
}

// FuzzParseJSONL: any input is records or an *InputError naming the file,
// never a panic; every record is a text or a conversation of string roles.
func FuzzParseJSONL(f *testing.F) {
	f.Add([]byte(`{"text": "a"}` + "\n" + `{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}`))
	f.Add([]byte(`{"messages": [{"role": 1}]}`))
	f.Add([]byte("\n\n{\"text\": \"\\ud800\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		docs, err := ParseJSONL("f.jsonl", bytes.NewReader(b))
		if err != nil {
			var ie *InputError
			if !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), "f.jsonl:") {
				t.Fatalf("error %v is not an InputError naming the file", err)
			}
			return
		}
		for _, d := range docs {
			if d.Messages != nil && d.Text != "" {
				t.Fatalf("%s: both text and messages", d.Name)
			}
			for _, m := range d.Messages {
				if m.Role == "" {
					t.Fatalf("%s: empty role", d.Name)
				}
			}
		}
	})
}

// textParquet writes a Parquet file with an id column and a column named
// col of type typ holding texts (nil: a null row).
func textParquet(t testing.TB, col string, typ arrow.DataType, texts []*string) []byte {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: col, Type: typ, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i, s := range texts {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		switch fb := b.Field(1).(type) {
		case *array.StringBuilder:
			if s == nil {
				fb.AppendNull()
			} else {
				fb.Append(*s)
			}
		case *array.LargeStringBuilder:
			fb.Append(*s)
		case *array.Int64Builder:
			fb.Append(int64(len(*s)))
		}
	}
	rec := b.NewRecord()
	defer rec.Release()
	tbl := array.NewTableFromRecords(schema, []arrow.Record{rec})
	defer tbl.Release()
	var buf bytes.Buffer
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd))
	if err := pqarrow.WriteTable(tbl, &buf, 2, props, pqarrow.DefaultWriterProps()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func strs(s ...string) []*string {
	out := make([]*string, len(s))
	for i := range s {
		out[i] = &s[i]
	}
	return out
}

func TestParquetText(t *testing.T) {
	dir := t.TempDir()
	texts := []string{"first document", "", "unicode: é 猫 🐈", strings.Repeat("long ", 1000)}
	for _, typ := range []arrow.DataType{arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString} {
		path := filepath.Join(dir, "t.parquet")
		if err := os.WriteFile(path, textParquet(t, "text", typ, strs(texts...)), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readParquetText(path)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if len(got) != len(texts) {
			t.Fatalf("%s: %d rows, want %d", typ, len(got), len(texts))
		}
		for i, d := range got {
			if d.Text != texts[i] || d.Name != "t.parquet:"+string(rune('1'+i)) || d.File != path {
				t.Errorf("%s: row %d: %+v", typ, i, d)
			}
		}
	}
	bad := []struct {
		name string
		b    []byte
		want string
	}{
		{"nocol", textParquet(t, "body", arrow.BinaryTypes.String, strs("a")), `no column "text"`},
		{"int", textParquet(t, "text", arrow.PrimitiveTypes.Int64, strs("a", "b")), "column text holds int64, want string"},
		{"null", textParquet(t, "text", arrow.BinaryTypes.String, []*string{&texts[0], nil}), "row 2: text is null"},
		{"notparquet", []byte("PAR1 not really"), "parquet:"},
	}
	for _, c := range bad {
		path := filepath.Join(dir, c.name+".parquet")
		if err := os.WriteFile(path, c.b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadInputs([]string{path})
		var ie *InputError
		if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want an InputError naming %s and saying %s", c.name, err, path, c.want)
		}
	}
}

// TestParquetTextHostile: byte flips in a text file are an error or texts,
// never a panic or an allocation past the hostile bound.
func TestParquetTextHostile(t *testing.T) {
	good := textParquet(t, "text", arrow.BinaryTypes.String, strs("alpha beta", "gamma", strings.Repeat("delta ", 200), "epsilon"))
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 300; i++ {
		b := append([]byte(nil), good...)
		for k := 0; k < 1+rng.IntN(3); k++ {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
		var pan any
		n := allocated(func() {
			defer func() { pan = recover() }()
			decodeParquetText(b)
		})
		if pan != nil || n > maxCaseAlloc {
			t.Errorf("flip %d: panic %v, %d MB", i, pan, n>>20)
		}
	}
}

// TestReadInputsMixed: a directory of text, JSON Lines and Parquet files
// reads in sorted order, each file's documents in order.
func TestReadInputsMixed(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.txt", []byte("text file"))
	write("b.jsonl", []byte(`{"text": "line one"}`+"\n"+`{"messages": [{"role": "user", "content": "q"}]}`+"\n"))
	write("c.parquet", textParquet(t, "text", arrow.BinaryTypes.String, strs("row one")))
	write("d.md", []byte("not an input"))
	files, err := Sources([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	docs, err := ReadInputs(files)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range docs {
		names = append(names, d.Name)
	}
	if want := []string{"a.txt", "b.jsonl:1", "b.jsonl:2", "c.parquet:1"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("documents %v, want %v", names, want)
	}
	if docs[2].Messages[0].Content != "q" || docs[3].Text != "row one" {
		t.Fatalf("documents %+v", docs)
	}
}

// FuzzTokenizerConfig: any tokenizer_config.json is read or refused with an
// *InputError naming it, never a panic.
func FuzzTokenizerConfig(f *testing.F) {
	f.Add([]byte(`{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": "{{ messages }}"}`))
	f.Add([]byte(`{"chat_template": [{"name": "default", "template": "x"}, {"name": "tool_use", "template": "y"}]}`))
	f.Add([]byte(`{"bos_token": null, "chat_template": [{"name": "rag"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadTokenizerConfig(dir); err != nil {
			var ie *InputError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), "tokenizer_config.json") {
				t.Fatalf("error %v is not an InputError naming the file", err)
			}
		}
	})
}

func TestTokenizerConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("tokenizer_config.json", `{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`)
	c, err := ReadTokenizerConfig(dir)
	if err != nil || c.BOS != "<s>" || c.EOS != "</s>" || c.ChatTemplate != "D" {
		t.Fatalf("%+v, %v", c, err)
	}
	write("chat_template.jinja", "J") // transformers >= 4.43 keeps it beside the config
	if c, err = ReadTokenizerConfig(dir); err != nil || c.ChatTemplate != "J" {
		t.Fatalf("%+v, %v", c, err)
	}
	write("tokenizer_config.json", `{"bos_token": 5}`)
	if _, err = ReadTokenizerConfig(dir); err == nil || !strings.Contains(err.Error(), "bos_token") {
		t.Fatalf("bos_token 5: %v", err)
	}
}
