package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
	"qat/qat"
)

// recipeModel is small enough for a step in milliseconds, with GQA and a
// tied head (which the rotation unties).
var recipeModel = Options{
	Model: layers.Config{Vocab: 64, Dim: 32, Layers: 2, Heads: 2, KVHeads: 1, FFNHidden: 64, RopeTheta: 10000,
		NormEps: 1e-5, Tied: true, MaxSeq: 16},
	Name: "test", Batch: 2, Seq: 16, Threads: []int{1}, Steps: 1,
}

// TestRecipesRows runs qat bench recipes for one step and checks that
// every recipe has its rows, each consistent with its step time, in the
// table and in the JSON lines.
func TestRecipesRows(t *testing.T) {
	o := recipeModel
	o.JSON = filepath.Join(t.TempDir(), "recipes.jsonl")
	var out bytes.Buffer
	res, err := Recipes(&out, o)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, r := range res {
		if r.Kind != "recipe" || r.Threads != 1 {
			t.Errorf("unexpected row %+v", r)
		}
		got[r.Name] = r
	}
	names := []string{"fp", "w4a4-qat", "w4a4-actreg", "w4a4-hadamard-qat"}
	if len(res) != 4*len(names) {
		t.Errorf("%d rows, want %d", len(res), 4*len(names))
	}
	tokens := float64(o.Batch * o.Seq)
	fpMs, qatMs := got["test fp step"].Value, got["test w4a4-qat step"].Value
	for _, n := range names {
		ms, ok := got["test "+n+" step"]
		if !ok || !(ms.Value > 0) || ms.Unit != "ms" {
			t.Errorf("%s: step row %+v", n, ms)
			continue
		}
		if tps := got["test "+n+" tokens/s"].Value; math.Abs(tps*ms.Value/1e3-tokens) > 1e-9*tokens {
			t.Errorf("%s: %g tokens/s at %g ms/step is not %g tokens a step", n, tps, ms.Value, tokens)
		}
		for _, ref := range []struct {
			name string
			ms   float64
		}{{"fp", fpMs}, {"w4a4-qat", qatMs}} {
			r := got["test "+n+" vs "+ref.name]
			if math.Abs(r.Value-ms.Value/ref.ms) > 1e-12 || r.Ref != ref.ms {
				t.Errorf("%s vs %s: %+v, want %g / %g", n, ref.name, r, ms.Value, ref.ms)
			}
		}
		if !strings.Contains(out.String(), fmt.Sprintf("\n  %-18s %8.1f", n, ms.Value)) {
			t.Errorf("the table has no row for %s:\n%s", n, out.String())
		}
	}
	f, err := os.Open(o.JSON)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []Result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("JSON line %q: %v", sc.Text(), err)
		}
		lines = append(lines, r)
	}
	if !reflect.DeepEqual(lines, res) {
		t.Errorf("JSON lines differ from the results:\n%v\n%v", lines, res)
	}
}

func builtByName(t *testing.T) map[string]*builtRecipe {
	t.Helper()
	ids, tg := randomBatch(recipeModel)
	out := map[string]*builtRecipe{}
	for _, r := range recipes() {
		b, err := r.build(recipeModel, 1, ids, tg)
		if err != nil {
			t.Fatal(err)
		}
		out[r.name] = b
	}
	return out
}

func isBlock(name string) bool { return strings.HasPrefix(name, "model.layers.") }

// TestRecipesBuildWhatTheyName holds each recipe's model to what its row
// says it measures, so that none silently becomes another: the quantizers
// of llama-w4a4.yaml and tiny-w4a4-actreg.yaml on every block linear, the
// kurtosis penalty on the actreg outputs only, and the rotation (with its
// online down_proj transform) on the Hadamard recipe only.
func TestRecipesBuildWhatTheyName(t *testing.T) {
	lsqW := qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "lsq"}
	tokenA := qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "token", Scale: "minmax"}
	clipA := qat.Spec{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "tensor", Scale: "clip"}
	built := builtByName(t)
	if len(built) != 4 {
		t.Fatalf("%d recipes, want 4", len(built))
	}
	for name, b := range built {
		wantRotated := name == "w4a4-hadamard-qat"
		if rotated := b.m.DownHadamard != ""; rotated != wantRotated {
			t.Errorf("%s: DownHadamard %q, want rotated %v", name, b.m.DownHadamard, wantRotated)
		}
		// the rotation unties the head (the final norm is folded into it)
		if b.m.Tied == wantRotated {
			t.Errorf("%s: tied head %v", name, b.m.Tied)
		}
		blocks := 0
		for _, ln := range b.m.Linears() {
			l := ln.Linear
			w, wok := qat.Plain(l.WeightQuant)
			a, aok := qat.Plain(l.InputQuant)
			reg := qat.Regularised(l)
			if !isBlock(ln.Name) {
				if l.WeightQuant != nil || l.InputQuant != nil || reg {
					t.Errorf("%s: %s is quantized or regularised", name, ln.Name)
				}
				continue
			}
			blocks++
			switch name {
			case "fp":
				if l.WeightQuant != nil || l.InputQuant != nil || len(l.Observers)+len(l.OutputObservers) > 0 {
					t.Errorf("fp: %s has quantizers or observers", ln.Name)
				}
			case "w4a4-qat", "w4a4-hadamard-qat":
				if !wok || w.Spec != lsqW || w.Step == nil || !aok || a.Spec != tokenA || reg {
					t.Errorf("%s: %s: weights %+v, input %+v, regularised %v", name, ln.Name, w, a, reg)
				}
			case "w4a4-actreg":
				if l.WeightQuant != nil || !aok || a.Spec != clipA || !reg || len(l.OutputObservers) != 1 || len(l.Observers) != 0 {
					t.Errorf("actreg: %s: weights %v, input %+v, regularised %v, %d output taps",
						ln.Name, l.WeightQuant, a, reg, len(l.OutputObservers))
					continue
				}
				// calibrated on the batch: the clip values moved from
				// their zero start to either side of the inputs' values
				if lo, hi := a.ClipLo.Data()[0], a.ClipHi.Data()[0]; !(lo < 0 && hi > 0) {
					t.Errorf("actreg: %s: clip values %g, %g not calibrated", ln.Name, lo, hi)
				}
			default:
				t.Errorf("unknown recipe %s", name)
			}
		}
		if want := 7 * recipeModel.Model.Layers; blocks != want {
			t.Errorf("%s: %d block linears, want %d", name, blocks, want)
		}
	}
}

// recorder is an output observer that keeps the last forward's output.
type recorder struct{ y []float32 }

func (r *recorder) Observe(ops autograd.Ops, x *autograd.Var) *autograd.Var {
	return ops.Custom(x.Shape(), []*autograd.Var{x}, func(out []float32) {
		copy(out, x.Data())
		r.y = append(r.y[:0], x.Data()...)
	}, func(dout []float32, dins [][]float32) {
		if dins[0] != nil {
			for i, g := range dout {
				dins[0][i] += g
			}
		}
	})
}

func (r *recorder) Replica() layers.Observer { return r }

// TestActRegStepHasThePenalty checks that the actreg recipe's backward
// carries the output kurtosis penalty with configs/tiny-w4a4-actreg.yaml's
// coefficient and target: the last down_proj's weight gradient minus its
// gradient with the penalty off (nothing after that layer is penalised)
// must be the gradient of coef * mean over tokens of (K - target)^2 of
// its output, which the test computes itself in float64 from recorded
// outputs, by central differences along that direction.
func TestActRegStepHasThePenalty(t *testing.T) {
	b := builtByName(t)["w4a4-actreg"]
	m, o := b.m, recipeModel
	ids, tg := randomBatch(o)
	name := fmt.Sprintf("model.layers.%d.mlp.down_proj", o.Model.Layers-1)
	var down *layers.Linear
	for _, ln := range m.Linears() {
		if ln.Name == name {
			down = ln.Linear
		}
	}
	rec := &recorder{}
	down.OutputObservers = append(down.OutputObservers, rec)
	var vars []*autograd.Var
	for _, p := range m.Params() {
		vars = append(vars, p.Var)
	}
	grad := func() []float64 {
		autograd.ZeroGrad(vars...)
		tp := autograd.NewTape()
		tp.Backward(m.Loss(tp, ids, tg, o.Batch, o.Seq))
		g := make([]float64, down.Weight.Size())
		for i, v := range down.Weight.GradData() {
			g[i] = float64(v)
		}
		return g
	}
	withPenalty := grad()
	for _, k := range b.taps {
		k.Coef = 0
	}
	without := grad()
	delta := make([]float64, len(withPenalty))
	var norm, gnorm float64
	for i := range delta {
		delta[i] = withPenalty[i] - without[i]
		norm += delta[i] * delta[i]
		gnorm += without[i] * without[i]
	}
	norm, gnorm = math.Sqrt(norm), math.Sqrt(gnorm)
	if !(norm > 1e-6*gnorm) {
		t.Fatalf("the penalty changes down_proj's gradient by %g (gradient %g): no penalty in the step", norm, gnorm)
	}
	coef, target := actRegKurtosis.Coef, actRegKurtosis.Target
	penalty := func(h float64) float64 {
		w := down.Weight.Data()
		saved := append([]float32(nil), w...)
		defer copy(w, saved)
		for i := range w {
			w[i] = float32(float64(w[i]) + h*delta[i]/norm)
		}
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		m.Forward(tp, ids, o.Batch, o.Seq)
		d := o.Model.Dim
		rows := len(rec.y) / d
		var p float64
		for r := range rows {
			x := rec.y[r*d : (r+1)*d]
			var mu, m2, m4 float64
			for _, v := range x {
				mu += float64(v)
			}
			mu /= float64(d)
			for _, v := range x {
				dv := float64(v) - mu
				m2 += dv * dv / float64(d)
				m4 += dv * dv * dv * dv / float64(d)
			}
			k := m4 / ((m2 + 1e-6) * (m2 + 1e-6))
			p += (k - target) * (k - target)
		}
		return coef * p / float64(rows)
	}
	var wn float64
	for _, v := range down.Weight.Data() {
		wn += float64(v) * float64(v)
	}
	// the differences' truncation error grows as h^2 (2.7e-4 relative at
	// h = 1e-2 |W|, 2.5e-5 at 3e-3); float32 outputs bound it from below
	h := 3e-3 * math.Sqrt(wn)
	fd := (penalty(h) - penalty(-h)) / (2 * h)
	// the directional derivative along delta/|delta| is |delta|
	if math.Abs(fd-norm) > 1e-3*norm {
		t.Errorf("penalty's derivative along the gradient change %g, the change's norm %g", fd, norm)
	}
	t.Logf("gradient change %g (CE gradient %g), finite difference %g", norm, gnorm, fd)
}

// TestRecipesMatchConfigs holds the recipes' quantizers and kurtosis
// settings to the config files that train them.
func TestRecipesMatchConfigs(t *testing.T) {
	type quant struct {
		Preset   string             `yaml:"preset"`
		Rules    []qat.Rule         `yaml:"rules"`
		Kurtosis qat.KurtosisConfig `yaml:"kurtosis"`
	}
	read := func(file string) quant {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "configs", file))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Quant quant `yaml:"quant"`
		}
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		// the preset's rules for the globs the config does not name
		for _, r := range qat.Presets[c.Quant.Preset] {
			own := false
			for _, o := range c.Quant.Rules {
				own = own || o.Match == r.Match
			}
			if !own {
				c.Quant.Rules = append(c.Quant.Rules, r)
			}
		}
		return c.Quant
	}
	byName := map[string]recipe{}
	for _, r := range recipes() {
		byName[r.name] = r
	}
	w4a4 := read("llama-w4a4.yaml")
	for _, n := range []string{"w4a4-qat", "w4a4-hadamard-qat"} {
		if r := byName[n]; !reflect.DeepEqual(r.rules, w4a4.Rules) || r.kurtosis != w4a4.Kurtosis {
			t.Errorf("%s: rules %+v, kurtosis %+v; llama-w4a4.yaml: %+v", n, r.rules, r.kurtosis, w4a4)
		}
	}
	act := read("tiny-w4a4-actreg.yaml")
	if r := byName["w4a4-actreg"]; !reflect.DeepEqual(r.rules, act.Rules) || r.kurtosis != act.Kurtosis {
		t.Errorf("w4a4-actreg: rules %+v, kurtosis %+v; tiny-w4a4-actreg.yaml: %+v", r.rules, r.kurtosis, act)
	}
}
