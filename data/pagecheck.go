package data

import (
	"encoding/binary"
	"fmt"

	"github.com/apache/arrow/go/v17/parquet/file"
)

// CheckPages walks every page header of every column chunk of a Parquet file
// before the Parquet reader sees them and rejects sizes that would make it
// allocate more than the file could hold: the reader sizes its buffers
// from the headers' claims (compressed and uncompressed page sizes, the
// zstd frame's content size) before it finds the bytes missing, so a
// hostile file of a few KB could ask for gigabytes.
func CheckPages(pf *file.Reader, b []byte) error {
	md := pf.MetaData()
	for g := 0; g < pf.NumRowGroups(); g++ {
		rg := md.RowGroup(g)
		for c := 0; c < rg.NumColumns(); c++ {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				return err
			}
			start := cc.DataPageOffset()
			if cc.HasDictionaryPage() && cc.DictionaryPageOffset() > 0 && cc.DictionaryPageOffset() < start {
				start = cc.DictionaryPageOffset()
			}
			n := cc.TotalCompressedSize()
			if start < 4 || n < 0 || start > int64(len(b)) || n > int64(len(b))-start {
				return fmt.Errorf("row group %d column %d: bytes [%d, +%d) outside the %d-byte file", g, c, start, n, len(b))
			}
			chunk := b[start : start+n]
			for off := 0; off < len(chunk); {
				h, err := pageHeader(chunk[off:])
				if err != nil {
					return fmt.Errorf("row group %d column %d, page at %d: %w", g, c, start+int64(off), err)
				}
				body := off + h.len
				if h.compressed < 0 || h.uncompressed < 0 || h.compressed > len(chunk)-body {
					return fmt.Errorf("row group %d column %d: page of %d bytes with %d left in the chunk", g, c, h.compressed, len(chunk)-body)
				}
				// no codec expands a page beyond this
				if h.uncompressed > 1024*h.compressed+4096 || h.uncompressed > 1<<28 {
					return fmt.Errorf("row group %d column %d: page claims %d bytes from %d", g, c, h.uncompressed, h.compressed)
				}
				if h.values < 0 || h.values > 8*h.uncompressed+64 {
					return fmt.Errorf("row group %d column %d: page claims %d values in %d bytes", g, c, h.values, h.uncompressed)
				}
				if fcs, ok := zstdContentSize(chunk[body : body+h.compressed]); ok && fcs > uint64(h.uncompressed) {
					return fmt.Errorf("row group %d column %d: zstd frame claims %d bytes for a %d-byte page", g, c, fcs, h.uncompressed)
				}
				off = body + h.compressed
			}
		}
	}
	return nil
}

type pageHdr struct{ len, uncompressed, compressed, values int }

// pageHeader reads a Thrift compact-protocol PageHeader: fields 2 and 3
// (uncompressed and compressed sizes) and num_values (field 1 of the
// data, dictionary or v2 header, fields 5, 7, 8); the rest is skipped.
func pageHeader(b []byte) (pageHdr, error) {
	r := &compact{b: b}
	var h pageHdr
	r.fields(0, func(id int, typ byte, depth int) bool {
		switch {
		case id == 2 && typ == 5:
			h.uncompressed = int(r.i32())
		case id == 3 && typ == 5:
			h.compressed = int(r.i32())
		case (id == 5 || id == 7 || id == 8) && typ == 12:
			r.fields(depth+1, func(id2 int, typ2 byte, d int) bool {
				if id2 == 1 && typ2 == 5 {
					h.values = int(r.i32())
					return true
				}
				return false
			})
		default:
			return false
		}
		return true
	})
	h.len = r.p
	return h, r.err
}

// compact is a bounds-checked reader of Thrift's compact protocol.
type compact struct {
	b   []byte
	p   int
	err error
}

func (r *compact) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("page header: "+format, a...)
	}
}

func (r *compact) byte1() byte {
	if r.err != nil || r.p >= len(r.b) {
		r.fail("truncated")
		return 0
	}
	r.p++
	return r.b[r.p-1]
}

func (r *compact) varint() uint64 {
	var v uint64
	for s := 0; s < 64; s += 7 {
		c := r.byte1()
		v |= uint64(c&0x7f) << s
		if c < 0x80 || r.err != nil {
			return v
		}
	}
	r.fail("varint too long")
	return 0
}

func (r *compact) i32() int32 {
	v := r.varint()
	return int32(v>>1) ^ -int32(v&1)
}

// fields reads a struct's fields, handing each to f (which reads the value
// and returns true, or returns false to have it skipped).
func (r *compact) fields(depth int, f func(id int, typ byte, depth int) bool) {
	if depth > 16 {
		r.fail("nested too deep")
		return
	}
	id := 0
	for r.err == nil {
		h := r.byte1()
		typ := h & 0x0f
		if typ == 0 {
			return
		}
		if d := int(h >> 4); d != 0 {
			id += d
		} else {
			id = int(r.i32())
		}
		if !f(id, typ, depth) {
			r.skip(typ, depth)
		}
	}
}

func (r *compact) skip(typ byte, depth int) {
	if depth > 16 {
		r.fail("nested too deep")
		return
	}
	switch typ {
	case 1, 2: // bool in a field header
	case 3:
		r.byte1()
	case 4, 5, 6:
		r.varint()
	case 7:
		for i := 0; i < 8; i++ {
			r.byte1()
		}
	case 8:
		n := r.varint()
		if n > uint64(len(r.b)-r.p) {
			r.fail("binary of %d bytes", n)
			return
		}
		r.p += int(n)
	case 9, 10:
		h := r.byte1()
		n, et := uint64(h>>4), h&0x0f
		if n == 15 {
			n = r.varint()
		}
		if n > uint64(len(r.b)-r.p) {
			r.fail("list of %d elements", n)
			return
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			if et == 1 || et == 2 {
				r.byte1() // bools in lists take a byte
			} else {
				r.skip(et, depth+1)
			}
		}
	case 11:
		n := r.varint()
		if n == 0 {
			return
		}
		if n > uint64(len(r.b)-r.p) {
			r.fail("map of %d entries", n)
			return
		}
		kv := r.byte1()
		for i := uint64(0); i < n && r.err == nil; i++ {
			r.skip(kv>>4, depth+1)
			r.skip(kv&0x0f, depth+1)
		}
	case 12:
		r.fields(depth+1, func(int, byte, int) bool { return false })
	default:
		r.fail("type %d", typ)
	}
}

// zstdContentSize reads the content size a zstd frame header declares.
func zstdContentSize(b []byte) (uint64, bool) {
	if len(b) < 5 || binary.LittleEndian.Uint32(b) != 0xFD2FB528 {
		return 0, false
	}
	fhd := b[4]
	single := fhd&0x20 != 0
	p := 5
	if !single {
		p++ // window descriptor
	}
	p += [4]int{0, 1, 2, 4}[fhd&3] // dictionary id
	size := [4]int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		size = 1
	}
	if size == 0 || p+size > len(b) {
		return 0, false
	}
	switch size {
	case 1:
		return uint64(b[p]), true
	case 2:
		return uint64(binary.LittleEndian.Uint16(b[p:])) + 256, true
	case 4:
		return uint64(binary.LittleEndian.Uint32(b[p:])), true
	}
	return binary.LittleEndian.Uint64(b[p:]), true
}
