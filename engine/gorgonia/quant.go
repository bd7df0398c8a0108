package gorgonia

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"qat/kernels"
	"qat/qat"
)

// FakeQuant applies q to x on a Gorgonia graph, with the tape's kernels
// (qat.Quantizer.Forward and Backward): the forward value is x on q's grid,
// x's gradient the straight-through estimator (zero where x clipped). For
// an lsq quantizer, params are the nodes holding its step and, for LSQ+
// (asymmetric), its offset: they take LSQ's gradients. Other quantizers
// take no params (mse steps are fixed, minmax ones computed from x).
func FakeQuant(q *qat.Quantizer, x *G.Node, params ...*G.Node) (*G.Node, error) {
	if q.Scale == "clip" {
		// its gradients go to the clip values, which Forward/Backward do
		// not carry (qat.ClipForward, ClipBackward)
		return nil, fmt.Errorf("gorgonia: FakeQuant: learned clip values (scale: clip) run on the tape only")
	}
	shape := x.Shape()
	if len(shape) == 0 || shape[len(shape)-1] != q.Row() {
		return nil, fmt.Errorf("gorgonia: FakeQuant: quantizer for rows of %d applied to %v", q.Row(), shape)
	}
	n := shape.TotalSize()
	want := 0
	if q.Scale == "lsq" {
		want = 1
		if q.Offset != nil {
			want = 2
		}
	}
	if len(params) != want {
		return nil, fmt.Errorf("gorgonia: FakeQuant: %s quantizer takes %d parameter nodes, have %d", q.Scale, want, len(params))
	}
	if q.Step != nil && kernels.Formats[q.Format].BlockElems <= 1 { // Q4_0 and Q8_0 blocks have their own scales
		group, err := q.Group(q.Row(), n)
		if err != nil {
			return nil, fmt.Errorf("gorgonia: FakeQuant: %w", err)
		}
		if q.Step.Size() != n/group || (len(params) > 0 && params[0].Shape().TotalSize() != n/group) {
			return nil, fmt.Errorf("gorgonia: FakeQuant: %d steps for %d groups", q.Step.Size(), n/group)
		}
		if q.Scale == "mse" && q.Step.Data()[0] == 0 {
			return nil, fmt.Errorf("gorgonia: FakeQuant: mse quantizer used before Init or Calibrate")
		}
	}
	// fwd runs the forward into out and returns its mask and scratch.
	fwd := func(in [][]float32, out []float32) ([]uint8, []float32) {
		mask := make([]uint8, n)
		scratch := make([]float32, q.ScratchSize(n))
		var step, offset []float32
		if len(in) > 1 {
			step = in[1]
		}
		if len(in) > 2 {
			offset = in[2]
		}
		q.Forward(out, mask, in[0], step, offset, scratch)
		return mask, scratch
	}
	wrt := make([]bool, 1+len(params))
	for i := range wrt {
		wrt[i] = true
	}
	name := fmt.Sprintf("FakeQuant(%s%d %s %s)", q.Format, q.Bits, q.Granularity, q.Scale)
	op := newOp(name, append([]*G.Node{x}, params...), shape, nil, wrt,
		func(in [][]float32, out []float32) { fwd(in, out) },
		func(i int, in [][]float32, out, dout, din []float32) {
			mask, scratch := fwd(in, make([]float32, n))
			var dx, dstep, doffset []float32
			var step []float32
			if len(in) > 1 {
				step = in[1]
				dstep = make([]float32, len(step))
			}
			switch i {
			case 0:
				dx = din
			case 1:
				dstep = din
			case 2:
				doffset = din
			}
			q.Backward(dx, dstep, doffset, dout, mask, in[0], step, scratch)
		})
	return apply(op, append([]*G.Node{x}, params...)...)
}
