// Package tape is the default engine: the model's forward pass recorded on
// an autograd tape and run backward, on one goroutine, or split by rows
// over data-parallel replicas (layers.Replicas) when it has several
// threads. It runs every model layers and qat build.
package tape

import (
	"qat/autograd"
	"qat/engine"
	"qat/layers"
)

func init() { engine.Register("tape", New) }

// Engine is the tape engine.
type Engine struct {
	m    *layers.Model
	o    engine.Options
	tp   *autograd.Tape
	reps *layers.Replicas // nil on one thread
}

// New builds the tape engine for m.
func New(m *layers.Model, o engine.Options) (engine.Engine, error) {
	e := &Engine{m: m, o: o, tp: autograd.NewTape()}
	// replicas split the batch by rows: more than rows would idle
	if n := min(o.Threads, o.Batch); n > 1 {
		e.reps = layers.NewReplicas(m, n)
	}
	return e, nil
}

// LossBackward runs the batch forward and backward (engine.Engine).
func (e *Engine) LossBackward(ids, targets []int32) (float32, error) {
	if e.reps != nil {
		return e.reps.LossBackward(ids, targets, e.o.Batch, e.o.Seq), nil
	}
	l := e.m.Loss(e.tp, ids, targets, e.o.Batch, e.o.Seq)
	e.tp.Backward(l)
	loss := l.Data()[0]
	e.tp.Reset()
	return loss, nil
}

// Close does nothing: the tape holds no resources.
func (e *Engine) Close() error { return nil }
