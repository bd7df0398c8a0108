package data

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"qat/data/bpe"
	"qat/data/chat"
)

// ownChat is a template in our tokenizer's specials: <|bos|> opens a turn,
// <|eos|> ends it.
const ownChat = `{% for m in messages %}<|bos|>{{ m.role }}
{{ m.content | trim }}<|eos|>{% endfor %}{% if add_generation_prompt %}<|bos|>assistant
{% endif %}`

var chatInputs = []Input{
	{File: "c.jsonl", Name: "c.jsonl:1", Messages: conv("system", "Answer briefly.", "user", "What is the union?", "assistant", " The people, together. ")},
	{File: "c.jsonl", Name: "c.jsonl:2", Messages: conv("user", "Hi", "assistant", "Hello there.", "user", "Strong?", "assistant", "The state of the union is strong.")},
	{File: "t.txt", Name: "t.txt", Text: "We the people, in order to form a more perfect union."},
}

// wantChat is the independent computation of a conversation's tokens and
// mask under ownChat: each turn is <|bos|>, the role and newline, the
// trimmed content, <|eos|>, encoded part by part; the assistant's content
// and its <|eos|> are 1, the rest 0.
func wantChat(tok *bpe.Tokenizer, msgs []chat.Message) (ids []int32, mask []uint8) {
	add := func(part []int32, bit uint8) {
		ids = append(ids, part...)
		for range part {
			mask = append(mask, bit)
		}
	}
	for _, m := range msgs {
		bit := uint8(0)
		if m.Role == "assistant" {
			bit = 1
		}
		add([]int32{tok.ID(bpe.BOS)}, 0)
		add(tok.Encode(nil, m.Role+"\n"), 0)
		add(tok.Encode(nil, strings.TrimSpace(m.Content)), bit)
		add([]int32{tok.ID(bpe.EOS)}, bit)
	}
	return ids, mask
}

func ownChatVocab(t *testing.T) (*bpe.Tokenizer, *Vocab) {
	t.Helper()
	var texts []string
	for _, in := range chatInputs {
		texts = append(texts, in.Text)
		for _, m := range in.Messages {
			texts = append(texts, m.Role+"\n"+m.Content)
		}
	}
	tok, err := bpe.Train(texts, 300)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.Compile(ownChat, bpe.BOS, bpe.EOS)
	if err != nil {
		t.Fatal(err)
	}
	tj, err := tok.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVocab(tok, bpe.BOS, bpe.EOS, tmpl, tj, []byte(`{"chat_template": "x"}`))
	if err != nil {
		t.Fatal(err)
	}
	return tok, v
}

// TestPrepareChat: conversations are stored with their masks, a text
// among them unmasked (all ones), and the split loads with the mask
// aligned to the tokens.
func TestPrepareChat(t *testing.T) {
	tok, v := ownChatVocab(t)
	out := t.TempDir()
	m, err := PrepareInputs(chatInputs, v, out, regexp.MustCompile(`^$`), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !m.LossMask {
		t.Fatal("manifest without loss_mask")
	}
	var wantIDs []int32
	var wantMask []uint8
	for _, in := range chatInputs {
		if in.Messages != nil {
			ids, mask := wantChat(tok, in.Messages)
			wantIDs, wantMask = append(wantIDs, ids...), append(wantMask, mask...)
			continue
		}
		ids := append([]int32{tok.ID(bpe.BOS)}, tok.Encode(nil, in.Text)...)
		ids = append(ids, tok.ID(bpe.EOS))
		wantIDs = append(wantIDs, ids...)
		for range ids {
			wantMask = append(wantMask, 1)
		}
	}
	ds, err := LoadSplit(out, "train", tok.VocabSize())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ds.Tokens, wantIDs) || !reflect.DeepEqual(ds.Mask, wantMask) {
		t.Fatalf("tokens %v\nmask %v\nwant %v\n%v", ds.Tokens, ds.Mask, wantIDs, wantMask)
	}
	var ones int64
	for _, b := range wantMask {
		ones += int64(b)
	}
	if m.Splits["train"].Targets != ones {
		t.Fatalf("manifest targets %d, want %d", m.Splits["train"].Targets, ones)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}

	// the loader leaves out the targets the mask does: every window
	// once, in order, against the dataset
	seq := 8
	var got []int32
	Sequential(ds, 2, seq, func(_, tg []int32, _ int) { got = append(got, tg...) })
	for i, y := range got {
		want := wantIDs[i+1]
		if wantMask[i+1] == 0 {
			want = IgnoreTarget
		}
		if y != want {
			t.Fatalf("target %d: %d, want %d", i, y, want)
		}
	}
	l, err := NewLoader(ds, 2, seq, 1)
	if err != nil {
		t.Fatal(err)
	}
	ids, tg := make([]int32, 2*seq), make([]int32, 2*seq)
	for range 5 {
		l.Next(ids, tg)
		for b := 0; b < 2; b++ {
			// the window's start: find it by its ids
			w := -1
			for o := 0; o+seq < len(wantIDs); o += seq {
				if reflect.DeepEqual(wantIDs[o:o+seq], ids[b*seq:(b+1)*seq]) {
					w = o
					break
				}
			}
			if w < 0 {
				t.Fatal("a window that is not in the dataset")
			}
			for j := 0; j < seq; j++ {
				want := wantIDs[w+j+1]
				if wantMask[w+j+1] == 0 {
					want = IgnoreTarget
				}
				if tg[b*seq+j] != want {
					t.Fatalf("loader target %d of window %d: %d, want %d", j, w, tg[b*seq+j], want)
				}
			}
		}
	}
}

// TestPrepareChatRefusals: conversations without a template, and a corpus
// without one assistant reply to train on, are input errors.
func TestPrepareChatRefusals(t *testing.T) {
	tok, v := ownChatVocab(t)
	own, err := OwnVocab(tok)
	if err != nil {
		t.Fatal(err)
	}
	var ie *InputError
	if _, err := PrepareInputs(chatInputs, own, t.TempDir(), regexp.MustCompile(`^$`), 100); err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "c.jsonl:1: a conversation") {
		t.Errorf("no template: %v", err)
	}
	users := []Input{{File: "u.jsonl", Name: "u.jsonl:1", Messages: conv("user", "anyone?")}}
	if _, err := PrepareInputs(users, v, t.TempDir(), regexp.MustCompile(`^$`), 100); err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "no assistant replies") {
		t.Errorf("no replies: %v", err)
	}
	bad, err := chat.Compile(`{{ raise_exception('roles must alternate') }}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	v.Template = bad
	if _, err := PrepareInputs(chatInputs, v, t.TempDir(), regexp.MustCompile(`^$`), 100); err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "c.jsonl:1: ") || !strings.Contains(err.Error(), "roles must alternate") {
		t.Errorf("raise_exception: %v", err)
	}
}

// TestMaskedShards: masks round-trip through a shard; a mask of the wrong
// length or with a value other than 0 and 1 is refused.
func TestMaskedShards(t *testing.T) {
	docs := []Doc{
		{ID: 0, Name: "a", Bytes: 3, Tokens: []int32{1, 2, 3}, Mask: []uint8{0, 1, 1}},
		{ID: 1, Name: "b", Bytes: 0, Tokens: nil, Mask: []uint8{}}, // a masked doc keeps its (empty) mask
	}
	b, err := EncodeShard(docs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeShard(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, docs) {
		t.Fatalf("got %+v, want %+v", got, docs)
	}
	if _, err := EncodeShard([]Doc{{Tokens: []int32{1, 2}, Mask: []uint8{1}}}); err == nil {
		t.Error("a mask shorter than the tokens was written")
	}
	// encode a value of 2, then read it back
	b, err = EncodeShard([]Doc{{Name: "c", Tokens: []int32{1, 2}, Mask: []uint8{1, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeShard(b); err == nil || !strings.Contains(err.Error(), "mask[1] is 2") {
		t.Errorf("mask value 2: %v", err)
	}
	// a text-only shard has no mask column, as before masks
	b, err = EncodeShard([]Doc{{Name: "t", Tokens: []int32{4}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err = DecodeShard(b)
	if err != nil || got[0].Mask != nil {
		t.Fatalf("text shard: %+v, %v", got, err)
	}
}

// conv builds a conversation from role, content pairs.
func conv(rc ...string) []chat.Message {
	var out []chat.Message
	for i := 0; i+1 < len(rc); i += 2 {
		out = append(out, chat.Message{Role: rc[i], Content: rc[i+1]})
	}
	return out
}
