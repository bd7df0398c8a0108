// Package autograd is qat's eager reverse-mode engine: a Var holds a value
// and a gradient (float32 slices and a shape), each op computes its
// forward at once and records one backward closure on a Tape, and
// Tape.Backward runs the closures in reverse.
//
// Conventions, from llm.c: backward closures accumulate (+=) into gradients,
// so a Var used twice sums its gradients for free; parameter gradients are
// zeroed once per step by the caller (ZeroGrad). Temporaries (op outputs and
// their gradients) come from a pool owned by the tape and go back to it on
// Reset, so a steady-state training step allocates almost nothing.
//
// Shapes are checked: a mismatch panics with a message naming both shapes
// (a shape error is a bug in model code, not bad input).
//
// Model code is written against the Ops interface, not against Tape
// internals, so another engine can run the same model.
package autograd
