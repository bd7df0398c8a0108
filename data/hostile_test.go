package data

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"qat/data/internal/hostile"
)

// maxCaseAlloc bounds what one hostile file may make the reader allocate.
const maxCaseAlloc = hostile.MaxAlloc

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// testDocs makes n documents of about tokens random ids below 300.
func testDocs(n, tokens int, seed uint64) []Doc {
	rng := rand.New(rand.NewPCG(seed, 7))
	docs := make([]Doc, n)
	for i := range docs {
		toks := make([]int32, tokens+rng.IntN(tokens/4+1))
		for j := range toks {
			toks[j] = int32(rng.IntN(300))
		}
		docs[i] = Doc{ID: int32(i), Name: fmt.Sprintf("%d_doc.txt", 1790+i), Bytes: int64(3 * len(toks)), Tokens: toks}
	}
	return docs
}

// encodeWith writes docs with arrow's writer and the given properties.
func encodeWith(t testing.TB, docs []Doc, opts ...parquet.WriterProperty) []byte {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, ShardSchema)
	defer b.Release()
	for _, d := range docs {
		b.Field(0).(*array.Int32Builder).Append(d.ID)
		b.Field(1).(*array.StringBuilder).Append(d.Name)
		b.Field(2).(*array.Int64Builder).Append(d.Bytes)
		l := b.Field(3).(*array.ListBuilder)
		l.Append(true)
		l.ValueBuilder().(*array.Int32Builder).AppendValues(d.Tokens, nil)
	}
	rec := b.NewRecord()
	defer rec.Release()
	tbl := array.NewTableFromRecords(ShardSchema, []arrow.Record{rec})
	defer tbl.Release()
	var buf bytes.Buffer
	if err := pqarrow.WriteTable(tbl, &buf, 1<<16, parquet.NewWriterProperties(opts...), pqarrow.DefaultWriterProps()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// allocated runs f and returns the bytes the process allocated meanwhile.
func allocated(f func()) uint64 { return hostile.Allocated(f) }

// zstdBlock is a block header: last flag, type (0 raw, 1 RLE, 2
// compressed), size.
func zstdBlock(last bool, typ, size int) []byte {
	h := typ<<1 | size<<3
	if last {
		h |= 1
	}
	return []byte{byte(h), byte(h >> 8), byte(h >> 16)}
}

// zstdRLE is a frame of RLE blocks making n bytes: with a 4-byte content
// size (single segment) when fcs, else with a 128 KiB window and none.
func zstdRLE(n int, fcs bool) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if fcs {
		b = binary.LittleEndian.AppendUint32(append(b, 0xa0), uint32(n))
	} else {
		b = append(b, 0x00, 7<<3)
	}
	if n == 0 {
		return append(b, zstdBlock(true, 0, 0)...)
	}
	for n > 0 {
		k := min(n, 128<<10)
		n -= k
		b = append(append(b, zstdBlock(n == 0, 1, k)...), 'x')
	}
	return b
}

func skippable(n int) []byte {
	b := binary.LittleEndian.AppendUint32([]byte{0x50, 0x2a, 0x4d, 0x18}, uint32(n))
	return append(b, make([]byte, n)...)
}

// biggest returns the data page with the largest body.
func biggest(t testing.TB, b []byte) pqPage {
	var best pqPage
	for _, p := range pqPages(t, b) {
		if typ := p.hdr.field(1).i; (typ == pageData || typ == pageDataV2) && p.body > best.body {
			best = p
		}
	}
	if best.body == 0 {
		t.Fatal("no data page")
	}
	return best
}

// TestWritersPass: files from our writer and from arrow's with zstd,
// snappy or no compression, data pages v1 and v2, with and without
// dictionaries, pass CheckPages and decode to what was written; so does a
// zstd page split into several frames, one of them skippable.
func TestWritersPass(t *testing.T) {
	docs := testDocs(4, 30000, 2)
	ours, err := EncodeShard(docs)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ours": ours}
	for _, c := range []compress.Compression{compress.Codecs.Zstd, compress.Codecs.Snappy, compress.Codecs.Uncompressed} {
		for _, v := range []parquet.DataPageVersion{parquet.DataPageV1, parquet.DataPageV2} {
			for _, dict := range []bool{true, false} {
				name := fmt.Sprintf("%s v%d dict=%v", c, v+1, dict)
				files[name] = encodeWith(t, docs, parquet.WithCompression(c), parquet.WithDataPageVersion(v),
					parquet.WithDictionaryDefault(dict), parquet.WithDataPageSize(64<<10))
			}
		}
	}
	// our file with its biggest page re-compressed as two frames and a
	// skippable frame between them
	zc, _ := compress.GetCodec(compress.Codecs.Zstd)
	p := biggest(t, ours)
	files["ours, multi-frame page"] = pqRewritePage(t, ours, p, func(h *tval, body []byte) []byte {
		raw := zc.Decode(make([]byte, h.field(2).i), body)
		half := len(raw) / 2
		out := zc.Encode(nil, raw[:half])
		out = append(out, skippable(5)...)
		return append(out, zc.Encode(nil, raw[half:])...)
	})
	for name, b := range files {
		got, err := DecodeShard(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, docs) {
			t.Errorf("%s: decoded documents differ from those written", name)
		}
	}
}

type hostileCase struct {
	name string
	b    []byte
	want string // in the error ("" any error)
}

func (c hostileCase) Case() hostile.Case { return hostile.Case{Name: c.name, B: c.b, Want: c.want} }

// hostileParquet builds the hostile variants of valid shards of three
// documents of about tokens tokens each.
func hostileParquet(t testing.TB, tokens int) []hostileCase {
	docs := testDocs(3, tokens, 3)
	ours, err := EncodeShard(docs)
	if err != nil {
		t.Fatal(err)
	}
	snappy := encodeWith(t, docs, parquet.WithCompression(compress.Codecs.Snappy))
	v2 := encodeWith(t, docs, parquet.WithCompression(compress.Codecs.Zstd), parquet.WithDataPageVersion(parquet.DataPageV2))
	plain := encodeWith(t, docs, parquet.WithCompression(compress.Codecs.Uncompressed))
	var cs []hostileCase
	add := func(name string, b []byte, want string) { cs = append(cs, hostileCase{name, b, want}) }

	// truncated at 40 places, and with the tail cut
	for i := 1; i <= 40; i++ {
		n := len(ours) * i / 41
		add(fmt.Sprintf("truncated to %d", n), ours[:n], "")
	}
	add("tail cut by 1", ours[:len(ours)-1], "magic")
	// the data cut, the footer kept
	body, _ := pqFooter(t, ours)
	for i := 1; i <= 10; i++ {
		n := len(body) * i / 11
		add(fmt.Sprintf("data cut to %d", n), append(append([]byte(nil), ours[:n]...), ours[len(body):]...), "")
	}

	// footers
	le := binary.LittleEndian
	footer := func(f []byte) []byte {
		return append(le.AppendUint32(append([]byte("PAR1"), f...), uint32(len(f))), "PAR1"...)
	}
	// a schema list of 100M elements: the Thrift decoder would make a
	// slice of 800 MB for it
	add("schema list of 1e8", footer([]byte{0x29, 0xfc, 0x80, 0xc2, 0xd7, 0x2f, 0x00}), "list of 100000000")
	add("binary of 1e8", footer([]byte{0x68, 0x80, 0xc2, 0xd7, 0x2f, 0x00}), "binary of 100000000")
	add("footer length past head", append(le.AppendUint32(append([]byte(nil), ours[:len(ours)-8]...), 1<<30), "PAR1"...), "footer length 1073741824")
	add("encrypted footer", append(append([]byte(nil), ours[:len(ours)-4]...), "PARE"...), "encrypted")
	add("bad head magic", append([]byte("PAR2"), ours[4:]...), "head magic")
	add("footer nested too deep", footer(bytes.Repeat([]byte{0x1c}, 40)), "nested too deep")
	editFooter := func(name, want string, edit func(ft *tval)) {
		body, ft := pqFooter(t, ours)
		edit(&ft)
		add(name, pqAssemble(body, ft), want)
	}
	md := func(ft *tval, c int) *tval { return ft.field(4).elems[0].field(1).elems[c].field(3) }
	editFooter("num_rows 2^40", "rows", func(ft *tval) { ft.set(3, 6, 1<<40) })
	editFooter("codec gzip", "codec GZIP", func(ft *tval) { md(ft, 3).set(4, 5, 2) })
	editFooter("data_page_offset past the end", "outside", func(ft *tval) {
		md(ft, 3).field(9).i = 1 << 40
		md(ft, 3).set(11, 6, 1<<40)
	})
	editFooter("total_compressed_size 2^40", "outside", func(ft *tval) { md(ft, 2).field(7).i = 1 << 40 })
	editFooter("data_page_offset 0", "outside", func(ft *tval) {
		md(ft, 0).field(9).i = 0
		md(ft, 0).set(11, 6, 0)
	})

	// pages
	page := func(name, want string, b []byte, edit func(h *tval, body []byte) []byte) {
		add(name, pqRewritePage(t, b, biggest(t, b), edit), want)
	}
	// padded puts a skippable frame before a short zstd body so that the
	// page stays within MaxPageExpansion and its frames are what fails.
	padded := func(h *tval, body []byte) []byte {
		if n := int(h.field(2).i)/512 - len(body); n > 0 {
			return append(skippable(n), body...)
		}
		return body
	}
	size := func(h *tval) int { return int(h.field(2).i) }
	page("zstd: frames each within the page, 1 GB in all", "frame 1 at +", ours, func(h *tval, _ []byte) []byte {
		var out []byte
		for total := 0; total < 1<<30 && len(out) < 1<<18; total += size(h) {
			out = append(out, zstdRLE(size(h), true)...)
		}
		return out
	})
	page("zstd: frame without content size, 1 GB of RLE blocks", "frame 0 at +0 (no content size) can make 1073741824", ours, func(h *tval, _ []byte) []byte {
		return zstdRLE(1<<30, false)
	})
	page("zstd: RLE frames of 1 MB after a valid frame", "frame 1", ours, func(h *tval, body []byte) []byte {
		for i := 0; i < 100; i++ {
			body = append(body, zstdRLE(1<<20, false)...)
		}
		return body
	})
	page("zstd: content size above the page's", "declares", ours, func(h *tval, _ []byte) []byte {
		return padded(h, zstdRLE(size(h)+1, true))
	})
	page("zstd: content sizes below the page's", "frames declare", ours, func(h *tval, _ []byte) []byte {
		return padded(h, zstdRLE(size(h)-1, true))
	})
	page("zstd: truncated frame", "frame 1 at +8: block", ours, func(h *tval, body []byte) []byte {
		return append(skippable(0), body[:len(body)-8]...)
	})
	page("zstd: truncated block", "block", ours, func(h *tval, _ []byte) []byte {
		f := zstdRLE(size(h), true)
		return padded(h, f[:len(f)-1])
	})
	page("zstd: stray bytes after the frames", "stray bytes", ours, func(h *tval, body []byte) []byte {
		return append(body, 1, 2)
	})
	page("zstd: garbage after the frames", "magic", ours, func(h *tval, body []byte) []byte {
		return append(body, "garbage!"...)
	})
	page("zstd: skippable frame past the page", "skippable", ours, func(h *tval, body []byte) []byte {
		return append(le.AppendUint32([]byte{0x5f, 0x2a, 0x4d, 0x18}, 1<<30), body...)
	})
	page("zstd: dictionary frame", "dictionary", ours, func(h *tval, body []byte) []byte {
		return padded(h, append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x21, 9, 0, 1}, zstdBlock(true, 0, 0)...))
	})
	page("zstd: reserved descriptor bit", "reserved bit", ours, func(h *tval, body []byte) []byte {
		f := zstdRLE(size(h), true)
		f[4] |= 0x08
		return padded(h, f)
	})
	page("zstd: reserved block type", "reserved block type", ours, func(h *tval, body []byte) []byte {
		return padded(h, append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3}, zstdBlock(true, 3, 5)...))
	})
	page("zstd: block over 128 KiB", "over", ours, func(h *tval, body []byte) []byte {
		return padded(h, append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3}, append(zstdBlock(true, 1, 1<<20), 'x')...))
	})
	page("zstd: RLE blocks above the content size", "its blocks make", ours, func(h *tval, body []byte) []byte {
		f := zstdRLE(size(h), true)
		le.PutUint32(f[5:], uint32(size(h)/2))
		return padded(h, f)
	})
	page("uncompressed_page_size 2^30", "uncompressed_page_size 1073741824", ours, func(h *tval, body []byte) []byte {
		h.set(2, 5, 1<<30)
		return body
	})
	page("uncompressed_page_size 4000x the compressed", "expansion", ours, func(h *tval, body []byte) []byte {
		h.set(2, 5, int64(4000*len(body)))
		return body
	})
	page("compressed_page_size past the chunk", "bytes left in the chunk", ours, func(h *tval, body []byte) []byte {
		h.set(3, 5, 1<<30)
		return body
	})
	page("negative page size", "uncompressed_page_size -5", ours, func(h *tval, body []byte) []byte {
		h.set(2, 5, -5)
		return body
	})
	page("num_values 2^30", "num_values", ours, func(h *tval, body []byte) []byte {
		h.field(5).set(1, 5, 1<<30)
		return body
	})
	page("page header type 13", "type 13", ours, func(h *tval, body []byte) []byte {
		h.fields = append(h.fields, tfield{9, tval{typ: 13}})
		return body
	})
	page("snappy: decoded length 4 GB", "snappy: decoded length 4294967295", snappy, func(h *tval, body []byte) []byte {
		_, k := binary.Uvarint(body)
		return append(binary.AppendUvarint(nil, 1<<32-1), body[k:]...)
	})
	page("snappy: decoded length one more", "snappy: decoded length", snappy, func(h *tval, body []byte) []byte {
		n, k := binary.Uvarint(body)
		return append(binary.AppendUvarint(nil, n+1), body[k:]...)
	})
	page("snappy: no preamble", "preamble", snappy, func(h *tval, body []byte) []byte {
		return bytes.Repeat([]byte{0x80}, len(body))
	})
	page("v2: level lengths past the page", "level byte lengths", v2, func(h *tval, body []byte) []byte {
		h.field(8).set(5, 5, 1<<30)
		return body
	})
	page("v2: negative level length", "level byte lengths", v2, func(h *tval, body []byte) []byte {
		h.field(8).set(6, 5, -3)
		return body
	})
	page("v2: frames past the levels", "declares", v2, func(h *tval, body []byte) []byte {
		lv := int(h.field(8).field(5).i + h.field(8).field(6).i)
		return append(body[:lv], padded(h, zstdRLE(size(h)+1, true))...)
	})
	page("v2: uncompressed, sizes differ", "uncompressed page", v2, func(h *tval, body []byte) []byte {
		h.field(8).fields = append(h.field(8).fields, tfield{7, tval{typ: 2}})
		return body
	})
	page("uncompressed: sizes differ", "uncompressed page", plain, func(h *tval, body []byte) []byte {
		return body[:len(body)-1]
	})
	return cs
}

// TestHostileParquet: each hostile file is an error, not a panic; the
// error says where (a field, an offset); decoding allocates under 200 MB.
func TestHostileParquet(t *testing.T) {
	hostile.Check(t, hostile.Cases(hostileParquet(t, 40000)), 50, func(b []byte) error { _, err := DecodeShard(b); return err })
	// Byte flips anywhere may or may not decode, but never panic or
	// allocate without bound.
	good, err := EncodeShard(testDocs(2, 2000, 4))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < 300; i++ {
		b := append([]byte(nil), good...)
		for k := 0; k < 1+rng.IntN(3); k++ {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
		var pan any
		n := allocated(func() {
			defer func() { pan = recover() }()
			DecodeShard(b)
		})
		if pan != nil || n > maxCaseAlloc {
			t.Errorf("flip %d: panic %v, %d MB", i, pan, n>>20)
		}
	}
}

// TestPageErrorsSayWhere: a page error names the row group, the column
// and the page's byte offset.
func TestPageErrorsSayWhere(t *testing.T) {
	ours, err := EncodeShard(testDocs(2, 5000, 6))
	if err != nil {
		t.Fatal(err)
	}
	p := biggest(t, ours)
	b := pqRewritePage(t, ours, p, func(h *tval, _ []byte) []byte { return zstdRLE(int(h.field(2).i)+1, true) })
	_, err = DecodeShard(b)
	want := fmt.Sprintf("row group %d column %d (tokens.list.element), page at byte %d: zstd: frame 0 at +0", p.rg, p.col, p.at)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	pf, err := file.NewParquetReader(bytesReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if err := CheckPages(pf, b); err == nil {
		t.Fatal("CheckPages passed the page")
	}
}
