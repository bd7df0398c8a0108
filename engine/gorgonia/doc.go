// Package gorgonia is qat's second training engine and its Gorgonia ops.
//
// New builds a layers.Model (with its qat fake-quant quantizers) as a
// Gorgonia ExprGraph for one batch shape, with gradients from
// gorgonia.Grad, run by Gorgonia's TapeMachine; the graph's parameter
// nodes share the model's weight memory, so `qat train --engine gorgonia`
// steps them with qat's own optimizer and writes the usual checkpoints.
//
// The ops (FakeQuant, Embedding, RMSNorm, RoPE, CausalSoftmax, Attention,
// SwiGLU, CrossEntropy) are gorgonia.Op values with SymDiff and DoDiff
// whose forward and backward are the tape's kernels: a Gorgonia user can
// put them into graphs of their own. docs/gorgonia.md has the measured
// comparison with the tape and the Gorgonia bugs routed around.
package gorgonia
