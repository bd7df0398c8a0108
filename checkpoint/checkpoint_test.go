package checkpoint

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/autograd"
	"qat/data/bpe"
	"qat/data/gguf"
	"qat/export"
	"qat/layers"
	"qat/qat"
)

func tiny(t *testing.T) (*layers.Model, *bpe.Tokenizer) {
	t.Helper()
	tok, err := bpe.Train([]string{"the state of the union is strong; the union of the states"}, 280)
	if err != nil {
		t.Fatal(err)
	}
	m := layers.New(layers.Config{Vocab: tok.VocabSize(), Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 64,
		RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 16})
	m.Init(3)
	return m, tok
}

func logits(m *layers.Model) []float32 {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	ids := make([]int32, 2*16)
	for i := range ids {
		ids[i] = int32(i*37) % int32(m.Vocab)
	}
	return append([]float32(nil), m.Forward(tp, ids, 2, 16).Data()...)
}

func same(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: logit %d is %g, want %g (bit for bit)", what, i, got[i], want[i])
		}
	}
}

// TestLoadEveryFormat: each format Load opens gives the model that was
// written, logits bit for bit (the GGUF at f32, the packed safetensors of
// a w4a8 model equal to its fake-quant), and says which format it was.
func TestLoadEveryFormat(t *testing.T) {
	root := t.TempDir()
	m, tok := tiny(t)
	fp := logits(m)

	// a run directory and its checkpoint
	run := filepath.Join(root, "run")
	ck := filepath.Join(run, Name(7))
	os.MkdirAll(ck, 0o755)
	if err := Write(ck, m, tok, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ck, "state.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(run, "latest"), []byte(Name(7)+"\n"), 0o644)
	for _, p := range []string{ck, run} {
		got, err := Load(p)
		if err != nil {
			t.Fatalf("Load(%s): %v", p, err)
		}
		if got.Kind != Dir || got.Path != ck || got.Rules != nil || got.Adapters || got.Tok.VocabSize() != tok.VocabSize() {
			t.Errorf("Load(%s): kind %v, path %s, rules %v", p, got.Kind, got.Path, got.Rules)
		}
		same(t, "checkpoint "+p, logits(got.Model), fp)
	}
	if _, err := LoadPacked(ck); err == nil || !strings.Contains(err.Error(), "float checkpoint") {
		t.Errorf("LoadPacked of a float checkpoint: %v", err)
	}

	// GGUF at f32
	f, err := export.GGUF(m, tok, "f32", "tiny")
	if err != nil {
		t.Fatal(err)
	}
	gg := filepath.Join(root, "tiny.gguf")
	if err := gguf.Write(gg, f); err != nil {
		t.Fatal(err)
	}
	got, err := Load(gg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != GGUF {
		t.Errorf("GGUF loaded as %v", got.Kind)
	}
	same(t, "GGUF f32", logits(got.Model), fp)
	if p, err := LoadPacked(gg); err != nil || p.PackedWeights == nil {
		t.Errorf("LoadPacked(GGUF): %v", err)
	}

	// a QAT checkpoint (quant.json) and its packed safetensors
	rules := qat.Presets["w4a8"]
	if err := qat.Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	fq := logits(m)
	qdir := filepath.Join(root, "w4a8")
	os.MkdirAll(qdir, 0o755)
	if err := Write(qdir, m, tok, rules); err != nil {
		t.Fatal(err)
	}
	got, err = Load(qdir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Rules) != len(rules) {
		t.Errorf("quant.json: %d rules, want %d", len(got.Rules), len(rules))
	}
	same(t, "w4a8 checkpoint", logits(got.Model), fq)
	pdir := filepath.Join(root, "packed")
	if err := export.PackedSafetensors(m, tok, pdir, false); err != nil {
		t.Fatal(err)
	}
	got, err = Load(pdir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != Packed || !IsPacked(pdir) || IsPacked(qdir) {
		t.Errorf("packed safetensors loaded as %v", got.Kind)
	}
	same(t, "packed safetensors", logits(got.Model), fq)
	if p, err := LoadPacked(pdir); err != nil || p.PackedWeights == nil {
		t.Errorf("LoadPacked(packed w4a8): %v", err)
	}
}

// TestResolve: a run directory resolves to the checkpoint latest names;
// anything else is an error naming the path.
func TestResolve(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct{ latest, want string }{
		{"ckpt-0000003\n", "not a checkpoint"}, // names a directory that is not there
		{"../../etc\n", "not a checkpoint name"},
	} {
		os.WriteFile(filepath.Join(root, "latest"), []byte(c.latest), 0o644)
		if _, err := Resolve(root); err == nil || !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("latest %q: %v", c.latest, err)
		}
	}
	for name, want := range map[string]int{"ckpt-0000010": 10, "ckpt-12345678": 12345678} {
		if n, ok := Step(name); !ok || n != want {
			t.Errorf("Step(%s) = %d, %v", name, n, ok)
		}
	}
	for _, bad := range []string{"ckpt-", "ckpt-12a", "ckpt-0000010.tmp3", "latest"} {
		if _, ok := Step(bad); ok {
			t.Errorf("Step(%s) accepted", bad)
		}
	}
}

// TestLoadsFixtures: checkpoints of every kind written before the redesign
// (testdata/v1, with the logits the loaders of that commit computed) load
// today with the same logits, bit for bit.
func TestLoadsFixtures(t *testing.T) {
	for _, name := range []string{"fp32", "w4a8", "lrqat", "gptq", "gwq", "packed", "model.gguf"} {
		p := filepath.Join("testdata", "v1", name)
		m, err := Load(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b, err := os.ReadFile(p + ".logits")
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float32, len(b)/4)
		for i := range want {
			want[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		ids := make([]int32, 16)
		for i := range ids {
			ids[i] = int32(i*37) % int32(m.Vocab)
		}
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		same(t, name, m.Forward(tp, ids, 1, 16).Data(), want)
	}
}
