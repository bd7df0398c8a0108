// Package optim holds optimizers and their state: AdamW with decoupled
// weight decay (Loshchilov & Hutter, arXiv 1711.05101, as PyTorch's
// torch.optim.AdamW computes it) and global-norm gradient clipping.
package optim

import (
	"math"

	"qat/autograd"
	"qat/kernels"
)

// AdamWConfig holds AdamW's hyperparameters.
type AdamWConfig struct {
	Beta1, Beta2, Eps, WeightDecay float64
}

// DefaultAdamW is PyTorch's default except the weight decay, 0.1 as in
// Llama training.
var DefaultAdamW = AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}

// Param is one tensor to optimise; Decay false exempts it from weight decay
// (norms, biases, quantizer scales).
type Param struct {
	Var   *autograd.Var
	Decay bool
}

// AdamW keeps fp32 first and second moments next to each parameter.
type AdamW struct {
	Config AdamWConfig
	Params []Param
	M, V   [][]float32
	Step   int
}

// NewAdamW returns an optimizer over params with zeroed moments.
func NewAdamW(c AdamWConfig, params []Param) *AdamW {
	o := &AdamW{Config: c, Params: params}
	for _, p := range params {
		o.M = append(o.M, make([]float32, p.Var.Size()))
		o.V = append(o.V, make([]float32, p.Var.Size()))
	}
	return o
}

// Update applies one step with learning rate lr to every parameter that
// takes a gradient.
func (o *AdamW) Update(lr float64) {
	o.Step++
	c := o.Config
	bc1 := 1 - math.Pow(c.Beta1, float64(o.Step))
	bc2 := 1 - math.Pow(c.Beta2, float64(o.Step))
	for i, p := range o.Params {
		if !p.Var.RequiresGrad() {
			continue
		}
		wd := 0.0
		if p.Decay {
			wd = c.WeightDecay
		}
		x, g, m, v := p.Var.Data(), p.Var.GradData(), o.M[i], o.V[i]
		if kernels.Serial(len(x), 1<<15) {
			kernels.Active.AdamW(x, g, m, v, float32(lr), float32(c.Beta1), float32(c.Beta2),
				float32(c.Eps), float32(wd), float32(bc1), float32(bc2))
			continue
		}
		kernels.For(len(x), 1<<15, func(lo, hi int) {
			kernels.Active.AdamW(x[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], float32(lr), float32(c.Beta1), float32(c.Beta2),
				float32(c.Eps), float32(wd), float32(bc1), float32(bc2))
		})
	}
}

// ClipGradNorm scales all gradients so their global L2 norm is at most
// maxNorm (no-op when maxNorm <= 0) and returns the norm before clipping.
func ClipGradNorm(vars []*autograd.Var, maxNorm float64) float64 {
	var ss float64
	for _, v := range vars {
		if g := v.GradData(); g != nil && v.RequiresGrad() {
			ss += kernels.Active.SumSq(g)
		}
	}
	norm := math.Sqrt(ss)
	if maxNorm > 0 && norm > maxNorm {
		s := float32(maxNorm / (norm + 1e-6))
		for _, v := range vars {
			if g := v.GradData(); g != nil && v.RequiresGrad() {
				kernels.Active.Scale(g, g, s)
			}
		}
	}
	return norm
}
