package export

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"qat/data/bpe"
	"qat/data/gguf"
	"qat/layers"
)

// TestGGUFArchitectures: models with head_dim != dim/heads, llama3
// rope_scaling (llama, rope_freqs) and q/k/v biases (qwen2, no rotary
// permutation) export to GGUF and read back with the same config, weights
// and logits, and the packed Q8_0 decoder of the file matches the model.
func TestGGUFArchitectures(t *testing.T) {
	tok, err := bpe.Train([]string{text}, 288)
	if err != nil {
		t.Fatal(err)
	}
	base := layers.Config{Vocab: tok.VocabSize(), Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 96, RopeTheta: 500000,
		NormEps: 1e-5, Tied: true, MaxSeq: 64}
	llama3 := base
	llama3.HeadDimension = 32
	llama3.RopeScaling = layers.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 16}
	qwen2 := base
	qwen2.QKVBias = true
	qwen2.Tied = false
	for name, c := range map[string]layers.Config{"llama3": llama3, "qwen2": qwen2} {
		m := layers.New(c)
		m.Init(3)
		r := rand.New(rand.NewPCG(1, 2))
		for _, l := range m.Layers {
			for _, lin := range []*layers.Linear{l.Attn.Q, l.Attn.K, l.Attn.V} {
				if lin.Bias != nil {
					for i := range lin.Bias.Data() {
						lin.Bias.Data()[i] = float32(r.NormFloat64())
					}
				}
			}
		}
		ids := tok.Encode(nil, "The state of the Union is strong")
		want := logits(m, ids)
		for _, quant := range []string{"f32", "q8_0"} {
			f, err := GGUF(m, tok, quant, name)
			if err != nil {
				t.Fatal(err)
			}
			if a, _ := f.String("general.architecture"); a != ggufArch(c) {
				t.Fatalf("%s: architecture %q", name, a)
			}
			path := filepath.Join(t.TempDir(), name+".gguf")
			if err := gguf.Write(path, f); err != nil {
				t.Fatal(err)
			}
			m2, _, f2, err := LoadGGUF(path)
			if err != nil {
				t.Fatalf("%s %s: %v", name, quant, err)
			}
			wc := c
			wc.NormEps = float64(float32(c.NormEps)) // GGUF holds it as f32
			if m2.Config != wc {
				t.Fatalf("%s: config %+v read back, wrote %+v", name, m2.Config, c)
			}
			got := logits(m2, ids)
			tol := 1e-5
			if quant == "q8_0" {
				tol = 0.05
			}
			for i := range want {
				if math.Abs(float64(got[i]-want[i])) > tol*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("%s %s: logit %d: %g from the GGUF, %g from the model", name, quant, i, got[i], want[i])
				}
			}
			if quant == "q8_0" {
				for p, rel := range packedVsForward(t, m2, Packed(m2, f2), ids) {
					if rel > 1e-2 {
						t.Errorf("%s: packed decoder at %d: relative RMS %g from the model", name, p, rel)
					}
				}
			}
		}
	}
}

// TestRopeFreqsRefused: a rope_freqs tensor without the keys qat writes
// (another converter's file), or with other factors, is refused naming it.
func TestRopeFreqsRefused(t *testing.T) {
	tok, _ := bpe.Train([]string{text}, 288)
	c := layers.Config{Vocab: tok.VocabSize(), Dim: 64, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 96, RopeTheta: 500000,
		NormEps: 1e-5, Tied: true, MaxSeq: 64,
		RopeScaling: layers.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 16}}
	m := layers.New(c)
	m.Init(1)
	for name, mutate := range map[string]func(f *gguf.File){
		"no keys": func(f *gguf.File) {
			kvs := f.KVs[:0]
			for _, kv := range f.KVs {
				if !strings.HasPrefix(kv.Key, "qat.rope_scaling") {
					kvs = append(kvs, kv)
				}
			}
			f.KVs = kvs
		},
		"other factors": func(f *gguf.File) {
			for i := range f.Tensors {
				if f.Tensors[i].Name == ropeFreqsGGUF {
					f.Tensors[i].Data[0] ^= 1
				}
			}
		},
	} {
		f, err := GGUF(m, tok, "f32", "x")
		if err != nil {
			t.Fatal(err)
		}
		mutate(f)
		path := filepath.Join(t.TempDir(), "m.gguf")
		if err := gguf.Write(path, f); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := LoadGGUF(path); err == nil || !strings.Contains(err.Error(), ropeFreqsGGUF) {
			t.Errorf("%s: %v, want an error naming %s", name, err, ropeFreqsGGUF)
		}
	}
}
