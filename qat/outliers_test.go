package qat

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"qat/autograd"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
)

// TestTopK: the selection is exactly the k largest scores (ties to the
// lower index), sorted by index.
func TestTopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 1))
	s := make([]float32, 1000)
	for i := range s {
		s[i] = float32(rng.IntN(50)) // many ties
	}
	got := TopK(s, 37)
	type iv struct {
		i int
		v float32
	}
	all := make([]iv, len(s))
	for i, v := range s {
		all[i] = iv{i, v}
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].v != all[b].v {
			return all[a].v > all[b].v
		}
		return all[a].i < all[b].i
	})
	want := make([]int, 37)
	for i := range want {
		want[i] = all[i].i
	}
	sort.Ints(want)
	for i := range want {
		if int(got[i]) != want[i] {
			t.Fatalf("TopK[%d] = %d, want %d", i, got[i], want[i])
		}
	}
}

// TestOutliersApply: kept weights are their fp16 values and take the
// gradient unchanged; the rest is the inner quantizer applied to the
// weight with the kept values zeroed (so they do not widen its ranges),
// gradient included.
func TestOutliersApply(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 8))
	const rows, cols = 6, 32
	spec := Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 16, Scale: "minmax"}
	in, _ := NewQuantizer(spec, cols, rows*cols)
	w := autograd.NewParam(rows, cols)
	for i := range w.Data() {
		w.Data()[i] = float32(rng.NormFloat64())
	}
	w.Data()[5], w.Data()[77] = 9, -12 // outliers
	scores := make([]float32, rows*cols)
	scores[5], scores[77], scores[130] = 3, 2, 1
	o := &Outliers{Inner: in, Idx: make([]int32, 3)}
	o.SelectOutliers(scores)
	if o.Idx[0] != 5 || o.Idx[1] != 77 || o.Idx[2] != 130 {
		t.Fatalf("selected %v", o.Idx)
	}
	dy := make([]float32, rows*cols)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	run := func(q layers.Quantizer, x *autograd.Var) []float32 {
		tp := autograd.NewTape()
		y := q.Apply(tp, x)
		l := tp.Custom([]int{1}, []*autograd.Var{y}, func(out []float32) {}, func(_ []float32, d [][]float32) {
			for i := range d[0] {
				d[0][i] += dy[i]
			}
		})
		tp.Backward(l)
		return append([]float32(nil), y.Data()...)
	}
	y := run(o, w)
	gw := append([]float32(nil), w.GradData()...)
	wz := autograd.NewParam(rows, cols)
	copy(wz.Data(), w.Data())
	for _, i := range o.Idx {
		wz.Data()[i] = 0
	}
	ref := run(in, wz)
	kept := map[int]bool{5: true, 77: true, 130: true}
	for i := range y {
		if kept[i] {
			if y[i] != fp16(w.Data()[i]) || gw[i] != dy[i] {
				t.Fatalf("kept %d: y %g (fp16 %g), grad %g (dy %g)", i, y[i], fp16(w.Data()[i]), gw[i], dy[i])
			}
			continue
		}
		if y[i] != ref[i] || gw[i] != wz.GradData()[i] {
			t.Fatalf("%d: y %g, grad %g; inner on the zeroed weight: %g, %g", i, y[i], gw[i], ref[i], wz.GradData()[i])
		}
	}
	if math.Abs(float64(y[6])) > 4 {
		t.Fatalf("an outlier widened its group's range: %g", y[6])
	}
}

// TestOutliersCheckpoint: a model with kept weights saves and loads its
// indices.
func TestOutliersCheckpoint(t *testing.T) {
	rules := []Rule{{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 3, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax", Outliers: 0.01}}}
	m := layers.New(testCfg)
	m.Init(1)
	if err := Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	o := m.Layers[1].MLP.Down.WeightQuant.(*Outliers)
	scores := make([]float32, m.Layers[1].MLP.Down.Weight.Size())
	for i := range scores {
		scores[i] = float32((i * 7919) % 1009)
	}
	o.SelectOutliers(scores)
	want := append([]int32(nil), o.Idx...)
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	m2 := layers.New(testCfg)
	if err := Prepare(m2, rules); err != nil {
		t.Fatal(err)
	}
	if err := m2.Load(path); err != nil {
		t.Fatal(err)
	}
	got := m2.Layers[1].MLP.Down.WeightQuant.(*Outliers).Idx
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("index %d: %d loaded, %d saved", i, got[i], want[i])
		}
	}
}

// TestOutliersIndicesRangeChecked: a checkpoint whose kept-weight indices
// leave the weight, repeat, go backwards or have another count or dtype
// is refused naming the tensor, and the indices in memory are unchanged.
func TestOutliersIndicesRangeChecked(t *testing.T) {
	rules := []Rule{{Match: "model.layers.*", Weights: &Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "minmax", Outliers: 0.01}}}
	m := layers.New(testCfg)
	m.Init(1)
	if err := Prepare(m, rules); err != nil {
		t.Fatal(err)
	}
	const name = "model.layers.1.mlp.down_proj.weight_quant.outliers"
	n := m.Layers[1].MLP.Down.Weight.Size()
	dir := t.TempDir()
	good := filepath.Join(dir, "m.safetensors")
	if err := m.Save(good); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Read(good)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := f.Get(name)
	idx, _ := orig.I32()
	k := len(idx)
	for _, c := range []struct {
		edit  func(v []int32) []int32
		dtype string
		want  string
	}{
		{func(v []int32) []int32 { v[k-1] = int32(n); return v }, "I32", "outside"},
		{func(v []int32) []int32 { v[k-1] = 1 << 30; return v }, "I32", "outside"},
		{func(v []int32) []int32 { v[0] = -1; return v }, "I32", "outside"},
		{func(v []int32) []int32 { v[1] = v[0]; return v }, "I32", "not increasing"},
		{func(v []int32) []int32 { return v[:k-1] }, "I32", "model wants I32"},
		{func(v []int32) []int32 { return v }, "F32", "F32 ["},
	} {
		v := c.edit(append([]int32(nil), idx...))
		var ts []safetensors.Tensor
		for _, x := range f.Tensors {
			if x.Name == name {
				x = safetensors.FromI32(name, []int{len(v)}, v)
				x.DType = c.dtype
			}
			ts = append(ts, x)
		}
		path := filepath.Join(dir, "bad.safetensors")
		if err := safetensors.Write(path, ts, nil); err != nil {
			t.Fatal(err)
		}
		m2 := layers.New(testCfg)
		if err := Prepare(m2, rules); err != nil {
			t.Fatal(err)
		}
		o := m2.Layers[1].MLP.Down.WeightQuant.(*Outliers)
		before := append([]int32(nil), o.Idx...)
		err := m2.Load(path)
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("indices %v...: error %v, want one naming %s: %s", v[:min(3, len(v))], err, name, c.want)
		}
		for i := range before {
			if o.Idx[i] != before[i] {
				t.Fatalf("refused indices changed Idx[%d]: %d -> %d", i, before[i], o.Idx[i])
			}
		}
	}
	if err := (&Outliers{Idx: make([]int32, 2)}).LoadFrozen("outliers", safetensors.FromI32("x", []int{2}, []int32{0, 1})); err == nil {
		t.Error("an Outliers without N loaded indices it cannot range-check")
	}
}
