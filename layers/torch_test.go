package layers

import (
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"qat/autograd"
	"qat/data/safetensors"
)

// torchPython is Debian's interpreter, where apt's python3-torch lives.
const torchPython = "/usr/bin/python3"

// TestAgainstPyTorch writes weights and a batch, runs tools/torch_ref.py (an
// independent PyTorch implementation of the Hugging Face Llama forward) and
// compares logits, loss and every parameter gradient to 1e-4 relative.
// Without torch it skips, unless QAT_REQUIRE_TORCH=1 (make test sets it).
func TestAgainstPyTorch(t *testing.T) {
	if err := exec.Command(torchPython, "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("QAT_REQUIRE_TORCH") == "1" {
			t.Fatalf("QAT_REQUIRE_TORCH=1 but %s cannot import torch: %v", torchPython, err)
		}
		t.Skip("python3-torch not installed")
	}
	for _, c := range []Config{
		{Vocab: 4096, Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 704, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 128},
		{Vocab: 300, Dim: 64, Layers: 2, Heads: 8, KVHeads: 2, FFNHidden: 96, RopeTheta: 500000, NormEps: 1e-6, Tied: false, MaxSeq: 32},
	} {
		dir := t.TempDir()
		m := New(c)
		m.Init(3)
		rng := rand.New(rand.NewPCG(4, 4))
		for _, p := range m.Params() { // norms away from 1 so their gradients are exercised
			if len(p.Var.Shape()) == 1 {
				for i := range p.Var.Data() {
					p.Var.Data()[i] = float32(1 + 0.2*rng.NormFloat64())
				}
			}
		}
		B, T := 2, c.MaxSeq
		ids, tg := randomTokens(rng, B*T, c.Vocab), randomTokens(rng, B*T, c.Vocab)
		tg[5] = IgnoreIndex
		hf, _ := c.HFConfig()
		must(t, os.WriteFile(filepath.Join(dir, "config.json"), hf, 0o644))
		must(t, m.Save(filepath.Join(dir, "model.safetensors")))
		must(t, safetensors.Write(filepath.Join(dir, "batch.safetensors"), []safetensors.Tensor{
			safetensors.FromI32("ids", []int{B, T}, ids), safetensors.FromI32("targets", []int{B, T}, tg)}, nil))
		out, err := exec.Command(torchPython, "../tools/torch_ref.py", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("torch_ref.py: %v\n%s", err, out)
		}
		t.Logf("%s", out)
		ref, err := safetensors.Read(filepath.Join(dir, "torch_out.safetensors"))
		must(t, err)

		// PyTorch read the weights the Go side wrote bit for bit.
		for _, p := range m.Params() {
			tt, ok := ref.Get("weight." + p.Name)
			if !ok {
				t.Fatalf("torch output lacks weight.%s", p.Name)
			}
			w, _ := tt.F32()
			for j, v := range p.Var.Data() {
				if w[j] != v {
					t.Fatalf("%s[%d]: PyTorch read %g, Go wrote %g", p.Name, j, w[j], v)
				}
			}
		}
		// The weights load back into Go bit for bit.
		m2 := New(c)
		must(t, m2.Load(filepath.Join(dir, "model.safetensors")))
		for i, p := range m2.Params() {
			for j, v := range p.Var.Data() {
				if v != m.Params()[i].Var.Data()[j] {
					t.Fatalf("%s[%d] changed through safetensors", p.Name, j)
				}
			}
		}

		tp := autograd.NewTape()
		logits := m.Forward(tp, ids, B, T)
		loss := tp.CrossEntropy(logits, tg, IgnoreIndex)
		tp.Backward(loss)
		cmp := func(name string, got []float32) {
			tt, ok := ref.Get(name)
			if !ok {
				t.Fatalf("torch output lacks %s", name)
			}
			want, _ := tt.F32()
			var scale, worst float64
			for _, w := range want {
				scale = math.Max(scale, math.Abs(float64(w)))
			}
			for i := range want {
				worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
			}
			if worst > 1e-4*scale {
				t.Errorf("dim %d: %s: max diff %.3g, 1e-4 of its scale %.3g", c.Dim, name, worst, scale)
			}
			t.Logf("dim %d: %-52s max diff / scale = %.2g", c.Dim, name, worst/scale)
		}
		cmp("logits", logits.Data())
		cmp("loss", loss.Data())
		for _, p := range m.Params() {
			cmp("grad."+p.Name, p.Var.GradData())
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
