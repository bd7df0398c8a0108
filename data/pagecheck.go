package data

import (
	"encoding/binary"
	"fmt"

	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/file"
)

// Limits on what a Parquet file may claim. The reader sizes buffers from
// these claims before it sees the bytes, so each is checked first.
const (
	// MaxPageBytes bounds a page's uncompressed size (64 MiB; writers cut
	// pages at 1 MiB by default).
	MaxPageBytes = 64 << 20
	// MaxPageExpansion bounds a page's uncompressed size by its compressed
	// size: uncompressed <= MaxPageExpansion*compressed + 4096. A hostile
	// file therefore makes the reader allocate at most about this many
	// times its own size.
	MaxPageExpansion = 1024
	// MaxFooterBytes bounds the Thrift footer (1 MiB; ours are a few
	// KB). The Thrift decoder allocates a struct of some hundred bytes
	// for a list element of a few bytes, so this bounds what a hostile
	// footer costs to some tens of MB.
	MaxFooterBytes = 1 << 20
)

// CheckFooter checks a Parquet file's framing ("PAR1" at both ends, a
// footer length inside the file) and walks the Thrift footer before the
// Parquet reader decodes it: the Thrift decoder allocates lists and
// strings by the counts they declare (up to 100 MB each), so every count
// must fit in the bytes left. Encrypted footers ("PARE") are refused.
func CheckFooter(b []byte) error {
	if len(b) < 12 {
		return fmt.Errorf("parquet: %d bytes, too short for a Parquet file", len(b))
	}
	if string(b[:4]) != "PAR1" {
		return fmt.Errorf("parquet: head magic %q, want \"PAR1\"", b[:4])
	}
	switch tail := string(b[len(b)-4:]); tail {
	case "PAR1":
	case "PARE":
		return fmt.Errorf("parquet: encrypted footer (tail magic \"PARE\") not supported")
	default:
		return fmt.Errorf("parquet: tail magic %q, want \"PAR1\"", tail)
	}
	n := uint64(binary.LittleEndian.Uint32(b[len(b)-8:]))
	if n > uint64(len(b)-12) || n > MaxFooterBytes {
		return fmt.Errorf("parquet: footer length %d at byte %d exceeds the %d bytes before it (or the %d limit)",
			n, len(b)-8, len(b)-12, MaxFooterBytes)
	}
	start := len(b) - 8 - int(n)
	r := &compact{b: b[start : len(b)-8], what: "footer"}
	r.fields(0, func(int, byte, int) bool { return false })
	if r.err != nil {
		return fmt.Errorf("parquet: footer at byte %d: %w (at footer byte %d)", start, r.err, r.p)
	}
	return nil
}

// CheckPages walks every page header of every column chunk of a Parquet
// file before the Parquet reader sees them and rejects sizes that would
// make it allocate more than the file could hold. The reader sizes its
// buffers from the headers' claims (compressed and uncompressed page
// sizes) and the codecs size theirs from the compressed stream's own
// claims, so each page's compressed bytes are walked too:
//   - zstd: frame by frame (skippable frames skipped), block by block; the
//     frames' declared content sizes (or, for a frame without one, the
//     most its blocks can make) must add up to the page's uncompressed size
//     and the frames must end exactly at the page's end;
//   - snappy: the decoded length in the preamble must be the page's
//     uncompressed size;
//   - uncompressed: the compressed and uncompressed sizes must agree.
//
// Other codecs are refused. Errors name the row group, the column and
// the page's byte offset in the file.
func CheckPages(pf *file.Reader, b []byte) error {
	md := pf.MetaData()
	for g := 0; g < pf.NumRowGroups(); g++ {
		rg := md.RowGroup(g)
		for c := 0; c < rg.NumColumns(); c++ {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				return fmt.Errorf("row group %d column %d: %w", g, c, err)
			}
			col := fmt.Sprintf("row group %d column %d (%s)", g, c, cc.PathInSchema())
			codec := cc.Compression()
			switch codec {
			case compress.Codecs.Uncompressed, compress.Codecs.Zstd, compress.Codecs.Snappy:
			default:
				return fmt.Errorf("%s: codec %s not supported (zstd, snappy or uncompressed)", col, codec)
			}
			start := cc.DataPageOffset()
			if cc.HasDictionaryPage() && cc.DictionaryPageOffset() > 0 && cc.DictionaryPageOffset() < start {
				start = cc.DictionaryPageOffset()
			}
			n := cc.TotalCompressedSize()
			if start < 4 || n < 0 || start > int64(len(b)) || n > int64(len(b))-start {
				return fmt.Errorf("%s: bytes [%d, +%d) outside the %d-byte file", col, start, n, len(b))
			}
			chunk := b[start : start+n]
			for off := 0; off < len(chunk); {
				at := start + int64(off)
				h, err := pageHeader(chunk[off:])
				if err != nil {
					return fmt.Errorf("%s, page at byte %d: %w", col, at, err)
				}
				body := off + h.len
				if err := h.check(chunk[body:], codec); err != nil {
					return fmt.Errorf("%s, page at byte %d: %w", col, at, err)
				}
				off = body + h.compressed
			}
		}
	}
	return nil
}

// Parquet page types (parquet.thrift PageType).
const (
	pageData       = 0
	pageDictionary = 2
	pageDataV2     = 3
)

type pageHdr struct {
	len, typ, uncompressed, compressed, values int
	// data page v2: level bytes (never compressed) and is_compressed
	defLevels, repLevels int
	v2Compressed         bool
}

// check checks a page's sizes against rest (the bytes of the chunk from
// the page's body on) and, for data and dictionary pages, its compressed
// stream against codec.
func (h *pageHdr) check(rest []byte, codec compress.Compression) error {
	if h.compressed < 0 || h.uncompressed < 0 || h.compressed > len(rest) {
		return fmt.Errorf("compressed_page_size %d, uncompressed_page_size %d with %d bytes left in the chunk",
			h.compressed, h.uncompressed, len(rest))
	}
	if h.uncompressed > MaxPageBytes || h.uncompressed > MaxPageExpansion*h.compressed+4096 {
		return fmt.Errorf("uncompressed_page_size %d from compressed_page_size %d (limits: %d bytes, %dx expansion)",
			h.uncompressed, h.compressed, MaxPageBytes, MaxPageExpansion)
	}
	if h.values < 0 || h.values > 8*h.uncompressed+64 {
		return fmt.Errorf("num_values %d in %d bytes", h.values, h.uncompressed)
	}
	body := rest[:h.compressed]
	size := h.uncompressed
	switch h.typ {
	case pageData, pageDictionary:
	case pageDataV2:
		lv := h.defLevels + h.repLevels
		if h.defLevels < 0 || h.repLevels < 0 || lv > h.compressed || lv > h.uncompressed {
			return fmt.Errorf("level byte lengths %d + %d outside the page's %d compressed and %d uncompressed bytes",
				h.defLevels, h.repLevels, h.compressed, h.uncompressed)
		}
		if !h.v2Compressed {
			codec = compress.Codecs.Uncompressed
		}
		body, size = body[lv:], size-lv
	default:
		return nil // index and unknown pages are skipped by the reader
	}
	switch codec {
	case compress.Codecs.Zstd:
		return checkZstd(body, size)
	case compress.Codecs.Snappy:
		n, k := binary.Uvarint(body)
		if k <= 0 {
			return fmt.Errorf("snappy: no decoded-length preamble in %d bytes", len(body))
		}
		if n != uint64(size) {
			return fmt.Errorf("snappy: decoded length %d, the page says %d", n, size)
		}
	default:
		if len(body) != size {
			return fmt.Errorf("uncompressed page: compressed_page_size %d, uncompressed_page_size %d", h.compressed, h.uncompressed)
		}
	}
	return nil
}

// zstd frame format (RFC 8878).
const (
	zstdMagic         = 0xFD2FB528
	zstdSkippableMask = 0xFFFFFFF0
	zstdSkippable     = 0x184D2A50
	zstdMaxBlock      = 128 << 10 // Block_Maximum_Size at most
)

// checkZstd walks b as a sequence of zstd frames and checks that they
// declare size bytes in all. A frame with a Frame_Content_Size counts that
// size (the decoder stops a frame at it). One without counts what its
// blocks can make at most: raw and RLE blocks their sizes, compressed
// blocks Block_Maximum_Size (min(window, 128 KiB)), which the decoder
// enforces per block; as that overestimates a compressed block that is
// not full (klauspost's encoder writes inputs under 256 bytes as such
// frames), these may exceed size by one maximum block in all.
func checkZstd(b []byte, size int) error {
	var exact, least, most uint64 // content sizes; made for certain and at most by frames without
	known := true                 // every frame declared its size
	sz := uint64(size)
	for p, frame := 0, 0; p < len(b); frame++ {
		if len(b)-p < 4 {
			return fmt.Errorf("zstd: %d stray bytes at +%d after %d frames", len(b)-p, p, frame)
		}
		magic := binary.LittleEndian.Uint32(b[p:])
		if magic&zstdSkippableMask == zstdSkippable {
			if len(b)-p < 8 {
				return fmt.Errorf("zstd: skippable frame %d at +%d truncated", frame, p)
			}
			n := uint64(binary.LittleEndian.Uint32(b[p+4:]))
			if n > uint64(len(b)-p-8) {
				return fmt.Errorf("zstd: skippable frame %d at +%d claims %d bytes, %d left", frame, p, n, len(b)-p-8)
			}
			p += 8 + int(n)
			continue
		}
		if magic != zstdMagic {
			return fmt.Errorf("zstd: frame %d at +%d: magic 0x%08x, want 0x%08x", frame, p, magic, zstdMagic)
		}
		f, err := zstdFrame(b[p:])
		if err != nil {
			return fmt.Errorf("zstd: frame %d at +%d: %w", frame, p, err)
		}
		if f.hasContent {
			if f.content > sz || exact+least+f.content > sz {
				return fmt.Errorf("zstd: frame %d at +%d declares %d bytes, %d with the frames before it, for a page of %d",
					frame, p, f.content, exact+least+f.content, size)
			}
			exact += f.content
		} else {
			known = false
			if f.most > sz+zstdMaxBlock || exact+most+f.most > sz+zstdMaxBlock || exact+least+f.least > sz {
				return fmt.Errorf("zstd: frame %d at +%d (no content size) can make %d bytes, %d with the frames before it, for a page of %d",
					frame, p, f.most, exact+most+f.most, size)
			}
			least += f.least
			most += f.most
		}
		p += f.len
	}
	if known && exact != sz {
		return fmt.Errorf("zstd: frames declare %d bytes, the page says %d", exact, size)
	}
	return nil
}

type zstdFrameInfo struct {
	len        int    // bytes of the frame
	hasContent bool   // Frame_Content_Size present
	content    uint64 // Frame_Content_Size
	least      uint64 // what raw and RLE blocks make
	most       uint64 // most the blocks can make
}

// zstdFrame parses the frame at the start of b (magic checked by the
// caller): header, blocks up to the last, checksum.
func zstdFrame(b []byte) (zstdFrameInfo, error) {
	var f zstdFrameInfo
	if len(b) < 5 {
		return f, fmt.Errorf("header truncated")
	}
	fhd := b[4]
	if fhd&0x08 != 0 {
		return f, fmt.Errorf("reserved bit set in frame header descriptor 0x%02x", fhd)
	}
	single := fhd&0x20 != 0
	p := 5
	window := uint64(0)
	if !single {
		if p >= len(b) {
			return f, fmt.Errorf("window descriptor truncated")
		}
		wd := b[p]
		base := uint64(1) << (10 + wd>>3)
		window = base + base/8*uint64(wd&7)
		p++
	}
	if did := [4]int{0, 1, 2, 4}[fhd&3]; did > 0 {
		if p+did > len(b) {
			return f, fmt.Errorf("dictionary id truncated")
		}
		id := uint64(0)
		for i := did - 1; i >= 0; i-- {
			id = id<<8 | uint64(b[p+i])
		}
		if id != 0 {
			return f, fmt.Errorf("needs dictionary %d", id)
		}
		p += did
	}
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		fcs = 1
	}
	if p+fcs > len(b) {
		return f, fmt.Errorf("frame content size truncated")
	}
	switch fcs {
	case 1:
		f.content = uint64(b[p])
	case 2:
		f.content = uint64(binary.LittleEndian.Uint16(b[p:])) + 256
	case 4:
		f.content = uint64(binary.LittleEndian.Uint32(b[p:]))
	case 8:
		f.content = binary.LittleEndian.Uint64(b[p:])
	}
	f.hasContent = fcs > 0
	p += fcs
	if single {
		window = f.content
	}
	maxBlock := uint64(zstdMaxBlock)
	if !single && window < maxBlock {
		maxBlock = window
	}
	for blk := 0; ; blk++ {
		if p+3 > len(b) {
			return f, fmt.Errorf("block %d header at +%d truncated", blk, p)
		}
		bh := uint32(b[p]) | uint32(b[p+1])<<8 | uint32(b[p+2])<<16
		last, typ, n := bh&1 != 0, (bh>>1)&3, uint64(bh>>3)
		p += 3
		if n > zstdMaxBlock {
			return f, fmt.Errorf("block %d at +%d: size %d over %d", blk, p-3, n, zstdMaxBlock)
		}
		in := n
		switch typ {
		case 0: // raw
			f.least += n
			f.most += n
		case 1: // RLE: one byte, repeated n times
			in = 1
			f.least += n
			f.most += n
		case 2: // compressed
			f.most += maxBlock
		default:
			return f, fmt.Errorf("block %d at +%d: reserved block type 3", blk, p-3)
		}
		if in > uint64(len(b)-p) {
			return f, fmt.Errorf("block %d at +%d: %d bytes, %d left", blk, p-3, in, len(b)-p)
		}
		p += int(in)
		if last {
			break
		}
	}
	if fhd&0x04 != 0 { // content checksum
		if p+4 > len(b) {
			return f, fmt.Errorf("checksum truncated")
		}
		p += 4
	}
	if f.hasContent && (f.least > f.content || f.most < f.content) {
		return f, fmt.Errorf("declares %d bytes, its blocks make %d to %d", f.content, f.least, f.most)
	}
	f.len = p
	return f, nil
}

// pageHeader reads a Thrift compact-protocol PageHeader: fields 1 to 3
// (type, uncompressed and compressed sizes), num_values (field 1 of the
// data, dictionary or v2 header, fields 5, 7, 8) and the v2 header's level
// lengths and is_compressed; the rest is skipped.
func pageHeader(b []byte) (pageHdr, error) {
	r := &compact{b: b, what: "page header"}
	h := pageHdr{v2Compressed: true}
	r.fields(0, func(id int, typ byte, depth int) bool {
		switch {
		case id == 1 && typ == 5:
			h.typ = int(r.i32())
		case id == 2 && typ == 5:
			h.uncompressed = int(r.i32())
		case id == 3 && typ == 5:
			h.compressed = int(r.i32())
		case (id == 5 || id == 7 || id == 8) && typ == 12:
			v2 := id == 8
			r.fields(depth+1, func(id2 int, typ2 byte, d int) bool {
				switch {
				case id2 == 1 && typ2 == 5:
					h.values = int(r.i32())
				case v2 && id2 == 5 && typ2 == 5:
					h.defLevels = int(r.i32())
				case v2 && id2 == 6 && typ2 == 5:
					h.repLevels = int(r.i32())
				case v2 && id2 == 7 && (typ2 == 1 || typ2 == 2):
					h.v2Compressed = typ2 == 1 // compact bools live in the type
				default:
					return false
				}
				return true
			})
		default:
			return false
		}
		return true
	})
	h.len = r.p
	return h, r.err
}

// compact is a bounds-checked reader of Thrift's compact protocol: every
// list, map and binary length must fit in the bytes left (an element
// takes at least a byte), so a walk over a struct proves that a Thrift
// decoder will allocate no more than the bytes justify.
type compact struct {
	b    []byte
	p    int
	err  error
	what string
}

func (r *compact) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(r.what+": "+format, a...)
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
			r.fail("binary of %d bytes at byte %d, %d left", n, r.p, len(r.b)-r.p)
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
			r.fail("list of %d elements at byte %d, %d bytes left", n, r.p, len(r.b)-r.p)
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
			r.fail("map of %d entries at byte %d, %d bytes left", n, r.p, len(r.b)-r.p)
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
		r.fail("type %d at byte %d", typ, r.p)
	}
}
