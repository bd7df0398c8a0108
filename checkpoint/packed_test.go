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
