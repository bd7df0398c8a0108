package autograd

import (
	"fmt"

	"gorgonia.org/tensor"
)

// Tape records backward closures of the ops run on it and owns the buffers
// of their outputs.
type Tape struct {
	back   []func()
	temps  []*Var
	free   map[int][]*tensor.Dense
	vfree  []*Var
	noGrad bool
	ints   []int32 // CrossEntropy's targets (one loss per tape step)
}

// NewTape returns an empty tape.
func NewTape() *Tape { return &Tape{free: map[int][]*tensor.Dense{}} }

// SetNoGrad turns recording off (evaluation, generation) or back on.
func (t *Tape) SetNoGrad(b bool) { t.noGrad = b }

// NoGrad reports whether recording is off.
func (t *Tape) NoGrad() bool { return t.noGrad }

// Reset forgets the recorded ops and returns every temporary (op outputs and
// their gradients) to the pool; Vars returned by earlier ops must not be
// used after it.
func (t *Tape) Reset() {
	clear(t.back)
	t.back = t.back[:0]
	for _, v := range t.temps {
		t.put(v.Value)
		if v.grad != nil && !v.gradBorrowed {
			t.put(v.grad)
		}
		*v = Var{}
		t.vfree = append(t.vfree, v)
	}
	clear(t.temps)
	t.temps = t.temps[:0]
}

// Backward seeds d(loss)/d(loss) = 1 for a one-element loss and runs the
// recorded closures in reverse.
func (t *Tape) Backward(loss *Var) {
	if loss.Size() != 1 {
		panic(fmt.Sprintf("autograd: Backward of a value with shape %v, want one element", loss.Shape()))
	}
	if !loss.needGrad {
		return
	}
	t.grad(loss)[0] += 1
	for i := len(t.back) - 1; i >= 0; i-- {
		t.back[i]()
	}
}

func (t *Tape) get(shape []int) *tensor.Dense {
	n := size(shape)
	if l := t.free[n]; len(l) > 0 {
		d := l[len(l)-1]
		t.free[n] = l[:len(l)-1]
		if !sameShape(d.Shape(), shape) {
			if err := d.Reshape(shape...); err != nil {
				panic(err)
			}
		}
		return d
	}
	return newDense(shape, make([]float32, n))
}

func (t *Tape) put(d *tensor.Dense) {
	n := d.Shape().TotalSize()
	t.free[n] = append(t.free[n], d)
}

// newVar returns a pooled output of the given shape whose value the op must
// overwrite entirely. needGrad is set when recording and any input needs one.
func (t *Tape) newVar(shape []int, inputs ...*Var) *Var {
	var v *Var
	if n := len(t.vfree); n > 0 {
		v = t.vfree[n-1]
		t.vfree = t.vfree[:n-1]
	} else {
		v = new(Var)
	}
	v.Value = t.get(shape)
	v.x = v.Value.Data().([]float32)
	v.temp = true
	if !t.noGrad {
		for _, in := range inputs {
			if in.needGrad {
				v.needGrad = true
				break
			}
		}
	}
	t.temps = append(t.temps, v)
	return v
}

// scratch returns a pooled buffer of n floats that lives until Reset.
func (t *Tape) scratch(n int) []float32 {
	v := t.newVar([]int{n})
	return v.x
}

// grad returns v's gradient slice, creating a zeroed one for a temporary.
func (t *Tape) grad(v *Var) []float32 {
	if v.g == nil {
		if !v.temp {
			panic("autograd: gradient of a leaf that has none")
		}
		v.grad = t.get(v.Shape())
		v.g = v.grad.Data().([]float32)
		clear(v.g)
	}
	return v.GradData()
}

// gradW returns v's gradient for an op that, when first is true, must
// overwrite all of it (the buffer is new and holds garbage) and otherwise
// add into it. It saves clearing large buffers that sgemm (beta 0) or a copy
// would overwrite anyway. Inputs that take no gradient get a scratch buffer
// (first is true), for fused kernels that write both gradients in one pass.
func (t *Tape) gradW(v *Var) (g []float32, first bool) {
	if !v.needGrad {
		return t.scratch(v.Size()), true
	}
	if v.g == nil {
		if !v.temp {
			panic("autograd: gradient of a leaf that has none")
		}
		v.grad = t.get(v.Shape())
		v.g = v.grad.Data().([]float32)
		return v.g, true
	}
	if v.stale {
		v.stale = false
		return v.g, true
	}
	return v.g, false
}

func beta(first bool) float32 {
	if first {
		return 0
	}
	return 1
}

// record adds a backward closure when out takes a gradient.
func (t *Tape) record(out *Var, fn func()) {
	if out.needGrad {
		t.back = append(t.back, fn)
	}
}
