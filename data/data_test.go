package data

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"

	"qat/data/bpe"
)

func writeCorpus(t *testing.T) (string, []string) {
	dir := t.TempDir()
	names := []string{"1790_a.txt", "1797_b.txt", "1801_c.txt", "1807_d.txt", "1810_e.txt"}
	for i, n := range names {
		text := strings.Repeat("The state of the union is strong. We the people, in order to form a more perfect union. ", 20+i)
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, names
}

func TestPrepareAndLoad(t *testing.T) {
	src, _ := writeCorpus(t)
	files, err := Sources([]string{src})
	if err != nil {
		t.Fatal(err)
	}
	texts, err := ReadTexts(files)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := bpe.Train(texts, 300)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	m, err := Prepare(files, texts, tok, out, ValidationYear7, 500)
	if err != nil {
		t.Fatal(err)
	}
	if m.Splits["validation"].Docs != 2 || m.Splits["train"].Docs != 3 {
		t.Fatalf("splits %+v: want the two years ending in 7 held out", m.Splits)
	}
	if len(m.Splits["train"].Shards) < 2 {
		t.Errorf("train split in %d shard(s), want several at 500 tokens each", len(m.Splits["train"].Shards))
	}
	ds, err := LoadSplit(out, "train", 300)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(ds.Tokens)) != m.Splits["train"].Tokens || ds.Docs != 3 {
		t.Fatalf("loaded %d tokens of %d docs, manifest says %d", len(ds.Tokens), ds.Docs, m.Splits["train"].Tokens)
	}
	// The token stream decodes back to the documents, each between
	// <|bos|> and <|eos|>.
	dec, _ := tok.Decode(ds.Tokens)
	if dec != texts[0]+texts[2]+texts[4] || ds.Tokens[0] != tok.ID(bpe.BOS) || ds.Tokens[len(ds.Tokens)-1] != tok.ID(bpe.EOS) {
		t.Error("training stream does not decode to the training documents")
	}
	// A changed shard fails its checksum.
	sh := filepath.Join(out, m.Splits["train"].Shards[0].File)
	b, _ := os.ReadFile(sh)
	b[len(b)/2] ^= 1
	os.WriteFile(sh, b, 0o644)
	if _, err := LoadSplit(out, "train", 300); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("corrupted shard: %v", err)
	}
	if _, err := LoadSplit(out, "validation", 100); err == nil {
		t.Error("vocabulary 300 data loaded for a model of 100")
	}
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("ok text \xff\xfe more"), 0o644)
	if _, err := Sources([]string{filepath.Join(dir, "missing")}); err == nil {
		t.Error("missing input accepted")
	}
	if _, err := ReadTexts([]string{empty}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty corpus: %v", err)
	}
	if _, err := ReadTexts([]string{bad}); err == nil || !strings.Contains(err.Error(), "bad.txt") || !strings.Contains(err.Error(), "offset 8") {
		t.Errorf("non-UTF-8: %v", err)
	}
	if _, err := ReadManifest(dir); err == nil || !strings.Contains(err.Error(), "manifest.json") {
		t.Errorf("no manifest: %v", err)
	}
}

func TestLoaderResumesExactly(t *testing.T) {
	ds := &Dataset{}
	for i := 0; i < 1000; i++ {
		ds.Tokens = append(ds.Tokens, int32(i))
	}
	const B, T = 3, 16
	ref, _ := NewLoader(ds, B, T, 7)
	var want [][]int32
	var positions []Position
	for i := 0; i < 50; i++ { // several epochs of 62 windows
		positions = append(positions, ref.Position())
		ids, tg := make([]int32, B*T), make([]int32, B*T)
		ref.Next(ids, tg)
		for j := range ids {
			if tg[j] != ids[j]+1 {
				t.Fatal("targets are not the next tokens")
			}
		}
		want = append(want, ids)
	}
	for _, at := range []int{0, 7, 20, 21, 49} {
		l, _ := NewLoader(ds, B, T, 7)
		if err := l.Seek(positions[at]); err != nil {
			t.Fatal(err)
		}
		for i := at; i < 50; i++ {
			ids, tg := make([]int32, B*T), make([]int32, B*T)
			l.Next(ids, tg)
			if !reflect.DeepEqual(ids, want[i]) {
				t.Fatalf("resumed at batch %d: batch %d differs", at, i)
			}
		}
	}
	other, _ := NewLoader(ds, B, T, 8)
	ids, tg := make([]int32, B*T), make([]int32, B*T)
	other.Next(ids, tg)
	if reflect.DeepEqual(ids, want[0]) {
		t.Error("a different seed gave the same first batch")
	}
	if _, err := NewLoader(&Dataset{Tokens: make([]int32, 10)}, 4, 16, 1); err == nil {
		t.Error("a dataset smaller than a batch was accepted")
	}
}

func TestValidationRule(t *testing.T) {
	for name, want := range map[string]bool{"1797_john_adams_f.txt": true, "2017_donald_j_trump_r.txt": true,
		"1790_george_washington_n.txt": false, "1870_ulysses_s_grant_r.txt": false, "17_x.txt": false} {
		if got := ValidationYear7.MatchString(name); got != want {
			t.Errorf("%s: validation %v, want %v", name, got, want)
		}
	}
	_ = regexp.MustCompile
}

func FuzzDecodeShard(f *testing.F) {
	good, err := EncodeShard([]Doc{{ID: 1, Name: "a", Bytes: 3, Tokens: []int32{1, 2, 3}}, {ID: 2, Name: "b", Tokens: []int32{}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	masked, err := EncodeShard([]Doc{{ID: 1, Name: "c", Bytes: 4, Tokens: []int32{5, 6, 7}, Mask: []uint8{0, 1, 1}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(masked)
	f.Add([]byte("PAR1garbagePAR1"))
	docs := testDocs(2, 200, 9)
	f.Add(encodeWith(f, docs, parquet.WithCompression(compress.Codecs.Snappy)))
	f.Add(encodeWith(f, docs, parquet.WithCompression(compress.Codecs.Zstd), parquet.WithDataPageVersion(parquet.DataPageV2)))
	for _, c := range hostileParquet(f, 300) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var docs []Doc
		var err error
		n := allocated(func() { docs, err = DecodeShard(b) })
		if n > maxCaseAlloc {
			t.Fatalf("decoding a %d-byte file allocated %d MB (%v)", len(b), n>>20, err)
		}
		if err == nil && len(docs) > 8*len(b)+1024 {
			t.Fatalf("%d docs from %d bytes", len(docs), len(b))
		}
	})
}

// TestPageHeader: the compact-protocol page header reader finds the sizes
// and value count of a hand-encoded header and skips fields it does not
// need; truncated headers are errors; zstd frame sizes are read.
func TestPageHeader(t *testing.T) {
	zz := func(v int) []byte { // zigzag varint
		u := uint64(v<<1) ^ uint64(v>>63)
		var out []byte
		for u >= 0x80 {
			out = append(out, byte(u)|0x80)
			u >>= 7
		}
		return append(out, byte(u))
	}
	var h []byte
	h = append(h, 0x15)
	h = append(h, zz(0)...) // 1: type
	h = append(h, 0x15)
	h = append(h, zz(1<<30)...) // 2: uncompressed size
	h = append(h, 0x15)
	h = append(h, zz(10)...)         // 3: compressed size
	h = append(h, 0x18, 2, 'a', 'b') // 4: binary, skipped (a crc is i32; any type must skip)
	h = append(h, 0x1c)              // 5: data_page_header
	h = append(h, 0x15)
	h = append(h, zz(5)...)
	h = append(h, 0x19, 0x25) // a list of 2 i32, skipped
	h = append(h, zz(1)...)
	h = append(h, zz(2)...)
	h = append(h, 0x00, 0x00)
	got, err := pageHeader(append(h, 0xde, 0xad))
	if err != nil || got.uncompressed != 1<<30 || got.compressed != 10 || got.values != 5 || got.len != len(h) {
		t.Fatalf("got %+v, %v (header of %d bytes)", got, err, len(h))
	}
	for n := 0; n < len(h)-1; n++ {
		if _, err := pageHeader(h[:n]); err == nil {
			t.Fatalf("a header cut to %d bytes was accepted", n)
		}
	}
	// zstd: magic, descriptor 0xA0 (4-byte content size, single segment),
	// an RLE block of 1 KiB.
	fr := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0x00, 0x04, 0x00, 0x00, 0x03, 0x20, 0x00, 'x'}
	if f, err := zstdFrame(fr); err != nil || !f.hasContent || f.content != 1024 || f.len != len(fr) {
		t.Fatalf("zstd frame %+v, %v", f, err)
	}
	if err := checkZstd(fr, 1024); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(fr); n++ {
		if err := checkZstd(fr[:n], 1024); err == nil {
			t.Fatalf("a frame cut to %d bytes was accepted", n)
		}
	}
}
