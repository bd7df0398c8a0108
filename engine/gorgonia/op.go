package gorgonia

import (
	"fmt"
	"hash"
	"hash/fnv"
	"sync/atomic"

	"github.com/chewxy/hm"
	"github.com/pkg/errors"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// kernelOp is a Gorgonia op whose forward and backward are our kernels.
// Every op of this package is one: forward computes the output from the
// input values; backward computes one input's gradient from the inputs,
// the output and the output's gradient. SymDiff (the TapeMachine's
// gradients) applies one gradOp per differentiable input; DoDiff (the
// LispMachine's) calls backward directly and adds into the inputs'
// gradients. Nothing is kept between forward and backward: what backward
// needs (a fake-quant op's clip mask, RMSNorm's row scales) it recomputes,
// so the op is correct under any schedule Gorgonia picks.
type kernelOp struct {
	name  string
	id    uint64 // distinguishes ops of one name in hashes and graphs
	in    []hm.Type
	out   hm.Type
	shape tensor.Shape
	// wrt marks the inputs that take a gradient.
	wrt      []bool
	forward  func(in [][]float32, out []float32)
	backward func(i int, in [][]float32, out, dout, din []float32)
}

var opIDs atomic.Uint64

// newOp builds an op over nodes with output shape and type; out == nil
// means the first input's type.
func newOp(name string, nodes []*G.Node, shape tensor.Shape, out hm.Type, wrt []bool,
	forward func(in [][]float32, out []float32), backward func(i int, in [][]float32, out, dout, din []float32)) *kernelOp {
	op := &kernelOp{name: name, id: opIDs.Add(1), shape: shape, out: out, wrt: wrt, forward: forward, backward: backward}
	for _, n := range nodes {
		op.in = append(op.in, n.Type())
	}
	if op.out == nil {
		op.out = op.in[0]
	}
	return op
}

// apply builds the op on the nodes.
func apply(op G.Op, nodes ...*G.Node) (*G.Node, error) {
	n, err := G.ApplyOp(op, nodes...)
	if err != nil {
		return nil, fmt.Errorf("gorgonia: %v: %w", op, err)
	}
	return n, nil
}

func (op *kernelOp) Arity() int { return len(op.in) }

func (op *kernelOp) Type() hm.Type {
	return hm.NewFnType(append(append([]hm.Type(nil), op.in...), op.out)...)
}

func (op *kernelOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape.Clone(), nil }

func (op *kernelOp) Do(vals ...G.Value) (G.Value, error) {
	in, err := floats(op, vals)
	if err != nil {
		return nil, err
	}
	out := make([]float32, max(op.shape.TotalSize(), 1))
	op.forward(in, out)
	return value(op.shape, out), nil
}

func (op *kernelOp) ReturnsPtr() bool     { return false }
func (op *kernelOp) CallsExtern() bool    { return false }
func (op *kernelOp) OverwritesInput() int { return -1 }
func (op *kernelOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "%s#%d", op.name, op.id)
}
func (op *kernelOp) Hashcode() uint32 { return hashOf(op) }
func (op *kernelOp) String() string   { return op.name }

// DiffWRT reports which inputs take a gradient.
func (op *kernelOp) DiffWRT(n int) []bool { return op.wrt }

// SymDiff returns one gradOp node per differentiable input (nil for the
// others).
func (op *kernelOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	grads := make(G.Nodes, len(inputs))
	args := append(append(G.Nodes(nil), inputs...), output, grad)
	for i, w := range op.wrt {
		if !w {
			continue
		}
		g, err := apply(&gradOp{fwd: op, i: i, in: args}, args...)
		if err != nil {
			return nil, err
		}
		grads[i] = g
	}
	return grads, nil
}

// DoDiff adds the inputs' gradients into their dual values (the
// LispMachine's automatic differentiation).
func (op *kernelOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	vals := make([]G.Value, len(inputs))
	for i, n := range inputs {
		vals[i] = n.Value()
	}
	in, err := floats(op, vals)
	if err != nil {
		return err
	}
	dv, err := output.Grad()
	if err != nil {
		return errors.Wrapf(err, "%v: output gradient", op)
	}
	dout, err := floats(op, []G.Value{output.Value(), dv})
	if err != nil {
		return err
	}
	for i, w := range op.wrt {
		if !w {
			continue
		}
		gv, err := inputs[i].Grad()
		if err != nil {
			return errors.Wrapf(err, "%v: gradient of input %d", op, i)
		}
		g, err := floats(op, []G.Value{gv})
		if err != nil {
			return err
		}
		// backward writes; the dual value accumulates.
		d := make([]float32, len(g[0]))
		op.backward(i, in, dout[0], dout[1], d)
		for j, v := range d {
			g[0][j] += v
		}
	}
	return nil
}

// gradOp computes the gradient of input i of fwd; its inputs are fwd's,
// then fwd's output and its gradient.
type gradOp struct {
	fwd *kernelOp
	i   int
	in  G.Nodes
}

func (op *gradOp) Arity() int { return len(op.fwd.in) + 2 }

func (op *gradOp) Type() hm.Type {
	ts := append(append([]hm.Type(nil), op.fwd.in...), op.fwd.out, op.fwd.out, op.fwd.in[op.i])
	return hm.NewFnType(ts...)
}

func (op *gradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.in[op.i].Shape().Clone(), nil
}

func (op *gradOp) Do(vals ...G.Value) (G.Value, error) {
	all, err := floats(op, vals)
	if err != nil {
		return nil, err
	}
	k := len(op.fwd.in)
	shape := op.in[op.i].Shape()
	din := make([]float32, max(shape.TotalSize(), 1))
	op.fwd.backward(op.i, all[:k], all[k], all[k+1], din)
	return value(shape, din), nil
}

func (op *gradOp) ReturnsPtr() bool     { return false }
func (op *gradOp) CallsExtern() bool    { return false }
func (op *gradOp) OverwritesInput() int { return -1 }
func (op *gradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "%s#%d.grad%d", op.fwd.name, op.fwd.id, op.i)
}
func (op *gradOp) Hashcode() uint32 { return hashOf(op) }
func (op *gradOp) String() string   { return fmt.Sprintf("%s.grad%d", op.fwd.name, op.i) }

func hashOf(op G.Op) uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}

// floats returns the float32 data of Gorgonia values (tensors or scalars).
func floats(op fmt.Stringer, vals []G.Value) ([][]float32, error) {
	out := make([][]float32, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case *G.F32:
			out[i] = []float32{float32(*v)}
		case tensor.Tensor:
			d, ok := v.Data().([]float32)
			if !ok {
				if s, ok := v.Data().(float32); ok {
					out[i] = []float32{s}
					continue
				}
				return nil, fmt.Errorf("gorgonia: %v: input %d is %v, want float32", op, i, v.Dtype())
			}
			out[i] = d
		default:
			return nil, fmt.Errorf("gorgonia: %v: input %d is %T, want a float32 tensor", op, i, v)
		}
	}
	return out, nil
}

// value wraps data as a Gorgonia value of the given shape.
func value(shape tensor.Shape, data []float32) G.Value {
	if shape.IsScalar() {
		return G.NewF32(data[0])
	}
	return tensor.New(tensor.WithShape(shape.Clone()...), tensor.WithBacking(data))
}
