// Package optim holds optimizers and their state: AdamW with decoupled
// weight decay (Loshchilov & Hutter, arXiv 1711.05101, as PyTorch's
// torch.optim.AdamW computes it) and global-norm gradient clipping.
//
// AdamW's moments live behind the Moments interface, one per parameter:
// FP32 is the reference; kinds that store them in fewer bits implement the
// same update fused with their own dequantize and requantize.
package optim

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"qat/autograd"
	"qat/data/safetensors"
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
	Name  string
	Var   *autograd.Var
	Decay bool
	// LRScale multiplies the learning rate for this parameter (0: 1), for
	// parameters trained slower than the rest (LR-QAT's scales).
	LRScale float64
}

// Hyper is one step's hyperparameters as the update kernels take them:
// bias corrections BC1 = 1-beta1^t and BC2 = 1-beta2^t.
type Hyper struct {
	LR, Beta1, Beta2, Eps, WeightDecay, BC1, BC2 float32
}

// Moments stores AdamW's first and second moments of one parameter and
// applies the update to it.
type Moments interface {
	// Update applies one AdamW step to p with gradient g.
	Update(p, g []float32, h Hyper)
	// Bytes is the memory the moments take.
	Bytes() int
	// Tensors returns the stored state for a checkpoint, named after the
	// parameter, exactly as held (no conversion).
	Tensors(name string) []safetensors.Tensor
	// Load restores what Tensors wrote.
	Load(name string, f *safetensors.File) error
}

// FP32Moments keeps both moments in float32.
type FP32Moments struct{ M, V []float32 }

// NewFP32Moments returns zeroed moments for n values.
func NewFP32Moments(n int) Moments {
	return &FP32Moments{M: make([]float32, n), V: make([]float32, n)}
}

// Update runs the fused AdamW kernel, split over threads in large tensors.
func (s *FP32Moments) Update(p, g []float32, h Hyper) {
	if kernels.Chunks(len(p), 1<<15) <= 1 { // no closure to allocate
		kernels.Active.AdamW(p, g, s.M, s.V, h.LR, h.Beta1, h.Beta2, h.Eps, h.WeightDecay, h.BC1, h.BC2)
		return
	}
	splitUpdate(len(p), 1<<15, func(lo, hi int) {
		kernels.Active.AdamW(p[lo:hi], g[lo:hi], s.M[lo:hi], s.V[lo:hi], h.LR, h.Beta1, h.Beta2, h.Eps, h.WeightDecay, h.BC1, h.BC2)
	})
}

// Bytes is 8 per value.
func (s *FP32Moments) Bytes() int { return 8 * len(s.M) }

// Tensors names the moments m.NAME and v.NAME.
func (s *FP32Moments) Tensors(name string) []safetensors.Tensor {
	return []safetensors.Tensor{safetensors.FromF32("m."+name, []int{len(s.M)}, s.M), safetensors.FromF32("v."+name, []int{len(s.V)}, s.V)}
}

// Load reads m.NAME (finite) and v.NAME (finite, not negative: a mean
// of squares).
func (s *FP32Moments) Load(name string, f *safetensors.File) error {
	if err := loadF32(f, "m."+name, s.M, finite); err != nil {
		return err
	}
	return loadF32(f, "v."+name, s.V, finiteNonNeg)
}

// AdamW is the optimizer over a list of parameters.
type AdamW struct {
	Config AdamWConfig
	Params []Param
	State  []Moments
	Step   int
}

// NewAdamW returns an optimizer over params whose moments newMoments makes
// for each (fp32 when nil; see States).
func NewAdamW(c AdamWConfig, params []Param, newMoments func(p Param) Moments) *AdamW {
	if newMoments == nil {
		newMoments = func(p Param) Moments { return NewFP32Moments(p.Var.Size()) }
	}
	o := &AdamW{Config: c, Params: params}
	for _, p := range params {
		o.State = append(o.State, newMoments(p))
	}
	return o
}

// Shard wraps a moments maker so that it makes moments only for the
// parameters keep accepts (ZeRO-1: another process holds and updates the
// others'); AdamW's Update, StateBytes, Save and Load then see the kept
// ones only, and the others' moments are never allocated.
func Shard(newMoments func(p Param) Moments, keep func(p Param) bool) func(p Param) Moments {
	return func(p Param) Moments {
		if !keep(p) {
			return nil
		}
		return newMoments(p)
	}
}

// Update applies one step with learning rate lr to every parameter that
// takes a gradient (and whose moments this process holds).
func (o *AdamW) Update(lr float64) {
	o.Step++
	c := o.Config
	h := Hyper{LR: float32(lr), Beta1: float32(c.Beta1), Beta2: float32(c.Beta2), Eps: float32(c.Eps),
		BC1: float32(1 - math.Pow(c.Beta1, float64(o.Step))), BC2: float32(1 - math.Pow(c.Beta2, float64(o.Step)))}
	// Parameters are shared out over the threads whole (a large one is
	// still split inside Update when this runs on one thread).
	kernels.ForBLAS(len(o.Params), 1, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			p := o.Params[i]
			if !p.Var.RequiresGrad() || o.State[i] == nil {
				continue
			}
			hp := h
			if p.LRScale != 0 {
				hp.LR = float32(lr * p.LRScale)
			}
			if p.Decay {
				hp.WeightDecay = float32(c.WeightDecay)
			}
			o.State[i].Update(p.Var.Data(), p.Var.GradData(), hp)
		}
	})
}

// StateBytes is the memory of all moments.
func (o *AdamW) StateBytes() int {
	n := 0
	for _, s := range o.State {
		if s != nil {
			n += s.Bytes()
		}
	}
	return n
}

// Save writes the moments and the step count to path.
func (o *AdamW) Save(path string) error {
	return safetensors.Write(path, o.tensors(), o.meta())
}

func (o *AdamW) tensors() []safetensors.Tensor {
	var ts []safetensors.Tensor
	for i, p := range o.Params {
		if o.State[i] != nil {
			ts = append(ts, o.State[i].Tensors(p.Name)...)
		}
	}
	return ts
}

func (o *AdamW) meta() map[string]string {
	return map[string]string{"optimizer": "adamw", "step": strconv.Itoa(o.Step)}
}

// Encode is the moments this process holds as safetensors bytes: a
// sharded optimizer's part for SaveParts.
func (o *AdamW) Encode() ([]byte, error) { return safetensors.Encode(o.tensors(), o.meta()) }

// SaveParts writes to path the file Save writes for an unsharded
// optimizer, from the Encode of every process's shard (in any order): the
// checkpoint does not depend on how many processes wrote it.
func (o *AdamW) SaveParts(path string, parts [][]byte) error {
	// a moment tensor is named KIND.PARAM (Moments.Tensors): grouped by
	// parameter, in the order each shard's moments wrote them
	byParam := map[string][]safetensors.Tensor{}
	for k, b := range parts {
		f, err := safetensors.Parse(b)
		if err != nil {
			return fmt.Errorf("optimizer shard %d: %w", k, err)
		}
		if f.Metadata["step"] != strconv.Itoa(o.Step) {
			return fmt.Errorf("optimizer shard %d is at step %q, this process at %d", k, f.Metadata["step"], o.Step)
		}
		for _, t := range f.Tensors {
			_, param, ok := strings.Cut(t.Name, ".")
			if !ok {
				return fmt.Errorf("optimizer shard %d: tensor %q names no parameter", k, t.Name)
			}
			byParam[param] = append(byParam[param], t)
		}
	}
	var ts []safetensors.Tensor
	for _, p := range o.Params {
		ts = append(ts, byParam[p.Name]...)
		delete(byParam, p.Name)
	}
	for n := range byParam {
		return fmt.Errorf("optimizer shards: tensors of %s, which this optimizer does not train", n)
	}
	return safetensors.Write(path, ts, o.meta())
}

// Load restores what Save wrote. Every state tensor is checked (name,
// dtype, size, values in range) against the optimizer's before it is
// copied in; errors name the file and the tensor.
func (o *AdamW) Load(path string) error {
	f, err := safetensors.Read(path)
	if err != nil {
		return err
	}
	return o.load(path, f)
}

func (o *AdamW) load(path string, f *safetensors.File) error {
	step, err := strconv.Atoi(f.Metadata["step"])
	if err != nil || step < 0 {
		return fmt.Errorf("%s: optimizer step %q", path, f.Metadata["step"])
	}
	for i, p := range o.Params {
		if o.State[i] == nil {
			continue
		}
		if err := o.State[i].Load(p.Name, f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	o.Step = step
	return nil
}

// ClipGradNorm scales all gradients so their global L2 norm is at most
// maxNorm (no-op when maxNorm <= 0) and returns the norm before clipping.
func ClipGradNorm(vars []*autograd.Var, maxNorm float64) float64 {
	// Per-tensor sums in parallel, added in a fixed order: the norm does
	// not depend on the thread count's scheduling.
	sums := make([]float64, len(vars))
	kernels.ForBLAS(len(vars), 1, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			if g := vars[i].GradData(); g != nil && vars[i].RequiresGrad() {
				sums[i] = kernels.Active.SumSq(g)
			}
		}
	})
	var ss float64
	for _, s := range sums {
		ss += s
	}
	norm := math.Sqrt(ss)
	if maxNorm > 0 && norm > maxNorm {
		s := float32(maxNorm / (norm + 1e-6))
		kernels.ForBLAS(len(vars), 1, func(_, lo, hi int) {
			for _, v := range vars[lo:hi] {
				if g := v.GradData(); g != nil && v.RequiresGrad() {
					kernels.Active.Scale(g, g, s)
				}
			}
		})
	}
	return norm
}
