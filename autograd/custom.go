package autograd

// Custom records an op defined outside this package (qat's fake-quant ops
// use it): fwd writes the output of the given shape; bwd, called during
// Backward with the output's gradient, adds (+=) into the gradients of the
// inputs, dins[i] being nil for an input that takes none. Scratch the op
// needs until backward is its own to keep.
func (t *Tape) Custom(shape []int, inputs []*Var, fwd func(out []float32), bwd func(dout []float32, dins [][]float32)) *Var {
	out := t.newVar(shape, inputs...)
	fwd(out.x)
	t.record(out, func() {
		if out.g == nil {
			return
		}
		dins := make([][]float32, len(inputs))
		for i, in := range inputs {
			if in.needGrad {
				dins[i] = t.grad(in)
			}
		}
		bwd(out.g, dins)
	})
	return out
}

// Scratch returns a buffer of n floats owned by the tape until Reset, for
// custom ops' saved state.
func (t *Tape) Scratch(n int) []float32 { return t.scratch(n) }

// ScratchBytes returns a byte buffer of n owned by the tape until Reset
// (fake-quant masks); its contents are unspecified.
func (t *Tape) ScratchBytes(n int) []uint8 {
	var b []uint8
	if l := t.bfree[n]; len(l) > 0 {
		b = l[len(l)-1]
		t.bfree[n] = l[:len(l)-1]
	} else {
		b = make([]uint8, n)
	}
	t.bused = append(t.bused, b)
	return b
}
