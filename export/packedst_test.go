package export

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// TestPackedSafetensorsW4A4: a W4A4 model (int4 per-channel weights,
// 4-bit per-token activations) exports as safetensors-packed with its
// activations described as compressed-tensors names them (num_bits 4,
// int, asymmetric, dynamic per token), loads into the W4A4 integer
// kernels (kernels.GemmChannel4), and the key/value-cache decoder over them
// gives the fake-quant model's logits within 1e-6 (relative RMS): the
// same codes, exact integer sums, only float32 summation order differs.
// Decoding with 8-bit activation codes instead would miss by percents.
// The model has GQA, an untied head and an FFN width (88) that is not a
// multiple of 32 (padded blocks in down_proj). Symmetric 4-bit
// activations on the restricted grid [-7, 7] and GWQ's kept weights (the
// sparse correction, on the 4-bit input) run the same kernels; int8
// weights with 4-bit activations have no kernel (simulated only: no map).
//
// Symmetric activations on the full grid [-8, 7] are not compared here:
// s = amax/7.5 puts each row's largest magnitude on a rounding tie
// (|x|/s = 7.5), so where it is negative its code (-7 or -8) follows the
// last bit of the input, and the decoder's inputs differ from the full
// forward's in those bits (summation order): one position missed by 0.5%.
// The kernel itself gives those codes exactly (kernels.TestQuantize4).
func TestPackedSafetensorsW4A4(t *testing.T) {
	w4 := qat.Presets["w4a4"][0].Weights
	a4 := qat.Presets["w4a4"][0].Activations
	if a4.Bits != 4 || a4.Symmetric || a4.Granularity != "token" || w4.Bits != 4 || w4.Granularity != "channel" {
		t.Fatalf("w4a4 preset is %+v x %+v, the test expects int4 per-channel weights x asymmetric 4-bit per-token activations", *w4, *a4)
	}
	sym := *a4
	sym.Symmetric, sym.Restricted = true, true
	gwq := *w4
	gwq.Outliers = 0.01
	w8 := *w4
	w8.Bits = 8
	for _, c := range []struct {
		name    string
		rules   []qat.Rule
		act     ActScheme
		kernels bool
	}{
		{"w4a4", qat.Presets["w4a4"], ActScheme{Bits: 4, Type: "int", Strategy: "token", Dynamic: true}, true},
		{"w4a4-sym", []qat.Rule{{Match: "model.layers.*", Weights: w4, Activations: &sym}}, ActScheme{Bits: 4, Type: "int", Symmetric: true, Strategy: "token", Dynamic: true, Restricted: true}, true},
		{"w4a4-gwq", []qat.Rule{{Match: "model.layers.*", Weights: &gwq, Activations: a4}}, ActScheme{Bits: 4, Type: "int", Strategy: "token", Dynamic: true}, true},
		{"w8a4", []qat.Rule{{Match: "model.layers.*", Weights: &w8, Activations: a4}}, ActScheme{Bits: 4, Type: "int", Strategy: "token", Dynamic: true}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, tok := testModel(t, false)
			cfg := layers.Config{Vocab: tok.VocabSize(), Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 88, RopeTheta: 10000,
				NormEps: 1e-5, MaxSeq: 32}
			m := layers.New(cfg)
			m.Init(11)
			if err := qat.Prepare(m, c.rules); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "packed")
			if err := PackedSafetensors(m, tok, dir, false); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			var hc struct {
				Q quantConfig `json:"quantization_config"`
			}
			if err := json.Unmarshal(b, &hc); err != nil {
				t.Fatal(err)
			}
			if len(hc.Q.Groups) != 1 {
				t.Fatalf("%d config groups, want 1: %s", len(hc.Q.Groups), b)
			}
			for name, g := range hc.Q.Groups {
				if g.Input == nil || *g.Input != c.act {
					t.Fatalf("config group %s input_activations %+v, want %+v", name, g.Input, c.act)
				}
			}
			// the activations by compressed-tensors' field names
			// (QuantizationArgs), as vLLM reads them
			var raw struct {
				Q struct {
					Groups map[string]struct {
						Input map[string]any `json:"input_activations"`
					} `json:"config_groups"`
				} `json:"quantization_config"`
			}
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			wantJSON := map[string]any{"num_bits": 4.0, "type": "int", "symmetric": c.act.Symmetric, "strategy": "token", "dynamic": true}
			if c.act.Restricted {
				wantJSON["restricted"] = true // qat's own key (QQQ's grid)
			}
			for name, g := range raw.Q.Groups {
				if !reflect.DeepEqual(g.Input, wantJSON) {
					t.Fatalf("config group %s input_activations %v, want %v", name, g.Input, wantJSON)
				}
			}

			m2, tok2, packed, err := LoadPackedSafetensorsKernels(dir)
			if err != nil {
				t.Fatal(err)
			}
			ids := tok2.Encode(nil, "The state of the Union is strong. We the people")
			// the reloaded model (unpacked weights, activation quantizers
			// from config.json) is the exported one
			want, got := logits(m, ids), logits(m2, ids)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("reloaded fake-quant logit %d: %g, exported model %g", i, got[i], want[i])
				}
			}
			if !c.kernels {
				if packed != nil {
					t.Fatalf("%d weights packed for the integer kernels", len(packed))
				}
				return
			}
			if want := 7 * len(m2.Layers); len(packed) != want {
				t.Fatalf("%d packed matrices, want %d", len(packed), want)
			}
			for _, p := range packed {
				if p.Channel == nil || p.Channel.Bits != 4 || p.Tokens.Bits != 4 || p.Tokens.Symmetric != c.act.Symmetric {
					t.Fatalf("packed weight %+v, want int4 codes with 4-bit %+v activations", p, c.act)
				}
				if (p.Sparse != nil) != (gwq == *c.rules[0].Weights) {
					t.Fatalf("sparse kept weights %v", p.Sparse != nil)
				}
			}
			rels := packedVsForward(t, m2, packed, ids)
			worst := 0.0
			for p, rel := range rels {
				if rel > 1e-6 {
					t.Fatalf("position %d: packed W4A4 logits differ from the fake-quant model's by %.3g (relative RMS)", p, rel)
				}
				worst = max(worst, rel)
			}
			t.Logf("%d positions: largest relative RMS difference %.2g (kernel %s)", len(rels), worst, kernels.PackedKernel())
		})
	}
}

// TestW4A4ClipInputs: the static grid of learned clip values (qat's clip
// scale) through the W4A4 kernel. kernels.QuantizeClip4's codes u are
// qat.ClipForward's levels (lo + u*step is its output bit for bit), and
// GemmChannel4 on them, every row with the same scale and its non-integer
// zero point, gives the product of the int4 weights and ClipForward's
// values within float32 rounding: what a packed linear with a clip input
// quantizer would compute.
func TestW4A4ClipInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	const rows, k, n = 12, 200, 5
	x := make([]float32, n*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 1.5)
	}
	codes := make([]int8, rows*k)
	for i := range codes {
		codes[i] = int8(rng.IntN(16) - 8)
	}
	scale := make([]float32, rows)
	for i := range scale {
		scale[i] = float32(0.05 + rng.Float64())
	}
	w, err := kernels.NewChannelInt(4, codes, scale, rows, k)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ lo, hi float32 }{{-1.7, 2.3}, {-0.4, 3.1}, {0.2, 1.9}} {
		fq := make([]float32, n*k)
		qat.ClipForward(fq, make([]uint8, n*k), x, c.lo, c.hi, 4)
		var a kernels.TokenU4
		kernels.QuantizeClip4(&a, x, n, k, c.lo, c.hi)
		step := (c.hi - c.lo) / 15
		for r := 0; r < n; r++ {
			for j := 0; j < k; j++ {
				if v := c.lo + float32(a.U[r*a.KP+j])*step; v != fq[r*k+j] {
					t.Fatalf("clip [%g, %g] x[%d,%d] = %g: code %d is %g, ClipForward %g", c.lo, c.hi, r, j, x[r*k+j], a.U[r*a.KP+j], v, fq[r*k+j])
				}
			}
		}
		y := make([]float32, n*rows)
		kernels.GemmChannel4(w, &a, y)
		for tok := 0; tok < n; tok++ {
			for r := 0; r < rows; r++ {
				var want, mag float64
				for j := 0; j < k; j++ {
					v := float64(codes[r*k+j]) * float64(scale[r]) * float64(fq[tok*k+j])
					want += v
					mag += math.Abs(v)
				}
				if got := float64(y[tok*rows+r]); math.Abs(got-want) > 1e-6*mag {
					t.Fatalf("clip [%g, %g] y[%d,%d] = %g, ClipForward's values give %g (sum |terms| %g)", c.lo, c.hi, tok, r, got, want, mag)
				}
			}
		}
	}
}
