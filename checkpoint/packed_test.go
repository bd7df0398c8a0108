package checkpoint

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/export"
	"qat/layers"
	"qat/qat"
	"qat/qat/rotate"
)

// TestLoadPackedW4A4: a W4A4 QAT checkpoint (quant.json: the w4a4
// preset) exported as packed safetensors opens with LoadPacked, as `qat
// eval --packed` and `qat generate` open it, on the W4A4 integer kernels
// (4-bit activation codes), and its key/value-cache decoder gives the
// checkpoint's fake-quant logits within 1e-6 (relative RMS per position).
// Int8 weights with 4-bit activations have no packed kernel: LoadPacked
// says which quantizations it runs.
func TestLoadPackedW4A4(t *testing.T) {
	root := t.TempDir()
	m, tok := tiny(t)
	rules := qat.Presets["w4a4"]
	if err := qat.Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	qdir := filepath.Join(root, "w4a4")
	os.MkdirAll(qdir, 0o755)
	if err := Write(qdir, m, tok, rules); err != nil {
		t.Fatal(err)
	}
	ck, err := Load(qdir)
	if err != nil {
		t.Fatal(err)
	}
	pdir := filepath.Join(root, "packed")
	if err := export.PackedSafetensors(ck.Model, ck.Tok, pdir, false); err != nil {
		t.Fatal(err)
	}
	pm, err := LoadPacked(pdir)
	if err != nil {
		t.Fatal(err)
	}
	if want := 7 * len(pm.Model.Layers); len(pm.PackedWeights) != want {
		t.Fatalf("%d packed weights, want %d", len(pm.PackedWeights), want)
	}
	for _, p := range pm.PackedWeights {
		if p.Channel == nil || p.Channel.Bits != 4 || p.Tokens.Bits != 4 {
			t.Fatalf("packed weight %+v: want int4 codes with 4-bit activations", p)
		}
	}
	full := logits(ck.Model) // two rows of 16 tokens; the decoder runs the first
	ids := make([]int32, 16)
	for i := range ids {
		ids[i] = int32(i*37) % int32(ck.Model.Vocab)
	}
	d := layers.NewPackedDecoder(pm.Model, pm.PackedWeights)
	V := ck.Model.Vocab
	for p, id := range ids {
		lg, err := d.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for v := range lg {
			e := float64(lg[v] - full[p*V+v])
			num += e * e
			den += float64(full[p*V+v]) * float64(full[p*V+v])
		}
		if rel := math.Sqrt(num / den); rel > 1e-6 {
			t.Fatalf("position %d: packed W4A4 logits differ from the checkpoint's fake-quant ones by %.3g (relative RMS)", p, rel)
		}
	}

	// int8 weights, 4-bit activations: simulated only
	m8, _ := tiny(t)
	w8 := *rules[0].Weights
	w8.Bits = 8
	if err := qat.Prepare(m8, []qat.Rule{{Match: rules[0].Match, Weights: &w8, Activations: rules[0].Activations}}); err != nil {
		t.Fatal(err)
	}
	p8 := filepath.Join(root, "w8a4")
	if err := export.PackedSafetensors(m8, tok, p8, false); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPacked(p8); err == nil || !strings.Contains(err.Error(), "4-bit per-token activations (w4a4)") {
		t.Errorf("LoadPacked(w8a4): %v, want the kernels it has", err)
	}
}

// TestLoadPackedRotated: a rotated model (qat/rotate: untied head, the
// online Hadamard transform of the down_proj input) with w4a8 and w4a4
// quantizers written as a checkpoint loads back rotated, with its
// logits bit for bit; exported as packed safetensors it keeps
// qat_down_hadamard, and the packed decoder (`qat eval --packed`, `qat
// generate`), which applies the transform with the kernel before it
// quantizes down_proj's input, gives the checkpoint's fake-quant logits
// within 1e-6 (relative RMS per position). Without the transform the
// same packed weights give logits far from them: the check sees it.
// ffn_hidden 176 = 44 x 4 takes the Paley construction, whose transform
// is not its own transpose.
func TestLoadPackedRotated(t *testing.T) {
	_, tok := tiny(t)
	for _, preset := range []string{"w4a8", "w4a4"} {
		t.Run(preset, func(t *testing.T) {
			root := t.TempDir()
			m := layers.New(layers.Config{Vocab: tok.VocabSize(), Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 176,
				RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 16})
			m.Init(3)
			for _, l := range m.Layers {
				for i := range l.MLPNorm.Weight.Data() {
					l.MLPNorm.Weight.Data()[i] = 0.5 + float32(i%7)/4
				}
			}
			fp := logits(m)
			if _, err := rotate.Hadamard(m, 2, nil); err != nil {
				t.Fatal(err)
			}
			if d := relDiff(logits(m), fp); d > 1e-5 {
				t.Fatalf("rotation moved the logits by %.3g", d)
			}
			rules := qat.Presets[preset]
			if err := qat.Prepare(m, rules); err != nil {
				t.Fatal(err)
			}
			fq := logits(m)
			qdir := filepath.Join(root, "ckpt")
			os.MkdirAll(qdir, 0o755)
			if err := Write(qdir, m, tok, rules); err != nil {
				t.Fatal(err)
			}
			ck, err := Load(qdir)
			if err != nil {
				t.Fatal(err)
			}
			if ck.DownHadamard != layers.DownFull || ck.Tied || ck.Head == nil {
				t.Fatalf("checkpoint read back with down_hadamard %q, tied %v", ck.DownHadamard, ck.Tied)
			}
			same(t, "rotated checkpoint", logits(ck.Model), fq)
			pdir := filepath.Join(root, "packed")
			if err := export.PackedSafetensors(ck.Model, ck.Tok, pdir, false); err != nil {
				t.Fatal(err)
			}
			pm, err := LoadPacked(pdir)
			if err != nil {
				t.Fatal(err)
			}
			if pm.DownHadamard != layers.DownFull {
				t.Fatalf("packed model's down_hadamard %q", pm.DownHadamard)
			}
			ids := make([]int32, 16)
			for i := range ids {
				ids[i] = int32(i*37) % int32(m.Vocab)
			}
			V := m.Vocab
			run := func() (worst float64) {
				d := layers.NewPackedDecoder(pm.Model, pm.PackedWeights)
				for p, id := range ids {
					lg, err := d.Step(id)
					if err != nil {
						t.Fatal(err)
					}
					var num, den float64
					for v := range lg {
						e := float64(lg[v] - fq[p*V+v])
						num += e * e
						den += float64(fq[p*V+v]) * float64(fq[p*V+v])
					}
					worst = math.Max(worst, math.Sqrt(num/den))
				}
				return worst
			}
			if rel := run(); rel > 1e-6 {
				t.Errorf("packed logits differ from the fake-quant ones by %.3g (relative RMS)", rel)
			} else {
				t.Logf("packed logits within %.2g of the fake-quant ones", rel)
			}
			for _, l := range pm.Layers {
				l.MLP.Online = nil
			}
			if rel := run(); rel < 1e-2 {
				t.Errorf("without the online transform the packed logits are within %.3g: the check cannot see it", rel)
			}
		})
	}
}
