package data

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"qat/data/atomic"
)

// Doc is one tokenized document of a shard.
type Doc struct {
	ID     int32   // position of the source file in sorted order
	Name   string  // source file name
	Bytes  int64   // UTF-8 bytes of the text
	Tokens []int32 // <|bos|> text <|eos|>, or a rendered conversation
	// Mask is 1 where a token counts as a target, 0 where it does not;
	// nil in shards without a mask column (text only, or written before
	// masks), else as long as Tokens.
	Mask []uint8
}

// ShardSchema is the Arrow schema of token shards.
var ShardSchema = arrow.NewSchema([]arrow.Field{
	{Name: "doc", Type: arrow.PrimitiveTypes.Int32},
	{Name: "name", Type: arrow.BinaryTypes.String},
	{Name: "bytes", Type: arrow.PrimitiveTypes.Int64},
	{Name: "tokens", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
}, nil)

// MaskedShardSchema is ShardSchema with a fifth column, the loss mask (a
// list of 0/1 bytes per document, as long as its tokens).
var MaskedShardSchema = arrow.NewSchema(append(ShardSchema.Fields(),
	arrow.Field{Name: "mask", Type: arrow.ListOf(arrow.PrimitiveTypes.Uint8)}), nil)

// EncodeShard returns docs as a zstd-compressed Parquet file; the mask
// column is written when a document has a mask (then all must, each as
// long as its tokens), so text-only shards are as before masks.
func EncodeShard(docs []Doc) ([]byte, error) {
	schema := ShardSchema
	for _, d := range docs {
		if d.Mask != nil {
			schema = MaskedShardSchema
		}
	}
	for i, d := range docs {
		if schema == MaskedShardSchema && len(d.Mask) != len(d.Tokens) {
			return nil, fmt.Errorf("doc %d (%s): mask of %d for %d tokens", i, d.Name, len(d.Mask), len(d.Tokens))
		}
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	ids := b.Field(0).(*array.Int32Builder)
	names := b.Field(1).(*array.StringBuilder)
	nbytes := b.Field(2).(*array.Int64Builder)
	toks := b.Field(3).(*array.ListBuilder)
	vals := toks.ValueBuilder().(*array.Int32Builder)
	for _, d := range docs {
		ids.Append(d.ID)
		names.Append(d.Name)
		nbytes.Append(d.Bytes)
		toks.Append(true)
		vals.AppendValues(d.Tokens, nil)
		if schema == MaskedShardSchema {
			ml := b.Field(4).(*array.ListBuilder)
			ml.Append(true)
			ml.ValueBuilder().(*array.Uint8Builder).AppendValues(d.Mask, nil)
		}
	}
	rec := b.NewRecord()
	defer rec.Release()
	tbl := array.NewTableFromRecords(schema, []arrow.Record{rec})
	defer tbl.Release()
	var buf bytes.Buffer
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd))
	if err := pqarrow.WriteTable(tbl, &buf, 1<<16, props, pqarrow.DefaultWriterProps()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteShard writes docs to path (temp file + rename) and returns the
// file's SHA-256.
func WriteShard(path string, docs []Doc) (string, error) {
	b, err := EncodeShard(docs)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), atomic.WriteFile(path, b)
}

// DecodeShard parses a shard written by EncodeShard. Malformed input is an
// error, never a panic, and never an allocation the file's bytes do not
// justify: the footer and every page are checked first (CheckFooter,
// CheckPages); columns are read on this goroutine (pqarrow's
// ReadTable reads them on workers, where its panics on hostile files could
// not be recovered) and the reader's panics are turned into errors.
func DecodeShard(b []byte) (docs []Doc, err error) {
	defer func() {
		if r := recover(); r != nil {
			docs, err = nil, fmt.Errorf("malformed parquet: %v", r)
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
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		return nil, err
	}
	sc, err := fr.Schema()
	if err != nil {
		return nil, err
	}
	want := ShardSchema
	if sc.NumFields() == len(MaskedShardSchema.Fields()) {
		want = MaskedShardSchema
	}
	if sc.NumFields() != len(want.Fields()) {
		return nil, fmt.Errorf("%d columns, want %d (%v) or %d with a mask", sc.NumFields(), len(ShardSchema.Fields()), ShardSchema, len(MaskedShardSchema.Fields()))
	}
	for i, f := range want.Fields() {
		g := sc.Field(i)
		if g.Name != f.Name || g.Type.ID() != f.Type.ID() {
			return nil, fmt.Errorf("column %d is %s %s, want %s %s", i, g.Name, g.Type, f.Name, f.Type)
		}
	}
	rows := pf.NumRows()
	// A hostile footer can claim any row count, and the reader allocates
	// for it before it finds the pages missing. Our rows take bytes (a
	// distinct id each), so more rows than 8 per byte of file is a lie.
	if rows < 0 || rows > 8*int64(len(b))+1024 {
		return nil, fmt.Errorf("footer claims %d rows in a %d-byte file", rows, len(b))
	}
	if err := CheckPages(pf, b); err != nil {
		return nil, err
	}
	cols := make([]arrow.Array, len(want.Fields()))
	for i := range cols {
		cr, err := fr.GetColumn(context.Background(), i)
		if err != nil {
			return nil, err
		}
		ch, err := cr.NextBatch(rows)
		if err != nil {
			return nil, err
		}
		defer ch.Release()
		if int64(ch.Len()) != rows {
			return nil, fmt.Errorf("column %d has %d rows, want %d", i, ch.Len(), rows)
		}
		arr, err := array.Concatenate(ch.Chunks(), memory.DefaultAllocator)
		if err != nil {
			return nil, err
		}
		defer arr.Release()
		cols[i] = arr
	}
	ids, ok0 := cols[0].(*array.Int32)
	names, ok1 := cols[1].(*array.String)
	nbytes, ok2 := cols[2].(*array.Int64)
	toks, ok3 := cols[3].(*array.List)
	if !ok0 || !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("column types %T %T %T %T", cols[0], cols[1], cols[2], cols[3])
	}
	vals, ok := toks.ListValues().(*array.Int32)
	if !ok {
		return nil, fmt.Errorf("tokens hold %s, want int32", toks.ListValues().DataType())
	}
	var mask *array.List
	var mvals *array.Uint8
	if len(cols) == 5 {
		if mask, ok = cols[4].(*array.List); ok {
			mvals, ok = mask.ListValues().(*array.Uint8)
		}
		if !ok {
			return nil, fmt.Errorf("mask column holds %s, want list<uint8>", cols[4].DataType())
		}
	}
	offs := toks.Offsets()
	for i := 0; i < int(rows); i++ {
		lo, hi := offs[i], offs[i+1]
		if lo < 0 || hi < lo || int(hi) > vals.Len() {
			return nil, fmt.Errorf("row %d: token offsets [%d,%d) outside %d values", i, lo, hi, vals.Len())
		}
		d := Doc{ID: ids.Value(i), Name: names.Value(i), Bytes: nbytes.Value(i),
			Tokens: append([]int32(nil), vals.Int32Values()[lo:hi]...)}
		if mask != nil {
			ml, mh := mask.Offsets()[i], mask.Offsets()[i+1]
			if ml < 0 || mh < ml || int(mh) > mvals.Len() || mh-ml != hi-lo {
				return nil, fmt.Errorf("row %d: mask offsets [%d,%d) for %d tokens (%d values)", i, ml, mh, hi-lo, mvals.Len())
			}
			d.Mask = append(make([]uint8, 0, mh-ml), mvals.Uint8Values()[ml:mh]...)
			for j, b := range d.Mask {
				if b > 1 {
					return nil, fmt.Errorf("row %d: mask[%d] is %d, want 0 or 1", i, j, b)
				}
			}
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// ReadShard reads and checks a shard file against its expected SHA-256
// (empty: no check).
func ReadShard(path, sha string) ([]Doc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if sha != "" {
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != sha {
			return nil, fmt.Errorf("%s: checksum %x does not match the manifest's %s", path, sum, sha)
		}
	}
	docs, err := DecodeShard(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return docs, nil
}
