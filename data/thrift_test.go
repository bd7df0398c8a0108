package data

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/apache/arrow/go/v17/parquet/file"
)

// A Thrift compact-protocol codec for tests: it decodes a struct into a
// tree that can be edited and encoded again, so that hostile Parquet files
// can be built from valid ones (a page's header and body replaced, the
// footer's offsets shifted to match).

type tval struct {
	typ    byte // compact type: 1/2 bool, 3 byte, 4-6 ints, 7 double, 8 binary, 9/10 list/set, 11 map, 12 struct
	i      int64
	bin    []byte
	et     byte   // list element type; map: key<<4 | value
	elems  []tval // list elements; map: key, value, key, value ...
	fields []tfield
}

type tfield struct {
	id int
	v  tval
}

// field returns the struct's field id, or nil.
func (v *tval) field(id int) *tval {
	for i := range v.fields {
		if v.fields[i].id == id {
			return &v.fields[i].v
		}
	}
	return nil
}

// set sets (or adds) field id to an integer of compact type typ.
func (v *tval) set(id int, typ byte, x int64) {
	if f := v.field(id); f != nil {
		f.typ, f.i = typ, x
		return
	}
	v.fields = append(v.fields, tfield{id, tval{typ: typ, i: x}})
}

type tdec struct {
	b   []byte
	p   int
	err error
}

func (d *tdec) byte1() byte {
	if d.err != nil || d.p >= len(d.b) {
		d.err = fmt.Errorf("truncated at %d", d.p)
		return 0
	}
	d.p++
	return d.b[d.p-1]
}

func (d *tdec) uvarint() uint64 {
	var v uint64
	for s := 0; s < 70 && d.err == nil; s += 7 {
		c := d.byte1()
		v |= uint64(c&0x7f) << s
		if c < 0x80 {
			return v
		}
	}
	return v
}

func (d *tdec) zigzag() int64 { v := d.uvarint(); return int64(v>>1) ^ -int64(v&1) }

func (d *tdec) value(typ byte) tval {
	v := tval{typ: typ}
	switch typ {
	case 1, 2:
	case 3:
		v.i = int64(d.byte1())
	case 4, 5, 6:
		v.i = d.zigzag()
	case 7:
		for i := 0; i < 8; i++ {
			v.i |= int64(d.byte1()) << (8 * i)
		}
	case 8:
		n := d.uvarint()
		if d.err == nil && n > uint64(len(d.b)-d.p) {
			d.err = fmt.Errorf("binary of %d", n)
			return v
		}
		v.bin = append([]byte(nil), d.b[d.p:d.p+int(n)]...)
		d.p += int(n)
	case 9, 10:
		h := d.byte1()
		n := uint64(h >> 4)
		v.et = h & 0x0f
		if n == 15 {
			n = d.uvarint()
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			if v.et == 1 || v.et == 2 {
				v.elems = append(v.elems, tval{typ: v.et, i: int64(d.byte1())})
			} else {
				v.elems = append(v.elems, d.value(v.et))
			}
		}
	case 11:
		n := d.uvarint()
		if n > 0 {
			v.et = d.byte1()
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			v.elems = append(v.elems, d.value(v.et>>4), d.value(v.et&0x0f))
		}
	case 12:
		id := 0
		for d.err == nil {
			h := d.byte1()
			if h&0x0f == 0 {
				break
			}
			if h>>4 != 0 {
				id += int(h >> 4)
			} else {
				id = int(d.zigzag())
			}
			v.fields = append(v.fields, tfield{id, d.value(h & 0x0f)})
		}
	default:
		d.err = fmt.Errorf("type %d at %d", typ, d.p)
	}
	return v
}

func tencode(out []byte, v tval) []byte {
	zz := func(out []byte, x int64) []byte { return binary.AppendUvarint(out, uint64(x<<1)^uint64(x>>63)) }
	switch v.typ {
	case 1, 2:
	case 3:
		out = append(out, byte(v.i))
	case 4, 5, 6:
		out = zz(out, v.i)
	case 7:
		out = binary.LittleEndian.AppendUint64(out, uint64(v.i))
	case 8:
		out = append(binary.AppendUvarint(out, uint64(len(v.bin))), v.bin...)
	case 9, 10:
		if len(v.elems) < 15 {
			out = append(out, byte(len(v.elems))<<4|v.et)
		} else {
			out = binary.AppendUvarint(append(out, 0xf0|v.et), uint64(len(v.elems)))
		}
		for _, e := range v.elems {
			if v.et == 1 || v.et == 2 {
				out = append(out, byte(e.i))
			} else {
				out = tencode(out, e)
			}
		}
	case 11:
		out = binary.AppendUvarint(out, uint64(len(v.elems)/2))
		if len(v.elems) > 0 {
			out = append(out, v.et)
		}
		for _, e := range v.elems {
			out = tencode(out, e)
		}
	case 12:
		last := 0
		for _, f := range v.fields {
			if d := f.id - last; d > 0 && d < 16 {
				out = append(out, byte(d)<<4|f.v.typ)
			} else {
				out = zz(append(out, f.v.typ), int64(f.id))
			}
			last = f.id
			out = tencode(out, f.v)
		}
		out = append(out, 0)
	}
	return out
}

// tstruct decodes the struct at the start of b and its length.
func tstruct(b []byte) (tval, int, error) {
	d := &tdec{b: b}
	v := d.value(12)
	return v, d.p, d.err
}

// pqFooter splits a Parquet file into its body (up to the footer) and
// its decoded footer.
func pqFooter(t testing.TB, b []byte) ([]byte, tval) {
	t.Helper()
	n := int(binary.LittleEndian.Uint32(b[len(b)-8:]))
	start := len(b) - 8 - n
	v, _, err := tstruct(b[start : len(b)-8])
	if err != nil {
		t.Fatalf("footer: %v", err)
	}
	return b[:start], v
}

// pqAssemble is pqFooter's inverse.
func pqAssemble(body []byte, footer tval) []byte {
	out := append([]byte(nil), body...)
	f := tencode(nil, footer)
	out = append(out, f...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(f)))
	return append(out, "PAR1"...)
}

// pqPage is one page of a file: where its header starts, the header's
// length, the decoded header, its compressed body's length.
type pqPage struct {
	rg, col, at, hlen int
	hdr               tval
	body              int
}

// pqPages lists the pages of a valid file, in file order.
func pqPages(t testing.TB, b []byte) []pqPage {
	t.Helper()
	_, ft := pqFooter(t, b)
	var out []pqPage
	for g, rg := range ft.field(4).elems {
		for c, cc := range rg.field(1).elems {
			md := cc.field(3)
			start := md.field(9).i
			if d := md.field(11); d != nil && d.i > 0 && d.i < start {
				start = d.i
			}
			end := start + md.field(7).i
			for at := start; at < end; {
				h, n, err := tstruct(b[at:])
				if err != nil {
					t.Fatalf("page at %d: %v", at, err)
				}
				body := int(h.field(3).i)
				out = append(out, pqPage{g, c, int(at), n, h, body})
				at += int64(n + body)
			}
		}
	}
	return out
}

// pqRewritePage replaces page p's header and body by edit's (edit gets a
// copy of both) and shifts the footer's offsets and sizes to match.
func pqRewritePage(t testing.TB, b []byte, p pqPage, edit func(h *tval, body []byte) []byte) []byte {
	t.Helper()
	body, ft := pqFooter(t, b)
	h := p.hdr
	h.fields = append([]tfield(nil), h.fields...)
	old := append([]byte(nil), b[p.at+p.hlen:p.at+p.hlen+p.body]...)
	nb := edit(&h, old)
	if h.field(3).i == int64(p.body) { // keep compressed_page_size honest unless edit set it
		h.set(3, 5, int64(len(nb)))
	}
	page := append(tencode(nil, h), nb...)
	delta := int64(len(page) - (p.hlen + p.body))
	shift := func(v *tval) {
		if v != nil && v.i > int64(p.at) {
			v.i += delta
		}
	}
	for g := range ft.field(4).elems {
		rg := &ft.field(4).elems[g]
		shift(rg.field(5))
		for c := range rg.field(1).elems {
			cc := &rg.field(1).elems[c]
			shift(cc.field(2))
			shift(cc.field(4))
			shift(cc.field(6))
			md := cc.field(3)
			for _, id := range []int{9, 10, 11, 14} {
				shift(md.field(id))
			}
			if g == p.rg && c == p.col {
				md.field(7).i += delta
			}
		}
		if g == p.rg {
			if v := rg.field(6); v != nil {
				v.i += delta
			}
		}
	}
	out := append(append(append([]byte(nil), body[:p.at]...), page...), body[p.at+p.hlen+p.body:]...)
	return pqAssemble(out, ft)
}

// TestThriftCodec: the test codec re-encodes a real footer and page header
// byte for byte, and a rewrite that changes nothing leaves a file that
// reads the same.
func TestThriftCodec(t *testing.T) {
	docs := testDocs(3, 2000, 1)
	b, err := EncodeShard(docs)
	if err != nil {
		t.Fatal(err)
	}
	body, ft := pqFooter(t, b)
	if got := pqAssemble(body, ft); string(got) != string(b) {
		t.Fatal("footer does not re-encode to the same bytes")
	}
	pages := pqPages(t, b)
	if len(pages) < 4 {
		t.Fatalf("%d pages", len(pages))
	}
	for _, p := range pages {
		if got := tencode(nil, p.hdr); string(got) != string(b[p.at:p.at+p.hlen]) {
			t.Fatalf("page header at %d does not re-encode", p.at)
		}
	}
	// A body grown by a skippable zstd frame shifts everything after it.
	p := pages[len(pages)/2]
	grown := pqRewritePage(t, b, p, func(h *tval, body []byte) []byte {
		return append([]byte{0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3}, body...)
	})
	if len(grown) <= len(b) {
		t.Fatal("rewrite did not grow the file")
	}
	pf, err := file.NewParquetReader(bytesReader(grown))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if err := CheckPages(pf, grown); err != nil {
		t.Fatal(err)
	}
	back, err := DecodeShard(grown)
	if err != nil || len(back) != len(docs) {
		t.Fatalf("rewritten file: %d docs, %v", len(back), err)
	}
}
