package export

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/autograd"
	"qat/data/bpe"
	"qat/data/gguf"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

var text = strings.Repeat("The state of the Union is strong. We the people of the United States, in order to form a more perfect Union. ", 20)

func testModel(t *testing.T, tied bool) (*layers.Model, *bpe.Tokenizer) {
	tok, err := bpe.Train([]string{text}, 288)
	if err != nil {
		t.Fatal(err)
	}
	c := layers.Config{Vocab: tok.VocabSize(), Dim: 64, Layers: 2, Heads: 2, KVHeads: 1, FFNHidden: 96, RopeTheta: 10000,
		NormEps: 1e-5, Tied: tied, MaxSeq: 32}
	m := layers.New(c)
	m.Init(7)
	return m, tok
}

func logits(m *layers.Model, ids []int32) []float32 {
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	return append([]float32(nil), m.Forward(tp, ids, 1, len(ids)).Data()...)
}

// packedVsForward feeds ids one at a time through the packed decoder and
// returns, per position, the relative RMS difference of its logits from
// the full forward of m.
func packedVsForward(t *testing.T, m *layers.Model, packed map[*autograd.Var]layers.PackedWeight, ids []int32) []float64 {
	full := logits(m, ids)
	d := layers.NewPackedDecoder(m, packed)
	V := m.Vocab
	var rels []float64
	for p, id := range ids {
		l, err := d.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for v := 0; v < V; v++ {
			e := float64(l[v] - full[p*V+v])
			num += e * e
			den += float64(full[p*V+v]) * float64(full[p*V+v])
		}
		rels = append(rels, math.Sqrt(num/den))
	}
	return rels
}

// TestGGUFLossless: a model trained on the Q4_0 (or Q8_0) grid exports to
// a GGUF whose unpacked weights are its fake-quant weights bit for bit and
// whose logits are the fake-quant model's; f32 exports are exact.
func TestGGUFLossless(t *testing.T) {
	for _, c := range []struct {
		quant  string
		preset []qat.Rule
		tied   bool
	}{
		{"q4_0", qat.Presets["w4a16-g32"], true},
		{"q8_0", []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Q8_0, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"}}}, false},
		{"f32", nil, false},
	} {
		m, tok := testModel(t, c.tied)
		if c.preset != nil {
			if err := qat.Prepare(m, c.preset); err != nil {
				t.Fatal(err)
			}
		}
		ids := tok.Encode(nil, "The state of the Union")
		want := logits(m, ids)
		f, err := GGUF(m, tok, c.quant, "test")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "m.gguf")
		if err := gguf.Write(path, f); err != nil {
			t.Fatal(err)
		}
		m2, tok2, _, err := LoadGGUF(path)
		if err != nil {
			t.Fatalf("%s: %v", c.quant, err)
		}
		if got := tok2.Encode(nil, text[:200]); len(got) == 0 || strings.Join(strings.Fields(mustDecode(t, tok2, got)), " ") != strings.Join(strings.Fields(text[:200]), " ") {
			t.Errorf("%s: tokenizer does not round-trip", c.quant)
		}
		for i, ln := range m.Linears() {
			w := ln.Linear.Weight.Data()
			wq := append([]float32(nil), w...)
			mask := make([]uint8, len(w))
			switch c.quant {
			case "q4_0":
				kernels.FakeQuantQ4_0(wq, mask, w)
			case "q8_0":
				kernels.FakeQuantQ8_0(wq, mask, w)
			}
			if ln.Name == "lm_head" {
				wq = w // kept f32
			}
			got := m2.Linears()[i].Linear.Weight.Data()
			for j := range wq {
				if math.Float32bits(got[j]) != math.Float32bits(wq[j]) && !(got[j] == 0 && wq[j] == 0) {
					t.Fatalf("%s %s[%d]: %g from the GGUF, %g fake-quant", c.quant, ln.Name, j, got[j], wq[j])
				}
			}
		}
		got := logits(m2, ids)
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s: logit %d: %g from the GGUF, %g from the model", c.quant, i, got[i], want[i])
			}
		}
	}
}

func mustDecode(t *testing.T, tok *bpe.Tokenizer, ids []int32) string {
	s, err := tok.Decode(ids)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPermuteRotary: with the rows permuted, llama.cpp's rotation of
// adjacent pairs (2j, 2j+1) of q = W x equals the permuted Hugging Face
// rotate-half rotation (pairs j, j+hd/2) of the original q, in float64;
// and the inverse permutation restores W.
func TestPermuteRotary(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	heads, hd, cols, pos := 3, 8, 5, 7.0
	rows := heads * hd
	w, x := make([]float32, rows*cols), make([]float64, cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	matvec := func(w []float32) []float64 {
		q := make([]float64, rows)
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				q[r] += float64(w[r*cols+c]) * x[c]
			}
		}
		return q
	}
	theta := func(j int) float64 { return pos * math.Pow(10000, -2*float64(j)/float64(hd)) }
	hf := matvec(w)
	for h := 0; h < heads; h++ { // rotate-half
		for j := 0; j < hd/2; j++ {
			a, b := hf[h*hd+j], hf[h*hd+hd/2+j]
			s, c := math.Sincos(theta(j))
			hf[h*hd+j], hf[h*hd+hd/2+j] = a*c-b*s, a*s+b*c
		}
	}
	pw := permuteRotary(w, rows, cols, heads, false)
	gg := matvec(pw)
	for h := 0; h < heads; h++ { // adjacent pairs
		for j := 0; j < hd/2; j++ {
			a, b := gg[h*hd+2*j], gg[h*hd+2*j+1]
			s, c := math.Sincos(theta(j))
			gg[h*hd+2*j], gg[h*hd+2*j+1] = a*c-b*s, a*s+b*c
		}
	}
	for h := 0; h < heads; h++ {
		for j := 0; j < hd/2; j++ {
			if math.Abs(gg[h*hd+2*j]-hf[h*hd+j]) > 1e-9 || math.Abs(gg[h*hd+2*j+1]-hf[h*hd+hd/2+j]) > 1e-9 {
				t.Fatalf("head %d pair %d: llama.cpp layout %g,%g vs HF %g,%g", h, j, gg[h*hd+2*j], gg[h*hd+2*j+1], hf[h*hd+j], hf[h*hd+hd/2+j])
			}
		}
	}
	back := permuteRotary(pw, rows, cols, heads, true)
	for i := range w {
		if back[i] != w[i] {
			t.Fatalf("inverse permutation differs at %d", i)
		}
	}
}

// TestGGUFWhatLlamaCppRequires: the metadata llama.cpp refuses to load
// without (each a probe in ../shared/peers/llamacpp/RESULTS.md).
func TestGGUFWhatLlamaCppRequires(t *testing.T) {
	m, tok := testModel(t, true)
	f, err := GGUF(m, tok, "q4_0", "test")
	if err != nil {
		t.Fatal(err)
	}
	if kv, ok := f.Get("llama.attention.layer_norm_rms_epsilon"); !ok || kv.Type != gguf.TypeF32 {
		t.Errorf("llama.attention.layer_norm_rms_epsilon: %+v", kv)
	}
	for _, k := range []string{"llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
		"llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
		"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"} {
		if kv, ok := f.Get(k); !ok || kv.Type != gguf.TypeU32 {
			t.Errorf("%s: %+v, want a u32", k, kv)
		}
	}
	if v, _ := f.U32("llama.rope.dimension_count"); int(v) != m.HeadDim() {
		t.Errorf("rope.dimension_count %d, head_dim %d", v, m.HeadDim())
	}
	if kv, ok := f.Get("tokenizer.ggml.merges"); !ok || len(kv.Value.(gguf.Array).Values.([]string)) != len(tok.Merges) || len(tok.Merges) == 0 {
		t.Errorf("merges: %v", ok)
	}
	accepted := map[string]bool{"default": true, "gpt-2": true, "llama3": true, "llama-bpe": true}
	if pre, err := f.String("tokenizer.ggml.pre"); err != nil || !accepted[pre] {
		t.Errorf("tokenizer.ggml.pre %q (%v) is not a name llama.cpp accepts", pre, err)
	}
	kv, _ := f.Get("tokenizer.ggml.tokens")
	seen := map[string]bool{}
	for _, s := range kv.Value.(gguf.Array).Values.([]string) {
		if seen[s] {
			t.Fatalf("duplicate token %q", s)
		}
		seen[s] = true
	}
	if types, _ := f.Get("tokenizer.ggml.token_type"); len(types.Value.(gguf.Array).Values.([]int32)) != tok.VocabSize() {
		t.Error("token_type length differs from tokens")
	}
	// a vocabulary with a duplicate token string is refused
	dup := *tok
	dup.Tokens = append([]string(nil), tok.Tokens...)
	dup.Tokens[257] = dup.Tokens[256]
	if _, err := GGUF(m, &dup, "q4_0", "test"); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate tokens: %v", err)
	}
	// a Q8_0-trained model refuses a Q4_0 export
	if err := qat.Prepare(m, []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Q8_0, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := GGUF(m, tok, "q4_0", "test"); err == nil {
		t.Error("a q8_0-trained model exported as q4_0")
	}
}

// TestPackedDecoder: generation through the packed Q4_0/Q8_0 kernels
// (activations quantized to Q8_0 on the fly, as llama.cpp runs) follows the
// full forward of the unpacked model closely, and the same tokens win.
func TestPackedDecoder(t *testing.T) {
	for _, quant := range []string{"q4_0", "q8_0"} {
		m, tok := testModel(t, false)
		f, err := GGUF(m, tok, quant, "test")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "m.gguf")
		if err := gguf.Write(path, f); err != nil {
			t.Fatal(err)
		}
		m2, tok2, f2, err := LoadGGUF(path)
		if err != nil {
			t.Fatal(err)
		}
		packed := Packed(m2, f2)
		if want := 7 * len(m2.Layers); len(packed) != want {
			t.Fatalf("%s: %d packed matrices, want %d", quant, len(packed), want)
		}
		for p, rel := range packedVsForward(t, m2, packed, tok2.Encode(nil, "The state of the Union is strong")) {
			// Q8_0 activations: about 0.5% relative error per product
			if rel > 0.02 {
				t.Fatalf("%s position %d: packed logits differ by %.3g (relative RMS)", quant, p, rel)
			}
		}
	}
}

// TestPackedSafetensorsLossless: int4 per-channel (w4a8, minmax), int4
// LSQ per-group and int8 weights pack into compressed-tensors'
// pack-quantized layout and unpack to the fake-quant weights bit for bit.
func TestPackedSafetensorsLossless(t *testing.T) {
	for _, rules := range [][]qat.Rule{
		qat.Presets["w4a8"],
		{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "lsq"}}},
		qat.Presets["w8a8"],
	} {
		m, tok := testModel(t, false)
		if err := qat.Prepare(m, rules); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "packed")
		if err := PackedSafetensors(m, tok, dir, false); err != nil {
			t.Fatal(err)
		}
		m2, _, err := LoadPackedSafetensors(dir)
		if err != nil {
			t.Fatal(err)
		}
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		for i, ln := range m.Linears() {
			want := ln.Linear.Weight.Data()
			if ln.Linear.WeightQuant != nil {
				want = ln.Linear.WeightQuant.Apply(tp, ln.Linear.Weight).Data()
			}
			got := m2.Linears()[i].Linear.Weight.Data()
			for j := range want {
				if math.Float32bits(got[j]) != math.Float32bits(want[j]) && !(got[j] == 0 && want[j] == 0) {
					t.Fatalf("%s %s[%d]: %g unpacked, %g fake-quant", rules[0].Weights.Format, ln.Name, j, got[j], want[j])
				}
			}
		}
		st, _ := os.Stat(filepath.Join(dir, "model.safetensors"))
		t.Logf("%+v: %d bytes", *rules[0].Weights, st.Size())
	}
}

// TestPackedSafetensorsKernels: w4a8 and w8a8 packed safetensors load
// into the per-channel integer kernels, and the key/value-cache decoder
// over them gives the logits of the fake-quant model (same codes; only
// float32 summation order differs), with GWQ's kept values added as a
// sparse correction. A per-group model gets no kernels.
func TestPackedSafetensorsKernels(t *testing.T) {
	group := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"},
		Activations: qat.Presets["w4a8"][0].Activations}}
	gwq := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax", Outliers: 0.01},
		Activations: qat.Presets["w4a8"][0].Activations}}
	qqqg := []qat.Rule{{Match: "model.layers.*", Weights: &qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax", TwoLevel: true},
		Activations: qat.Presets["w4a8-qqq"][0].Activations}}
	for _, preset := range []string{"w4a8", "w8a8", "w4a8-qqq", "qqq-g32", "gwq", "group"} {
		m, tok := testModel(t, false)
		rules := qat.Presets[preset]
		switch preset {
		case "group":
			rules = group
		case "gwq":
			rules = gwq
		case "qqq-g32":
			rules = qqqg
		}
		if err := qat.Prepare(m, rules); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "packed")
		if err := PackedSafetensors(m, tok, dir, false); err != nil {
			t.Fatal(err)
		}
		m2, tok2, packed, err := LoadPackedSafetensorsKernels(dir)
		if err != nil {
			t.Fatal(err)
		}
		if preset == "group" {
			if packed != nil {
				t.Fatalf("%s: %d weights packed for the per-channel kernels", preset, len(packed))
			}
			continue
		}
		if want := 7 * len(m2.Layers); len(packed) != want {
			t.Fatalf("%s: %d packed matrices, want %d", preset, len(packed), want)
		}
		rels := packedVsForward(t, m2, packed, tok2.Encode(nil, "The state of the Union is strong"))
		for p, rel := range rels {
			if rel > 1e-4 {
				t.Fatalf("%s position %d: packed logits differ by %.3g (relative RMS)", preset, p, rel)
			} else if p == len(rels)-1 {
				t.Logf("%s: relative RMS difference %.2g", preset, rel)
			}
		}
	}
}
