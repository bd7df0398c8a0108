package checkpoint

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"qat/autograd"
	"qat/data/safetensors"
	"qat/layers"
)

// TestHFReferenceImport: the Hugging Face directories tools/hf_fixture.py
// writes (Llama 2; Llama 3.2 with llama3 rope_scaling, head_dim !=
// hidden/heads and tied embeddings; Mistral; Qwen2 with q/k/v biases; bf16
// in two shards with an index; the real tokenizers' vocabularies, from
// make npm-deps) import through LoadHFModel and give the logits, loss and
// gradients of the fixture's own float64 PyTorch implementation of the
// transformers models, within 1e-3 of each tensor's largest value.
// Without torch it skips, unless QAT_REQUIRE_TORCH=1 (make test sets it).
func TestHFReferenceImport(t *testing.T) {
	dir := t.TempDir()
	out := writeHFFixtures(t, dir)
	t.Logf("%s", out)
	for _, a := range hfArchs {
		t.Run(a.arch, func(t *testing.T) {
			d := filepath.Join(dir, a.arch)
			if !IsHF(d) {
				t.Fatalf("%s is not recognised as a Hugging Face directory", d)
			}
			m, err := LoadHFModel(d)
			must(t, err)
			checkAgainstReference(t, m, filepath.Join(d, "reference.safetensors"))
		})
	}
}

// checkAgainstReference runs m on the reference batch with Hugging Face's
// shifted labels and compares logits, loss and every gradient.
func checkAgainstReference(t *testing.T, m *layers.Model, path string) {
	ref, err := safetensors.Read(path)
	must(t, err)
	get := func(name string) []float32 {
		tt, ok := ref.Get(name)
		if !ok {
			t.Fatalf("reference lacks %s", name)
		}
		v, err := tt.F32()
		must(t, err)
		return v
	}
	idsT, ok := ref.Get("ids")
	if !ok {
		t.Fatal("reference lacks ids")
	}
	ids, err := idsT.I32()
	must(t, err)
	B, T := idsT.Shape[0], idsT.Shape[1]
	tg := make([]int32, B*T)
	for i := range tg {
		tg[i] = layers.IgnoreIndex
		if (i+1)%T != 0 {
			tg[i] = ids[i+1]
		}
	}
	tp := autograd.NewTape()
	logits := m.Forward(tp, ids, B, T)
	loss := tp.CrossEntropy(logits, tg, layers.IgnoreIndex)
	tp.Backward(loss)
	var worstAll float64
	cmp := func(name string, got, want []float32) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, reference %d", name, len(got), len(want))
		}
		var scale, worst float64
		for i, w := range want {
			scale = math.Max(scale, math.Abs(float64(w)))
			worst = math.Max(worst, math.Abs(float64(got[i])-float64(w)))
		}
		if !(worst <= 1e-3*scale) {
			t.Errorf("%s: max diff %.3g, over 1e-3 of its scale %.3g", name, worst, scale)
		}
		worstAll = math.Max(worstAll, worst/scale)
	}
	cmp("logits", logits.Data(), get("logits"))
	cmp("loss", loss.Data(), get("loss"))
	for _, p := range m.Params() {
		cmp("grad."+p.Name, p.Var.GradData(), get("grad."+p.Name))
	}
	t.Logf("vocab %d, head_dim %d, bias %v, rope_scaling %q, tied %v: max diff / scale %.2g",
		m.Vocab, m.HeadDim(), m.QKVBias, m.RopeScaling.Type, m.Tied, worstAll)
}

// hfPython is Debian's python3, where apt's python3-torch lives.
const hfPython = "/usr/bin/python3"

// hfArchs are the fixture architectures and the real tokenizers
// (.cache/tokref, from make npm-deps) they are written with.
var hfArchs = []struct{ arch, tokenizer string }{{"llama2", "llama2"}, {"llama3", "llama3"}, {"mistral", "llama2"}, {"qwen2", "qwen3"}}

// writeHFFixtures runs tools/hf_fixture.py for every hfArchs entry into
// dir/ARCH and returns its output. Without torch the test skips, unless
// QAT_REQUIRE_TORCH=1 (make test sets it).
func writeHFFixtures(t *testing.T, dir string) []byte {
	t.Helper()
	if err := exec.Command(hfPython, "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("QAT_REQUIRE_TORCH") == "1" {
			t.Fatalf("QAT_REQUIRE_TORCH=1 but %s cannot import torch: %v", hfPython, err)
		}
		t.Skip("python3-torch not installed")
	}
	args := []string{"../tools/hf_fixture.py", dir}
	for _, a := range hfArchs {
		tok := filepath.Join("..", ".cache", "tokref", a.tokenizer)
		if _, err := os.Stat(filepath.Join(tok, "tokenizer.json")); err != nil {
			t.Logf("%s: no %s tokenizer (make npm-deps); a byte-level one sets the vocabulary", a.arch, a.tokenizer)
			args = append(args, a.arch)
			continue
		}
		args = append(args, a.arch+"="+tok)
	}
	out, err := exec.Command(hfPython, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("hf_fixture.py: %v\n%s", err, out)
	}
	return out
}
