package qat

import (
	"fmt"
	"math"

	"qat/autograd"
	"qat/layers"
)

// Kurtosis is an observer (layers.Observer) of a linear layer's input or of
// its output (KurtosisConfig.On): it passes the activation through
// unchanged (an input to the input quantizer, if any; an output, the
// product plus bias, to what follows), measures the kurtosis of each row
// (a token: over the input features, or over the output features) (K = mean(d^4)/(mean(d^2)+eps)^2, d = x - mean(x):
// Gaussian 3, uniform 1.8), and with Coef > 0 regularises it: backward adds
// the gradient of Coef * mean over rows of (K_row - Target)^2 (activation
// kurtosis regularisation, docs/algorithms.md section 5), which pulls
// outlier-heavy activations toward a shape that quantizes well. The penalty
// is per row, so it splits over data-parallel replicas exactly.
type Kurtosis struct {
	Coef, Target float64
	// idle skips the measurement of a tap that does not regularise (Coef
	// 0): training turns it on between evaluations (Measure), so that
	// logging the kurtosis costs nothing in the training step.
	idle bool
	// Sum and N accumulate the mean row kurtosis of every forward, for
	// logging; ResetStats clears them.
	Sum float64
	N   int
}

const kurtEps = 1e-6

// Observe implements layers.Observer.
func (k *Kurtosis) Observe(ops autograd.Ops, x *autograd.Var) *autograd.Var {
	if k.idle && k.Coef == 0 {
		return x
	}
	shape := x.Shape()
	d := shape[len(shape)-1]
	rows := x.Size() / d
	kr := ops.Scratch(rows) // per-row kurtosis, for backward
	y := ops.Custom(shape, []*autograd.Var{x}, func(out []float32) {
		copy(out, x.Data())
		var sum float64
		for r := 0; r < rows; r++ {
			kr[r] = float32(rowKurtosis(x.Data()[r*d : (r+1)*d]))
			sum += float64(kr[r])
		}
		k.Sum += sum / float64(rows)
		k.N++
	}, func(dout []float32, dins [][]float32) {
		dx := dins[0]
		if dx == nil {
			return
		}
		for i, g := range dout {
			dx[i] += g
		}
		if k.Coef == 0 {
			return
		}
		for r := 0; r < rows; r++ {
			c := k.Coef * 2 * (float64(kr[r]) - k.Target) / float64(rows)
			addKurtosisGrad(dx[r*d:(r+1)*d], x.Data()[r*d:(r+1)*d], c)
		}
	})
	return y
}

// rowKurtosis is K of one row in float64.
func rowKurtosis(x []float32) float64 {
	n := float64(len(x))
	var mu float64
	for _, v := range x {
		mu += float64(v)
	}
	mu /= n
	var m2, m4 float64
	for _, v := range x {
		dv := float64(v) - mu
		m2 += dv * dv
		m4 += dv * dv * dv * dv
	}
	m2, m4 = m2/n, m4/n
	s := m2 + kurtEps
	return m4 / (s * s)
}

// addKurtosisGrad adds c * dK/dx to dx: with s = mean(d^2)+eps,
// dK/dx_j = (4/n) [ (d_j^3 - mean(d^3))/s^2 - K d_j/s ].
func addKurtosisGrad(dx, x []float32, c float64) {
	n := float64(len(x))
	var mu float64
	for _, v := range x {
		mu += float64(v)
	}
	mu /= n
	var m2, m3, m4 float64
	for _, v := range x {
		dv := float64(v) - mu
		m2 += dv * dv
		m3 += dv * dv * dv
		m4 += dv * dv * dv * dv
	}
	m2, m3, m4 = m2/n, m3/n, m4/n
	s := m2 + kurtEps
	K := m4 / (s * s)
	for j, v := range x {
		dv := float64(v) - mu
		dx[j] += float32(c * 4 / n * ((dv*dv*dv-m3)/(s*s) - K*dv/s))
	}
}

// Replica copies the tap, with its own statistics.
func (k *Kurtosis) Replica() layers.Observer {
	r := *k
	r.Sum, r.N = 0, 0
	return &r
}

// Mean is the mean row kurtosis since the last ResetStats (NaN if none).
func (k *Kurtosis) Mean() float64 {
	if k.N == 0 {
		return math.NaN()
	}
	return k.Sum / float64(k.N)
}

// ResetStats clears the accumulated kurtosis.
func (k *Kurtosis) ResetStats() { k.Sum, k.N = 0, 0 }

// KurtosisConfig selects the layers whose activation kurtosis is
// regularised, and where.
type KurtosisConfig struct {
	Coef   float64 `yaml:"coef" json:"coef"`
	Target float64 `yaml:"target" json:"target"`
	Match  string  `yaml:"match" json:"match"`
	// On is where the taps sit: "input" (the default, "" too) measures and
	// regularises each linear's input before its input quantizer;
	// "output" its product (arXiv 2404.03605: penalising the outputs'
	// kurtosis keeps the model from moving the outliers that input
	// quantization removes into the weights).
	On string `yaml:"on" json:"on,omitempty"`
}

// Kurtosis tap placements (KurtosisConfig.On).
const (
	KurtosisOnInput  = "input"
	KurtosisOnOutput = "output"
)

// Output reports whether the taps sit on the linears' outputs.
func (c KurtosisConfig) Output() bool { return c.On == KurtosisOnOutput }

// Validate checks On; path names the config section in messages.
func (c KurtosisConfig) Validate(path string) error {
	if c.On != "" && c.On != KurtosisOnInput && c.On != KurtosisOnOutput {
		return fmt.Errorf("%s.on: %q, want input or output", path, c.On)
	}
	return nil
}

// Taps attaches a Kurtosis observer to the input, or with cfg.On output
// to the output, of every linear layer (taps measure; those matching
// cfg.Match, with cfg.Coef > 0, also regularise) and returns them by layer
// name.
func Taps(m *layers.Model, cfg KurtosisConfig) (map[string]*Kurtosis, error) {
	if err := cfg.Validate("quant.kurtosis"); err != nil {
		return nil, err
	}
	out := map[string]*Kurtosis{}
	for _, ln := range m.Linears() {
		k := &Kurtosis{Target: cfg.Target}
		if cfg.Coef > 0 {
			ok, err := pathMatch(cfg.Match, ln.Name)
			if err != nil {
				return nil, err
			}
			if ok {
				k.Coef = cfg.Coef
			}
		}
		if cfg.Output() {
			ln.Linear.OutputObservers = append(ln.Linear.OutputObservers, k)
		} else {
			ln.Linear.Observers = append(ln.Linear.Observers, k)
		}
		out[ln.Name] = k
	}
	return out, nil
}
