package sweep

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"qat/data"
	"qat/data/atomic"
)

// Row is one row of the results table.
type Row struct {
	ID, Kind, Model, Method, Status, Error string
	N, D                                   int64
	// G is the group size the law sees: the group, or the row length for
	// per-channel scales; GroupName as the sweep gave it ("channel").
	G                  int64
	GroupName          string
	Bits               int64
	Seed               int64
	TrainLoss, ValLoss float64
	FPValLoss, Delta   float64
	WallS, TokensSec   float64
}

// Schema is the results table's.
var Schema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.BinaryTypes.String}, {Name: "kind", Type: arrow.BinaryTypes.String},
	{Name: "model", Type: arrow.BinaryTypes.String}, {Name: "n", Type: arrow.PrimitiveTypes.Int64},
	{Name: "d", Type: arrow.PrimitiveTypes.Int64}, {Name: "g", Type: arrow.PrimitiveTypes.Int64},
	{Name: "group", Type: arrow.BinaryTypes.String}, {Name: "bits", Type: arrow.PrimitiveTypes.Int64},
	{Name: "method", Type: arrow.BinaryTypes.String}, {Name: "seed", Type: arrow.PrimitiveTypes.Int64},
	{Name: "train_loss", Type: arrow.PrimitiveTypes.Float64}, {Name: "val_loss", Type: arrow.PrimitiveTypes.Float64},
	{Name: "fp_val_loss", Type: arrow.PrimitiveTypes.Float64}, {Name: "delta", Type: arrow.PrimitiveTypes.Float64},
	{Name: "wall_s", Type: arrow.PrimitiveTypes.Float64}, {Name: "tokens_per_s", Type: arrow.PrimitiveTypes.Float64},
	{Name: "status", Type: arrow.BinaryTypes.String}, {Name: "error", Type: arrow.BinaryTypes.String},
}, nil)

// Rows gathers the plan's results: one row per entry (status missing for
// an entry that has not run), delta = QAT held-out loss - its paired
// full-precision run's (0 unless both are ok).
func (p *Plan) Rows() ([]Row, error) {
	res := map[string]Result{}
	for i, e := range p.Entries {
		r, ok, err := p.LoadResult(i)
		if err != nil {
			return nil, err
		}
		if !ok {
			r = Result{Entry: e, Status: "missing"}
		}
		res[e.ID] = r
	}
	rows := make([]Row, 0, len(p.Entries))
	for _, e := range p.Entries {
		r := res[e.ID]
		g := int64(e.Group)
		if e.Kind == "qat" && g == 0 {
			g = int64(e.RowLength)
		}
		row := Row{ID: e.ID, Kind: e.Kind, Model: e.Model, Method: e.Method, Status: r.Status, Error: r.Error,
			N: e.N, D: e.D, G: g, GroupName: e.GroupName, Bits: int64(e.Bits), Seed: int64(e.Seed),
			TrainLoss: r.TrainLoss, ValLoss: r.ValLoss, WallS: r.WallS, TokensSec: r.TokensSec}
		if fp, ok := res[e.Pair]; ok && fp.Status == "ok" && r.Status == "ok" {
			row.FPValLoss, row.Delta = fp.ValLoss, r.ValLoss-fp.ValLoss
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// WriteParquet writes rows to path (temp file + rename).
func WriteParquet(path string, rows []Row) error {
	b := array.NewRecordBuilder(memory.DefaultAllocator, Schema)
	defer b.Release()
	str := func(i int) *array.StringBuilder { return b.Field(i).(*array.StringBuilder) }
	i64 := func(i int) *array.Int64Builder { return b.Field(i).(*array.Int64Builder) }
	f64 := func(i int) *array.Float64Builder { return b.Field(i).(*array.Float64Builder) }
	for _, r := range rows {
		str(0).Append(r.ID)
		str(1).Append(r.Kind)
		str(2).Append(r.Model)
		i64(3).Append(r.N)
		i64(4).Append(r.D)
		i64(5).Append(r.G)
		str(6).Append(r.GroupName)
		i64(7).Append(r.Bits)
		str(8).Append(r.Method)
		i64(9).Append(r.Seed)
		f64(10).Append(r.TrainLoss)
		f64(11).Append(r.ValLoss)
		f64(12).Append(r.FPValLoss)
		f64(13).Append(r.Delta)
		f64(14).Append(r.WallS)
		f64(15).Append(r.TokensSec)
		str(16).Append(r.Status)
		str(17).Append(r.Error)
	}
	rec := b.NewRecord()
	defer rec.Release()
	tbl := array.NewTableFromRecords(Schema, []arrow.Record{rec})
	defer tbl.Release()
	var buf bytes.Buffer
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd))
	if err := pqarrow.WriteTable(tbl, &buf, 1<<16, props, pqarrow.DefaultWriterProps()); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomic.WriteFile(path, buf.Bytes())
}

// ReadParquet reads a results table written by WriteParquet; a file that
// is not one is an error naming it and the column at fault.
func ReadParquet(path string) (rows []Row, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return DecodeParquet(path, b)
}

// DecodeParquet decodes a results table (name is for messages).
func DecodeParquet(name string, b []byte) (rows []Row, err error) {
	defer func() {
		// The Parquet reader panics on some malformed files; a bad file
		// is the user's input, not a crash.
		if r := recover(); r != nil {
			rows, err = nil, fmt.Errorf("%s: not a results table: %v", name, r)
		}
	}()
	// sizes in the footer and page headers are checked before the reader
	// allocates by them
	if err := data.CheckFooter(b); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pf, err := file.NewParquetReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer pf.Close()
	if err := data.CheckPages(pf, b); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sc, err := fr.Schema()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !sameColumns(sc, Schema) {
		return nil, fmt.Errorf("%s: columns %v, want a results table's (%v)", name, sc, Schema)
	}
	// A hostile footer can claim any row count and page sizes, which the
	// reader allocates for before it finds the bytes missing (see
	// data.CheckPages); every row takes at least a byte.
	n := pf.NumRows()
	if n < 0 || n > 8*int64(len(b))+1024 {
		return nil, fmt.Errorf("%s: footer claims %d rows in a %d-byte file", name, n, len(b))
	}
	if err := data.CheckPages(pf, b); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// Columns are read on this goroutine: pqarrow's ReadTable reads them
	// on workers, where its panics on malformed files cannot be recovered.
	cols := make([]arrow.Array, len(Schema.Fields()))
	for i := range cols {
		cr, err := fr.GetColumn(context.Background(), i)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ch, err := cr.NextBatch(n)
		if err != nil {
			return nil, fmt.Errorf("%s: column %s: %w", name, Schema.Field(i).Name, err)
		}
		defer ch.Release()
		if int64(ch.Len()) != n || len(ch.Chunks()) != 1 {
			return nil, fmt.Errorf("%s: column %s has %d values in %d chunks, want %d in one", name, Schema.Field(i).Name, ch.Len(), len(ch.Chunks()), n)
		}
		cols[i] = ch.Chunk(0)
	}
	s := func(i int) *array.String { return cols[i].(*array.String) }
	x := func(i int) *array.Int64 { return cols[i].(*array.Int64) }
	f := func(i int) *array.Float64 { return cols[i].(*array.Float64) }
	for j := 0; j < int(n); j++ {
		rows = append(rows, Row{ID: s(0).Value(j), Kind: s(1).Value(j), Model: s(2).Value(j), N: x(3).Value(j),
			D: x(4).Value(j), G: x(5).Value(j), GroupName: s(6).Value(j), Bits: x(7).Value(j), Method: s(8).Value(j),
			Seed: x(9).Value(j), TrainLoss: f(10).Value(j), ValLoss: f(11).Value(j), FPValLoss: f(12).Value(j),
			Delta: f(13).Value(j), WallS: f(14).Value(j), TokensSec: f(15).Value(j), Status: s(16).Value(j), Error: s(17).Value(j)})
	}
	return rows, nil
}

// sameColumns compares names and types (the Parquet reader adds field ids
// as metadata).
func sameColumns(a, b *arrow.Schema) bool {
	if a.NumFields() != b.NumFields() {
		return false
	}
	for i := range a.Fields() {
		if a.Field(i).Name != b.Field(i).Name || !arrow.TypeEqual(a.Field(i).Type, b.Field(i).Type) {
			return false
		}
	}
	return true
}
