package cuda

import "qat/kernels"

// Attn is causal attention with grouped-query heads (kernels.Attn's layout
// and meaning); on the device HeadDim is at most 128 and T at most 1024.
type Attn struct {
	B, T, Heads, KVHeads, HeadDim int
	Scale                         float32
}

func (a Attn) cpu() kernels.Attn {
	return kernels.Attn{B: a.B, T: a.T, Heads: a.Heads, KVHeads: a.KVHeads, HeadDim: a.HeadDim, Scale: a.Scale}
}
