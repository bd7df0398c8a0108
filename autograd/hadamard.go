package autograd

import (
	"fmt"

	"qat/kernels"
)

// Hadamard returns x H/sqrt(n) on each row of x (last dimension h.N): the
// online rotation of a linear's input (QuaRot's down_proj transform). H
// is orthogonal, so the backward is the transpose on the output's
// gradient: dx += dy Hᵀ/sqrt(n).
func (t *Tape) Hadamard(x *Var, h *kernels.Hadamard) *Var {
	if lastDim(x) != h.N {
		panic(fmt.Sprintf("autograd: Hadamard: shape %v, transform of size %d", x.Shape(), h.N))
	}
	out := t.newVar(x.Shape(), x)
	copy(out.x, x.x)
	h.Apply(out.x)
	t.record(out, func() {
		if out.g == nil {
			return
		}
		// In place: out's gradient is read by no one after this backward
		// (as passGrad assumes), and x may then borrow it.
		h.ApplyT(out.g)
		t.passGrad(x, out, true)
	})
	return out
}
