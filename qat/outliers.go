package qat

import (
	"fmt"
	"math"
	"sort"
	"unsafe"

	"github.com/x448/float16"

	"qat/autograd"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
)

// Outliers keeps a few weights of a layer in fp16 beside a quantized rest
// (GWQ, arXiv 2411.00850: the weights with the largest loss gradients;
// SpQR-style, they are left out of the rest's ranges). Idx are the flat
// indices of the kept weights, sorted; the forward is fp16(w) there and
// Inner's fake quant of w with those weights zeroed elsewhere; gradients
// pass straight through at the kept weights. N is the weight's size:
// indices read from a checkpoint must lie in [0, N).
type Outliers struct {
	Inner *Quantizer
	Idx   []int32
	N     int
}

// OutlierCount is how many of n weights a fraction keeps: ceil(frac*n).
func OutlierCount(frac float64, n int) int { return int(math.Ceil(frac * float64(n))) }

// TopK returns the indices of the k largest scores, sorted by index; ties
// go to the lower index.
func TopK(scores []float32, k int) []int32 {
	idx := make([]int32, len(scores))
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	out := append([]int32(nil), idx[:min(k, len(idx))]...)
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

// fp16 rounds to the nearest fp16 value (the outliers' storage).
func fp16(v float32) float32 { return float16.Fromfloat32(v).Float32() }

// Apply fake-quantizes w with the outliers kept.
func (o *Outliers) Apply(t autograd.Ops, w *autograd.Var) *autograd.Var {
	wz := t.Custom(w.Shape(), []*autograd.Var{w}, func(out []float32) {
		copy(out, w.Data())
		for _, i := range o.Idx {
			out[i] = 0
		}
	}, func(dout []float32, d [][]float32) {
		if d[0] == nil {
			return
		}
		for i, g := range dout {
			d[0][i] += g
		}
		for _, i := range o.Idx {
			d[0][i] -= dout[i] // the kept weights' gradient comes through the second op
		}
	})
	y := o.Inner.Apply(t, wz)
	return t.Custom(w.Shape(), []*autograd.Var{y, w}, func(out []float32) {
		copy(out, y.Data())
		for _, i := range o.Idx {
			out[i] = fp16(w.Data()[i])
		}
	}, func(dout []float32, d [][]float32) {
		if d[0] != nil {
			for i, g := range dout {
				d[0][i] += g
			}
			for _, i := range o.Idx {
				d[0][i] -= dout[i]
			}
		}
		if d[1] != nil {
			for _, i := range o.Idx {
				d[1][i] += dout[i]
			}
		}
	})
}

// State is the inner quantizer's.
func (o *Outliers) State() map[string]*autograd.Var { return o.Inner.State() }

// Replica shares the indices.
func (o *Outliers) Replica() layers.Quantizer {
	return &Outliers{Inner: o.Inner.Replica().(*Quantizer), Idx: o.Idx, N: o.N}
}

// Frozen is the kept weights' indices (checkpointed as
// NAME.weight_quant.outliers).
func (o *Outliers) Frozen() map[string]safetensors.Tensor {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(o.Idx))), 4*len(o.Idx))
	return map[string]safetensors.Tensor{"outliers": {DType: "I32", Shape: []int{len(o.Idx)}, Data: b}}
}

// LoadFrozen reads the indices back: as many as the layer keeps, of dtype
// I32, strictly increasing and inside the weight ([0, N)); an error names
// the first that is not, and leaves Idx as it was.
func (o *Outliers) LoadFrozen(key string, t safetensors.Tensor) error {
	if key != "outliers" {
		return fmt.Errorf("outliers: unknown frozen tensor %q", key)
	}
	if t.DType != "I32" || len(t.Data) != 4*len(o.Idx) {
		return fmt.Errorf("outliers: %s of %d bytes, want I32 with %d indices", t.DType, len(t.Data), len(o.Idx))
	}
	if o.N <= 0 {
		return fmt.Errorf("outliers: the weight's size is unknown (Outliers.N unset): indices cannot be range-checked")
	}
	v, err := t.I32()
	if err != nil {
		return fmt.Errorf("outliers: %w", err)
	}
	for i, x := range v {
		switch {
		case x < 0 || int64(x) >= int64(o.N):
			return fmt.Errorf("outliers: index %d at %d is outside the weight's %d values", x, i, o.N)
		case i > 0 && x <= v[i-1]:
			return fmt.Errorf("outliers: indices not increasing at %d (%d after %d)", i, x, v[i-1])
		}
	}
	copy(o.Idx, v)
	return nil
}

// SelectOutliers sets the kept weights of the layer whose weight is w to
// the top k by score (GWQ: |dL/dW|).
func (o *Outliers) SelectOutliers(scores []float32) { copy(o.Idx, TopK(scores, len(o.Idx))) }

var _ layers.FrozenState = (*Outliers)(nil)

// WithOutliers returns rules whose int weight specs keep frac of their
// values in fp16 (unless they say a fraction themselves): GWQ's.
func WithOutliers(rules []Rule, frac float64) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		if w := r.Weights; w != nil && w.Format == kernels.Int && w.Outliers == 0 {
			c := *w
			c.Outliers = frac
			r.Weights = &c
		}
		out[i] = r
	}
	return out
}

// SelectByGradient chooses every Outliers quantizer's kept weights of m by
// the magnitude of their weight's gradient (GWQ's saliency; the gradients
// must hold dL/dW) and restarts the steps of the rest without them. It
// returns the layers and weights kept.
func SelectByGradient(m *layers.Model, grads map[*autograd.Var][]float32) (layersKept, kept int) {
	for _, nl := range m.Linears() {
		o, ok := nl.Linear.WeightQuant.(*Outliers)
		if !ok {
			continue
		}
		g := grads[nl.Linear.Weight]
		score := make([]float32, len(g))
		for i, v := range g {
			score[i] = float32(math.Abs(float64(v)))
		}
		o.SelectOutliers(score)
		wz := append([]float32(nil), nl.Linear.Weight.Data()...)
		for _, i := range o.Idx {
			wz[i] = 0
		}
		o.Inner.Init(wz)
		layersKept++
		kept += len(o.Idx)
	}
	return layersKept, kept
}
