package autograd

import (
	"fmt"
	"unsafe"
)

// Var is a value on the tape and its gradient: x and g hold them row-major
// in shape (another engine, engine/gorgonia, builds its own tensors over
// Data and Shape).
type Var struct {
	shape    []int
	x, g     []float32
	needGrad bool
	temp     bool // owned by a tape's pool
	// gradBorrowed: grad is another temporary's buffer (Add), returned to
	// the pool by its owner.
	gradBorrowed bool
	// stale: ZeroGrad was called and g still holds old values. The first
	// op to write the gradient overwrites it (sgemm with beta 0) instead of
	// clearing it first; readers clear it on demand.
	stale bool
}

// NewParam returns a trainable leaf of the given shape, zero-filled, with a
// gradient buffer.
func NewParam(shape ...int) *Var {
	n := size(shape)
	v := &Var{shape: append([]int(nil), shape...), needGrad: true}
	v.x, v.g = make([]float32, n), make([]float32, n)
	return v
}

// NewConst returns a leaf that takes no gradient, over data (not copied).
func NewConst(data []float32, shape ...int) *Var {
	if len(data) != size(shape) {
		panic(fmt.Sprintf("autograd: NewConst: %d values for shape %v", len(data), shape))
	}
	return &Var{shape: append([]int(nil), shape...), x: data}
}

// NewShape returns a Var that has a shape and no value (Data nil, Size 0):
// a parameter of a model described without allocating it
// (layers.Describe), whose names and shapes loaders and configuration
// checks read before anything is sized from a file. It takes no gradient
// and no op accepts it.
func NewShape(shape ...int) *Var {
	size(shape) // panics on a negative dimension
	return &Var{shape: append([]int(nil), shape...)}
}

// Data returns the value's backing slice.
func (v *Var) Data() []float32 { return v.x }

// GradData returns the gradient's backing slice, nil if none.
func (v *Var) GradData() []float32 {
	if v.stale {
		clear(v.g)
		v.stale = false
	}
	return v.g
}

// Shape returns the value's shape (not a copy: callers must not change it).
func (v *Var) Shape() []int { return v.shape }

// Size is the number of elements.
func (v *Var) Size() int { return len(v.x) }

// RequiresGrad reports whether gradients flow into v.
func (v *Var) RequiresGrad() bool { return v.needGrad }

// SetRequiresGrad freezes (false) or unfreezes a parameter.
func (v *Var) SetRequiresGrad(b bool) {
	if b && v.g == nil {
		v.g = make([]float32, len(v.x))
	}
	v.needGrad = b
}

// ZeroGrad clears the gradients of vs. The clearing is lazy: backward ops
// that write a whole gradient overwrite it, and GradData clears what no op
// wrote, so large weight gradients are not swept twice per step.
func ZeroGrad(vs ...*Var) {
	for _, v := range vs {
		v.stale = v.g != nil
	}
}

func size(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("autograd: negative dimension in %v", shape))
		}
		n *= d
	}
	return n
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Replica returns a leaf that shares v's value (not copied) and has its own
// zeroed gradient: data-parallel workers read one set of weights and
// accumulate their gradients apart.
func (v *Var) Replica() *Var {
	r := &Var{shape: v.shape, x: v.x, needGrad: v.needGrad}
	if v.needGrad {
		r.g = make([]float32, len(v.x))
	}
	return r
}

// Pack moves the values and gradients of vs into one contiguous buffer
// each, in the given order, as llm.c keeps parameters in one arena and
// gradients in a second with the same offsets. Weights that sit next to each
// other can then be used as one matrix (LinearCat). Values are copied;
// gradients start zeroed.
func Pack(vs []*Var) { pack(vs, true) }

// PackNew is Pack for parameters as NewParam built them, before any value
// is set: values start zeroed too, and the old slices are neither read nor
// copied. A model whose weights are then all loaded packed (decoding)
// never makes its float32 copies resident, and building a large model
// does not page in gigabytes of untouched zeros (checking them for
// nonzero values took 20 s at Llama-3-8B's widths on this VM).
func PackNew(vs []*Var) { pack(vs, false) }

func pack(vs []*Var, values bool) {
	n := 0
	for _, v := range vs {
		n += len(v.x)
	}
	vals, grads := make([]float32, n), make([]float32, n)
	off := 0
	for _, v := range vs {
		m := len(v.x)
		if values {
			copy(vals[off:off+m], v.x)
		}
		v.x = vals[off : off+m : off+m]
		if v.g != nil {
			v.g = grads[off : off+m : off+m]
			v.stale = false
		}
		off += m
	}
}

// PackGrads gives vs new zeroed gradients from one contiguous buffer, in
// order (for replicas, whose values are shared).
func PackGrads(vs []*Var) {
	n := 0
	for _, v := range vs {
		n += len(v.x)
	}
	grads := make([]float32, n)
	off := 0
	for _, v := range vs {
		m := len(v.x)
		if v.g != nil {
			v.g = grads[off : off+m : off+m]
			v.stale = false
		}
		off += m
	}
}

// adjacent reports whether the slices follow each other in memory, so that
// together they are one slice starting at the first.
func adjacent(xs [][]float32) bool {
	for i := 1; i < len(xs); i++ {
		if xs[i-1] == nil || xs[i] == nil || len(xs[i-1]) == 0 ||
			unsafe.Pointer(unsafe.SliceData(xs[i])) != unsafe.Add(unsafe.Pointer(unsafe.SliceData(xs[i-1])), 4*len(xs[i-1])) {
			return false
		}
	}
	return true
}

// joined returns the slice covering adjacent slices xs.
func joined(xs [][]float32) []float32 {
	n := 0
	for _, x := range xs {
		n += len(x)
	}
	return unsafe.Slice(unsafe.SliceData(xs[0]), n)
}
