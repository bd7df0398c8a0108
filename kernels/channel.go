package kernels

import (
	"fmt"
	"math"
)

// ChannelInt is a weight matrix of signed 4- or 8-bit codes with one
// float32 scale per row (per-channel W4A8 and W8A8: the w4a8 and w8a8
// recipes, QQQ's per-channel layout), laid out for GemmChannel (see
// packed.c): rows in groups of four, per block of 32 inputs the four
// rows' codes side by side; int4 codes stored + 8 as nibbles.
type ChannelInt struct {
	Bits    int
	W       []byte
	Scale   []float32 // per row
	Sum     []int32   // per row: the sum of its codes (zero-point term)
	Rows, K int
	nb      int // blocks of 32 per row (K rounded up, padded with code 0)
}

// NewChannelInt packs codes (rows x k, row-major, in [-2^(bits-1),
// 2^(bits-1)-1]) with their row scales; rows must be a multiple of 4.
func NewChannelInt(bits int, codes []int8, scale []float32, rows, k int) (*ChannelInt, error) {
	if bits != 4 && bits != 8 {
		return nil, fmt.Errorf("per-channel int weights: %d bits, want 4 or 8", bits)
	}
	if rows%4 != 0 || len(codes) != rows*k || len(scale) != rows {
		return nil, fmt.Errorf("per-channel int weights: %d codes and %d scales for %d x %d (rows a multiple of 4)", len(codes), len(scale), rows, k)
	}
	nb := (k + 31) / 32
	bb := 4 * 32 * bits / 8 // bytes per block of a group
	w := &ChannelInt{Bits: bits, W: make([]byte, rows/4*nb*bb), Scale: append([]float32(nil), scale...), Sum: make([]int32, rows), Rows: rows, K: k, nb: nb}
	lim := int8(1 << (bits - 1))
	for r := 0; r < rows; r++ {
		for j := 0; j < nb*32; j++ {
			var q int8
			if j < k {
				q = codes[r*k+j]
				if bits == 4 && (q < -lim || q > lim-1) {
					return nil, fmt.Errorf("per-channel int4 weights: code %d at row %d, input %d", q, r, j)
				}
			}
			w.Sum[r] += int32(q)
			w.set(r, j, q)
		}
	}
	return w, nil
}

// set and code place and read the code of row r, input j.
func (w *ChannelInt) set(r, j int, q int8) {
	g, i, b, e := r/4, r%4, j/32, j%32
	if w.Bits == 8 {
		w.W[(g*w.nb+b)*128+64*(e/16)+16*i+e%16] = byte(q)
		return
	}
	p := &w.W[(g*w.nb+b)*64+16*i+e%16]
	n := byte(q+8) & 15
	if e < 16 {
		*p = *p&0xf0 | n
	} else {
		*p = *p&0x0f | n<<4
	}
}

// Code returns the code of row r, input j (0 past K).
func (w *ChannelInt) Code(r, j int) int8 { return w.code(r, j) }

func (w *ChannelInt) code(r, j int) int8 {
	g, i, b, e := r/4, r%4, j/32, j%32
	if w.Bits == 8 {
		return int8(w.W[(g*w.nb+b)*128+64*(e/16)+16*i+e%16])
	}
	v := w.W[(g*w.nb+b)*64+16*i+e%16]
	if e >= 16 {
		v >>= 4
	}
	return int8(v&15) - 8
}

// TokenU8 holds activations quantized per token (row) to unsigned 8-bit
// codes with a zero point, as the asymmetric per-token int8 quantizers of
// the w4a8 and w8a8 recipes (qat.Spec's minmax rule): over the token's
// range widened to contain 0, s = (hi-lo)/255, z = -rne(lo/s) clamped to
// [0, 255], u = clamp(rne(x*(1/s)) + z, 0, 255).
type TokenU8 struct {
	U           []byte // N rows of KP codes (K rounded up to 32, padded with 0)
	Scale, Zero []float32
	Sum         []int32
	N, K, KP    int
}

// TokenScheme is how activations are quantized per token: asymmetric
// (QuantizeTokens' rule) or symmetric, u = clamp(rne(x/s), qmin, 127) +
// 128 with z = 128 and s = amax/((127-qmin)/2), qmin -128 or, restricted,
// -127 (qat.Spec's symmetric rule). Bits is the activation width: 0 or
// 8, codes in TokenU8 (Quantize, GemmChannel); 4, codes in TokenU4
// (Quantize4, GemmChannel4: the w4a4 recipe).
type TokenScheme struct {
	Symmetric, Restricted bool
	Bits                  int
}

// Quantize quantizes n rows of k values into a by the scheme.
func (t TokenScheme) Quantize(a *TokenU8, x []float32, n, k int) {
	if t.Bits != 0 && t.Bits != 8 {
		panic(fmt.Sprintf("kernels: TokenScheme.Quantize: %d-bit activations into 8-bit codes (Quantize4 takes 4)", t.Bits))
	}
	if !t.Symmetric {
		QuantizeTokens(a, x, n, k)
		return
	}
	qmin := float32(-128)
	if t.Restricted {
		qmin = -127
	}
	a.prepare(x, n, k)
	for r := 0; r < n; r++ {
		row := x[r*k : (r+1)*k]
		var amax float32
		for _, v := range row {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		s := max(amax/((127-qmin)/2), 1.1920929e-07)
		inv := 1 / s
		u := a.U[r*a.KP : (r+1)*a.KP]
		var sum int32
		for j, v := range row {
			q := min(max(float32(math.RoundToEven(float64(v*inv))), qmin), 127) + 128
			u[j] = byte(q)
			sum += int32(q)
		}
		clear(u[k:])
		a.Scale[r], a.Zero[r], a.Sum[r] = s, 128, sum
	}
}

func (a *TokenU8) prepare(x []float32, n, k int) {
	if len(x) < n*k {
		panic(fmt.Sprintf("kernels: QuantizeTokens: %d rows of %d from %d values", n, k, len(x)))
	}
	kp := (k + 31) / 32 * 32
	a.N, a.K, a.KP = n, k, kp
	if cap(a.U) < n*kp {
		a.U = make([]byte, n*kp)
	}
	a.U = a.U[:n*kp]
	a.Scale, a.Zero, a.Sum = grow(a.Scale, n), grow(a.Zero, n), growI(a.Sum, n)
}

// QuantizeTokens quantizes n rows of k values into a, reusing its buffers.
func QuantizeTokens(a *TokenU8, x []float32, n, k int) {
	a.prepare(x, n, k)
	kp := a.KP
	for t := 0; t < n; t++ {
		row := x[t*k : (t+1)*k]
		var lo, hi float32
		for _, v := range row {
			lo, hi = min(lo, v), max(hi, v)
		}
		s := max((hi-lo)/255, 1.1920929e-07)
		z := min(max(-float32(math.RoundToEven(float64(lo/s))), 0), 255)
		inv := 1 / s
		u := a.U[t*kp : (t+1)*kp]
		var sum int32
		for j, v := range row {
			q := min(max(float32(math.RoundToEven(float64(v*inv)))+z, 0), 255)
			u[j] = byte(q)
			sum += int32(q)
		}
		clear(u[k:])
		a.Scale[t], a.Zero[t], a.Sum[t] = s, z, sum
	}
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

func growI(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	return s[:n]
}

// GemmChannel computes y[c*Rows + r] = s_w[r] s_x[c] sum_k w[r,k] (u_c[k] -
// z_c): the exact integer product of the codes, scaled once per output.
// Split over threads by groups of four rows (ForRows).
func GemmChannel(w *ChannelInt, a *TokenU8, y []float32) {
	if a.K != w.K || len(y) < a.N*w.Rows {
		panic(fmt.Sprintf("kernels: GemmChannel: %d x %d weight, %d tokens of %d, %d outputs", w.Rows, w.K, a.N, a.K, len(y)))
	}
	groups := w.Rows / 4
	// about 64 KB of weights per task, in units of four groups (16
	// outputs, a cache line of each token's row), on the packed
	// products' pool (ForRows)
	per := max(4, (1<<16)/(w.nb*32*w.Bits/2))
	// many tokens: in chunks that stay in L2 (tokenChunk)
	cb := tokenChunk(a.KP)
	for c0 := 0; c0 < a.N; c0 += cb {
		sub, ys := a, y
		if a.N > cb {
			sub, ys = a.cols(c0, min(a.N, c0+cb)), y[c0*w.Rows:]
		}
		run := func(g0, g1 int) {
			if !gemmChannelSIMD(w, g0, g1, sub, ys) {
				gemmChannelGo(w, g0, g1, sub, ys)
			}
		}
		if Serial(groups, per) {
			run(0, groups)
		} else {
			ForRows(groups, per, 4, run)
		}
	}
}

// tokenChunk is how many tokens (activation rows of kp codes) a pass over
// the weights takes: every group of four weight rows reads them all
// again, so they should stay in a core's L2 (about 256 KB of codes); a
// multiple of 8, the kernels' widest tile. Many tokens (prefill) then
// read the weights several times instead of streaming every token's
// codes from memory for every group: at 4096 x 14336 and 256 tokens, 151
// ms became 77 (W4A8) and 154 became 79 (W4A4) on one thread (`qat bench
// packed`); fewer tokens than a chunk run as before.
func tokenChunk(kp int) int { return max(8, (1<<18)/max(kp, 32)/8*8) }

// cols is a view of tokens c0..c1 of a.
func (a *TokenU8) cols(c0, c1 int) *TokenU8 {
	return &TokenU8{U: a.U[c0*a.KP : c1*a.KP], Scale: a.Scale[c0:c1], Zero: a.Zero[c0:c1], Sum: a.Sum[c0:c1], N: c1 - c0, K: a.K, KP: a.KP}
}

// gemmChannelGo is the reference: int64 dot products of the codes.
func gemmChannelGo(w *ChannelInt, g0, g1 int, a *TokenU8, y []float32) {
	for c := 0; c < a.N; c++ {
		u := a.U[c*a.KP:]
		for r := 4 * g0; r < 4*g1; r++ {
			var d int64
			for j := 0; j < w.K; j++ {
				d += int64(w.code(r, j)) * int64(u[j])
			}
			d -= int64(a.Zero[c]) * int64(w.Sum[r])
			y[c*w.Rows+r] = w.Scale[r] * a.Scale[c] * float32(d)
		}
	}
}
