package lora

import (
	"math"
	"math/rand/v2"

	"qat/autograd"
	"qat/layers"
)

// LoRAQAT is plain LoRA under fake quantization (torchtune's QAT + LoRA
// recipe): the frozen float32 weight W0 plus the adapters, then the
// weight quantizer: Q(W0 + (alpha/r) A B). A (rows, r) and B (r, cols)
// are LoRA's usual factors: A Kaiming-uniform, B zero (so training starts
// from Q(W0)).
type LoRAQAT struct {
	Inner layers.Quantizer // nil: LoRA without weight quantization
	A, B  *autograd.Var
	Scale float32 // alpha/r
}

// NewLoRAQAT returns adapters of rank r for a rows x cols weight.
func NewLoRAQAT(inner layers.Quantizer, rows, cols, rank int, alpha float32, seed uint64) *LoRAQAT {
	l := &LoRAQAT{Inner: inner, A: autograd.NewParam(rows, rank), B: autograd.NewParam(rank, cols), Scale: alpha / float32(rank)}
	rng := rand.New(rand.NewPCG(seed, 0x10b))
	bound := 1 / math.Sqrt(float64(rank))
	for i := range l.A.Data() {
		l.A.Data()[i] = float32((2*rng.Float64() - 1) * bound)
	}
	return l
}

// Product implements layers.Adapter: x Q(W0 + (alpha/r) A B)^T.
func (l *LoRAQAT) Product(ops autograd.Ops, x, w *autograd.Var) *autograd.Var {
	return ops.Linear(x, l.Apply(ops, w))
}

// Apply returns Q(W0 + (alpha/r) A B) on the tape.
func (l *LoRAQAT) Apply(ops autograd.Ops, w *autograd.Var) *autograd.Var {
	w = ops.Add(w, ops.Scale(ops.MatMul(l.A, l.B, false, false), l.Scale))
	if l.Inner != nil {
		w = l.Inner.Apply(ops, w)
	}
	return w
}

// State is the adapters and the inner quantizer's state.
func (l *LoRAQAT) State() map[string]*autograd.Var {
	st := map[string]*autograd.Var{"lora_a": l.A, "lora_b": l.B}
	if l.Inner != nil {
		for k, v := range l.Inner.State() {
			st[k] = v
		}
	}
	return st
}

// Replica gives the adapters (and the inner quantizer) their own
// gradients.
func (l *LoRAQAT) Replica() layers.Adapter {
	r := *l
	r.A, r.B = l.A.Replica(), l.B.Replica()
	if l.Inner != nil {
		r.Inner = l.Inner.Replica()
	}
	return &r
}

var _ layers.Adapter = (*LoRAQAT)(nil)
