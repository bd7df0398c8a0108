package autograd

import "fmt"

// Tape records backward closures of the ops run on it and owns the buffers
// of their outputs.
type Tape struct {
	back   []func()
	temps  []*Var
	free   map[int][][]float32 // values and gradients by size
	vfree  []*Var
	sfree  map[int][][]float32 // scratch slices by size
	sused  [][]float32
	bfree  map[int][][]uint8 // byte scratch (fake-quant masks) by size
	bused  [][]uint8
	noGrad bool
	ints   []int32 // CrossEntropy's targets (one loss per tape step)
	// loose are pooled buffers no Var owns yet (CrossEntropy's gradient,
	// which its backward may hand to the logits); Reset returns them.
	loose [][]float32
}

// NewTape returns an empty tape.
func NewTape() *Tape {
	return &Tape{free: map[int][][]float32{}, sfree: map[int][][]float32{}, bfree: map[int][][]uint8{}}
}

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
		t.put(v.x)
		if v.g != nil && !v.gradBorrowed {
			t.put(v.g)
		}
		*v = Var{shape: v.shape[:0]} // the shape's room serves the next output
		t.vfree = append(t.vfree, v)
	}
	clear(t.temps)
	t.temps = t.temps[:0]
	for _, x := range t.loose {
		if x != nil {
			t.put(x)
		}
	}
	clear(t.loose)
	t.loose = t.loose[:0]
	for _, x := range t.sused {
		t.sfree[len(x)] = append(t.sfree[len(x)], x)
	}
	clear(t.sused)
	t.sused = t.sused[:0]
	for _, b := range t.bused {
		t.bfree[len(b)] = append(t.bfree[len(b)], b)
	}
	clear(t.bused)
	t.bused = t.bused[:0]
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

// get returns a pooled buffer of n floats (not cleared).
func (t *Tape) get(n int) []float32 {
	if l := t.free[n]; len(l) > 0 {
		x := l[len(l)-1]
		t.free[n] = l[:len(l)-1]
		return x
	}
	return make([]float32, n)
}

func (t *Tape) put(x []float32) {
	t.free[len(x)] = append(t.free[len(x)], x)
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
	v.shape = append(v.shape[:0], shape...)
	v.x = t.get(size(shape))
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
	var x []float32
	if l := t.sfree[n]; len(l) > 0 {
		x = l[len(l)-1]
		t.sfree[n] = l[:len(l)-1]
	} else {
		x = make([]float32, n)
	}
	t.sused = append(t.sused, x)
	return x
}

// grad returns v's gradient slice, creating a zeroed one for a temporary.
func (t *Tape) grad(v *Var) []float32 {
	if v.g == nil {
		if !v.temp {
			panic("autograd: gradient of a leaf that has none")
		}
		v.g = t.get(len(v.x))
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
		v.g = t.get(len(v.x))
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
