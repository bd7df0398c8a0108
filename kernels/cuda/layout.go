package cuda

import "qat/kernels"

// Channel is a per-channel int4 or int8 weight (kernels.ChannelInt) in the
// device's layout: Rows rows of KP codes (K rounded up to 32, zero
// padded), int8 codes as bytes, int4 codes as nibble pairs (code j in the
// low nibble of byte j/2 for even j, the high one for odd j, stored + 8),
// so a warp reads a row contiguously.
type Channel struct {
	Bits, Rows, K, KP int
	W                 []byte
	Scale             []float32
	Sum               []int32 // per row, the sum of its codes
}

// NewChannel lays w out for the device.
func NewChannel(w *kernels.ChannelInt) *Channel {
	kp := (w.K + 31) / 32 * 32
	c := &Channel{Bits: w.Bits, Rows: w.Rows, K: w.K, KP: kp, Scale: append([]float32(nil), w.Scale...), Sum: append([]int32(nil), w.Sum...)}
	if w.Bits == 8 {
		c.W = make([]byte, w.Rows*kp)
		for r := 0; r < w.Rows; r++ {
			for j := 0; j < w.K; j++ {
				c.W[r*kp+j] = byte(w.Code(r, j))
			}
		}
		return c
	}
	c.W = make([]byte, w.Rows*kp/2)
	for r := 0; r < w.Rows; r++ {
		for j := 0; j < kp; j++ {
			var q int8
			if j < w.K {
				q = w.Code(r, j)
			}
			c.W[r*kp/2+j/2] |= byte(q+8) & 15 << (4 * (j & 1))
		}
	}
	return c
}

// Tokens is activations quantized per token (kernels.TokenU8) in the
// device's layout: N rows of KP codes, then a scale, zero point and code
// sum per row.
type Tokens struct {
	U           []byte
	Scale, Zero []float32
	Sum         []int32
	N, K, KP    int
}

func (a *Tokens) resize(n, k int) {
	a.N, a.K, a.KP = n, k, (k+31)/32*32
	a.U = make([]byte, n*a.KP)
	a.Scale, a.Zero, a.Sum = make([]float32, n), make([]float32, n), make([]int32, n)
}

// qminOf is the lowest symmetric code of a token scheme.
func qminOf(t kernels.TokenScheme) float32 {
	if t.Restricted {
		return -127
	}
	return -128
}
