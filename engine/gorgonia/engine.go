package gorgonia

import (
	"fmt"

	"qat/engine"
	"qat/layers"
)

func init() {
	engine.Register("gorgonia", func(m *layers.Model, o engine.Options) (engine.Engine, error) {
		g, err := New(m, o.Batch, o.Seq, Options{})
		if err != nil {
			return nil, err
		}
		// every parameter the optimizer steps must be in the graph
		trainable := 0
		for _, p := range m.Params() {
			if p.Var.RequiresGrad() && (!p.Quant || trained(m, p.Var)) {
				trainable++
			}
		}
		if n := len(g.Params()); n != trainable {
			g.Close()
			return nil, fmt.Errorf("gorgonia: the graph trains %d tensors, the model has %d trainable", n, trainable)
		}
		return g, nil
	})
}
