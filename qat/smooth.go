package qat

import (
	"fmt"
	"math"

	"qat/autograd"
	"qat/kernels"
	"qat/layers"
)

// SmoothConfig sets QQQ's adaptive smoothing search (arXiv 2406.09904,
// method os+): Steps thresholds from max|X| down to 0.1, each scored on
// Rows sampled input rows.
type SmoothConfig struct {
	Steps, Rows int
}

// DefaultSmooth is the reference's grid size (at least 100 steps) on 512
// sampled rows per input.
var DefaultSmooth = SmoothConfig{Steps: 100, Rows: 512}

// smoothTap keeps the per-channel range of a linear input and a reservoir
// sample of its rows: an observer on the first linear of an input group.
type smoothTap struct {
	lo, hi   []float32
	sample   []float32
	cols     int
	max, n   int
	rngState uint64
}

func newSmoothTap(cols, rows int) *smoothTap {
	t := &smoothTap{lo: make([]float32, cols), hi: make([]float32, cols), cols: cols, max: rows, rngState: 0x5eed}
	for j := range t.lo {
		t.lo[j], t.hi[j] = float32(math.Inf(1)), float32(math.Inf(-1))
	}
	return t
}

func (t *smoothTap) Observe(_ autograd.Ops, x *autograd.Var) *autograd.Var {
	d := x.Data()
	for r := 0; r < len(d)/t.cols; r++ {
		row := d[r*t.cols : (r+1)*t.cols]
		for j, v := range row {
			t.lo[j], t.hi[j] = min(t.lo[j], v), max(t.hi[j], v)
		}
		t.n++
		if len(t.sample) < t.max*t.cols {
			t.sample = append(t.sample, row...)
			continue
		}
		t.rngState = t.rngState*6364136223846793005 + 1442695040888963407
		if k := int((t.rngState >> 33) % uint64(t.n)); k < t.max {
			copy(t.sample[k*t.cols:], row)
		}
	}
	return x
}

// Replica is the tap itself: calibration runs on one model.
func (t *smoothTap) Replica() layers.Observer { return t }

// smoothGroup is linears that share an input, and where the inverse
// scales fold: the RMSNorm weight before them, or the rows of the linear
// whose output they read.
type smoothGroup struct {
	layers.InputGroup
	norm *layers.RMSNorm
	prev *layers.Linear
}

// Smooth applies QQQ's adaptive smoothing to m: for each group of linears
// that share an input (q/k/v, gate/up; o_proj when there is one key/value
// head per query head; down_proj) with symmetric int weight quantizers
// and an int input quantizer, per-input-channel scales s_j =
// max(1, max_j/t, min_j/(-t)) divide the input and multiply the weight's
// columns; t is the threshold whose smoothed, quantized product Q(X/s)
// Q(W s)^T is closest to X W^T on sampled calibration rows (t = max|X|,
// no smoothing, is a candidate). 1/s folds into the RMSNorm weight before
// q/k/v and gate/up, into v_proj's rows for o_proj and into up_proj's
// rows for down_proj, so the full-precision function is unchanged. run
// makes the calibration forward passes (once). It returns the number of
// groups smoothed (some channel scale above 1).
func Smooth(m *layers.Model, c SmoothConfig, run func() error) (int, error) {
	var groups []smoothGroup
	for _, g := range m.InputGroups() {
		if g.Layer < 0 {
			continue // lm_head: no norm or linear before it to fold into
		}
		L, first := m.Layers[g.Layer], g.Linears[0]
		sg := smoothGroup{InputGroup: g}
		switch {
		case first == L.Attn.Q:
			sg.norm = L.AttnNorm
		case first == L.MLP.Gate:
			sg.norm = L.MLPNorm
		case first == L.MLP.Down:
			sg.prev = L.MLP.Up
		case first == L.Attn.O && L.Attn.Heads == L.Attn.KVHeads:
			sg.prev = L.Attn.V
		default:
			continue
		}
		groups = append(groups, sg)
	}
	var todo []smoothGroup
	var taps []*smoothTap
	var detach []func()
	for _, g := range groups {
		ok := true
		for _, l := range g.Linears {
			w := weightQuantizer(l)
			a, aok := l.InputQuant.(*Quantizer)
			ok = ok && w != nil && aok && w.Format == kernels.Int && w.Symmetric && a.Format == kernels.Int &&
				(l == g.Linears[0] || l.InputQuant == g.Linears[0].InputQuant || sameQuant(l.InputQuant, g.Linears[0].InputQuant))
		}
		if !ok {
			continue
		}
		t := newSmoothTap(g.Linears[0].Weight.Shape()[1], c.Rows)
		detach = append(detach, observe(g.Linears[0], t))
		todo = append(todo, g)
		taps = append(taps, t)
	}
	err := run()
	for i := len(detach) - 1; i >= 0; i-- {
		detach[i]()
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for i, g := range todo {
		t := taps[i]
		if t.n == 0 {
			return n, fmt.Errorf("smooth: %s saw no calibration input", g.Name)
		}
		s := bestSmoothing(g, t, c)
		if s == nil {
			continue
		}
		cols := t.cols
		for _, l := range g.Linears {
			w := l.Weight.Data()
			for r := 0; r < len(w)/cols; r++ {
				for j := 0; j < cols; j++ {
					w[r*cols+j] *= s[j]
				}
			}
		}
		if g.norm != nil {
			for j, v := range s {
				g.norm.Weight.Data()[j] /= v
			}
		} else {
			w := g.prev.Weight.Data()
			in := g.prev.Weight.Shape()[1]
			for j, v := range s {
				for k := 0; k < in; k++ {
					w[j*in+k] /= v
				}
			}
			// a biased v_proj (Qwen2): its output row j is scaled by
			// 1/s[j], bias included, so o_proj's input is exactly x/s
			if b := g.prev.Bias; b != nil {
				for j, v := range s {
					b.Data()[j] /= v
				}
			}
		}
		n++
	}
	return n, nil
}

// bestSmoothing searches the threshold; nil when no smoothing wins.
func bestSmoothing(g smoothGroup, t *smoothTap, c SmoothConfig) []float32 {
	cols, rows := t.cols, len(t.sample)/t.cols
	var amax float32
	for j := range t.lo {
		amax = max(amax, -t.lo[j], t.hi[j])
	}
	var W []float32 // the group's weights, rows stacked
	for _, l := range g.Linears {
		W = append(W, l.Weight.Data()...)
	}
	out := len(W) / cols
	ref := make([]float32, rows*out)
	kernels.Sgemm(false, true, rows, out, cols, 1, t.sample, cols, W, cols, 0, ref, out)
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	// the weights are scored on their minmax grid: fixed steps (lsq, mse)
	// would be the unsmoothed weights' (GPTQ sets them afterwards)
	minmax := map[*layers.Linear]*Quantizer{}
	for _, l := range g.Linears {
		spec := weightQuantizer(l).Spec
		spec.Scale, spec.TwoLevel, spec.Outliers = "minmax", false, 0
		q, err := NewQuantizer(spec, cols, l.Weight.Size())
		if err != nil {
			return nil
		}
		minmax[l] = q
	}
	xs, ws := make([]float32, len(t.sample)), make([]float32, len(W))
	y := make([]float32, len(ref))
	errOf := func(s []float32) float64 {
		for r := 0; r < rows; r++ {
			for j := 0; j < cols; j++ {
				xs[r*cols+j] = t.sample[r*cols+j] / s[j]
			}
		}
		xq := g.Linears[0].InputQuant.Apply(tp, autograd.NewConst(xs, rows, cols)).Data()
		off := 0
		for _, l := range g.Linears {
			n := l.Weight.Size()
			for i := off; i < off+n; i++ {
				ws[i] = W[i] * s[(i-off)%cols]
			}
			wq := minmax[l].Apply(tp, autograd.NewConst(ws[off:off+n], n/cols, cols)).Data()
			copy(ws[off:off+n], wq)
			off += n
		}
		kernels.Sgemm(false, true, rows, out, cols, 1, xq, cols, ws, cols, 0, y, out)
		tp.Reset()
		var e float64
		for i, v := range y {
			d := float64(v - ref[i])
			e += d * d
		}
		return e
	}
	steps := max(c.Steps, 1)
	s := make([]float32, cols)
	var best []float32
	bestErr := math.Inf(1)
	for k := 0; k < steps; k++ {
		th := amax - float32(k)*(amax-0.1)/float32(steps)
		if th <= 0 {
			break
		}
		any := false
		for j := range s {
			s[j] = max(1, t.hi[j]/th, t.lo[j]/(-th))
			any = any || s[j] > 1
		}
		if e := errOf(s); e < bestErr {
			bestErr = e
			best = nil
			if any {
				best = append([]float32(nil), s...)
			}
		}
	}
	return best
}
