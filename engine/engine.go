// Package engine is the seam between the training loop and what computes a
// step's loss and gradients. An engine is built once for a model and a batch
// shape; the loop hands it each micro-batch and steps the optimizer on the
// gradients it added into the model's parameters, whichever engine it is.
//
// The engines register themselves by name: "tape" (engine/tape: the
// autograd tape, with data-parallel replicas on several threads),
// "gorgonia" (engine/gorgonia: a Gorgonia ExprGraph) and "cuda"
// (engine/device: the step as kernel calls on a GPU, in a `gpu` build).
// Each one's Supported says, in one place, which models it can run.
package engine

import (
	"fmt"
	"sort"
	"strings"

	"qat/layers"
)

// Engine computes losses and gradients for one model and batch shape.
type Engine interface {
	// LossBackward computes the mean next-token loss of a batch (ids and
	// targets, Batch*Seq each; layers.IgnoreIndex skips a target) and adds
	// (+=) its gradients into the model's parameters' gradients.
	LossBackward(ids, targets []int32) (float32, error)
	// Close releases what the engine holds (a graph's machine, device
	// memory).
	Close() error
}

// Options are the shape an engine is built for.
type Options struct {
	Batch, Seq int
	// Threads is how many cores the engine may use (the tape's replicas).
	Threads int
}

// Constructor builds an engine, or says why it cannot run m.
type Constructor func(m *layers.Model, o Options) (Engine, error)

var registry = map[string]Constructor{}

// Register makes an engine available by name; engine packages call it from
// init. A second registration of a name panics.
func Register(name string, c Constructor) {
	if _, dup := registry[name]; dup {
		panic("engine: Register called twice for " + name)
	}
	registry[name] = c
}

// New builds the engine registered as name for m.
func New(name string, m *layers.Model, o Options) (Engine, error) {
	c, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("engine %q: want one of %s", name, strings.Join(Names(), ", "))
	}
	if o.Batch <= 0 || o.Seq <= 0 || o.Seq > m.MaxSeq {
		return nil, fmt.Errorf("engine %s: batch %d x %d tokens, max sequence %d", name, o.Batch, o.Seq, m.MaxSeq)
	}
	return c(m, o)
}

// Names lists the registered engines.
func Names() []string {
	var out []string
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
