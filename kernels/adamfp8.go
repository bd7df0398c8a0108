package kernels

import (
	"fmt"
	"math"
)

// FP8 optimizer states with dynamic range expansion (COAT, arXiv
// 2410.19313). Each group of G values of a moment is stretched by
// f(x) = sign(x) |x/c|^k before rounding to E4M3, so that the group's
// dynamic range max|x|/min|x| fills E4M3's (448^2/2), and shrunk back by
// the inverse after reading. A group keeps only its range, max|x| rounded
// up and min nonzero |x| rounded down to bfloat16 (4 bytes): k, the centre
// c = sqrt(max*min) and the scale S = (max/c)^k/448 follow from it, the
// same way when writing and reading.

// E4M3Values decodes an E4M3 byte (PyTorch's float8_e4m3fn: sign, 4
// exponent bits with bias 7, 3 mantissa bits, no infinities, 0x7F and 0xFF
// NaN, largest finite 448).
var E4M3Values = func() (t [256]float32) {
	for c := 0; c < 256; c++ {
		e, m := (c>>3)&15, c&7
		var v float64
		switch {
		case e == 15 && m == 7:
			v = math.NaN()
		case e == 0:
			v = float64(m) * math.Ldexp(1, -9)
		default:
			v = (1 + float64(m)/8) * math.Ldexp(1, e-7)
		}
		if c&0x80 != 0 {
			v = -v
		}
		t[c] = float32(v)
	}
	return t
}()

// EncodeE4M3 rounds v to the nearest E4M3 value, ties to even, saturating
// at ±448, and returns its byte. Subnormals (below 2^-6) round on the grid
// of 2^-9; normals keep 3 mantissa bits by adding the rounding bias to the
// float32 bits (a carry moves to the exponent, as it should).
func EncodeE4M3(v float32) uint8 {
	a := min(float32(math.Abs(float64(v))), 448)
	var code uint32
	if a < 1.0/64 {
		code = uint32(rne(a * 512))
	} else {
		b := math.Float32bits(a)
		r := b + 0x7FFFF + (b>>20)&1
		code = r>>20 - 120<<3
	}
	if v < 0 {
		code |= 0x80
	}
	return uint8(code)
}

// DefaultDREGroup is COAT's group size.
const DefaultDREGroup = 128

// bf16Up and bf16Down round a positive float32 to bfloat16 (its top 16
// bits) toward +inf and toward 0.
func bf16Up(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0xFFFF != 0 {
		b += 0x10000
	}
	return uint16(b >> 16)
}

func bf16Down(x float32) uint16 { return uint16(math.Float32bits(x) >> 16) }

func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// DRE holds one group's expansion: exponent K, centre C, scale S; Zero
// marks an all-zero group.
type DRE struct {
	K, InvK, C, S float32
	Zero          bool
}

// log2Man[i] is log2(1 + i/128), the log of a bfloat16 mantissa; the C
// kernels get the same table, so k comes out the same on every path.
var log2Man = func() (t [128]float64) {
	for i := range t {
		t[i] = math.Log2(1 + float64(i)/128)
	}
	return t
}()

// dreL is log2(448^2/2), the range E4M3 can hold with the expansion.
const dreL = 16.614709844115208

// loFloor keeps the stored minimum a normal number (2^-100) so that its
// logarithm comes from its bits.
const loFloor = 0x0D80

// DREParams derives a group's expansion from its stored range: with
// log2(max/min) taken exactly from the bfloat16 bits (exponents and a
// table of mantissa logarithms), k = floor(log2(448^2/2)/log2(max/min)*16)/16
// (COAT's kernel: multiples of 1/16), kept in [1/16, 256] (a group of equal
// magnitudes has no range to fill and gets the cap); c = sqrt(max*min);
// S = (max/c)^k/448 = 2^(k*log2(max/min)/2)/448.
func DREParams(hi, lo uint16) DRE {
	if hi == 0 {
		return DRE{K: 1, InvK: 1, C: 1, S: 1, Zero: true}
	}
	lo = min(max(lo, loFloor), hi)
	l2r := float64(int(hi>>7)-int(lo>>7)) + log2Man[hi&127] - log2Man[lo&127]
	k := 256.0
	if l2r > 0 {
		k = min(max(math.Floor(dreL/l2r*16)/16, 1.0/16), 256)
	}
	c := math.Sqrt(float64(fromBF16(hi)) * float64(fromBF16(lo)))
	return DRE{K: float32(k), InvK: float32(1 / k), C: float32(c), S: exp2f32(float32(k*l2r/2)) / 448}
}

// log2f32 is log2 of a positive normal float32: exponent from the bits,
// mantissa folded into [sqrt(1/2), sqrt(2)) and the atanh series
// 2/ln2 (s + s^3/3 + ... + s^9/9), s = (m-1)/(m+1) (error below 1e-8).
// The C kernels compute the same polynomial.
func log2f32(x float32) float32 {
	b := math.Float32bits(x)
	e := int32(b>>23) - 127
	m := math.Float32frombits(b&0x7FFFFF | 0x3F800000)
	if m > 1.41421356 {
		m *= 0.5
		e++
	}
	s := (m - 1) / (m + 1)
	s2 := s * s
	p := float32(0.11111111)
	p = p*s2 + 0.14285714
	p = p*s2 + 0.2
	p = p*s2 + 0.33333333
	p = p*s2 + 1
	return float32(e) + 2.8853900817779268*s*p
}

// exp2f32 is 2^x for x in about [-126, 127] (clamped): x*ln2 through the
// same range reduction and polynomial as the C kernels' fexp.
func exp2f32(x float32) float32 {
	x *= 0.69314718
	x = min(max(x, -87.3), 88.3)
	n := float32(x*1.44269504088896341+12582912) - 12582912
	r := x - n*0.693359375
	r = r + n*2.12194440e-4
	p := float32(1.98756915e-4)
	p = p*r + 1.39819994e-3
	p = p*r + 8.33345205e-3
	p = p*r + 4.16657659e-2
	p = p*r + 1.66666672e-1
	p = p*r + 5.00000000e-1
	p = p*r*r + r + 1
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// Expand returns x's E4M3 byte in group d: E4M3(sign(x) |x/C|^K / S).
func (d DRE) Expand(x float32) uint8 {
	if x == 0 || d.Zero {
		return 0
	}
	// reciprocals, as the C kernels multiply by them
	ic, is := 1/d.C, 1/d.S
	u := exp2f32(d.K*log2f32(float32(math.Abs(float64(x)))*ic)) * is
	if x < 0 {
		u = -u
	}
	return EncodeE4M3(u)
}

// Shrink inverts Expand: y = E4M3Values[q]*S, x = sign(y) |y|^(1/K) C.
func (d DRE) Shrink(q uint8) float32 {
	y := E4M3Values[q] * d.S
	if y == 0 || d.Zero {
		return 0
	}
	x := exp2f32(log2f32(float32(math.Abs(float64(y))))*d.InvK) * d.C
	if y < 0 {
		return -x
	}
	return x
}

// RangeDRE returns the stored range of a group: max |x| rounded up and min
// nonzero |x| rounded down to bfloat16 (0, 0 for an all-zero group).
func RangeDRE(x []float32) (hi, lo uint16) {
	var mx float32
	mn := float32(math.MaxFloat32)
	for _, v := range x {
		a := float32(math.Abs(float64(v)))
		mx = max(mx, a)
		if a > 0 {
			mn = min(mn, a)
		}
	}
	if mx == 0 {
		return 0, 0
	}
	return bf16Up(mx), bf16Down(mn)
}

// AdamWFP8 is one AdamW step (the fp32 kernel's arithmetic) on moments
// stored as E4M3 bytes with dynamic range expansion per group, fused: per
// group, shrink m and v back, update them and p, store the new ranges
// (mr, vr: hi, lo per group) and expand again. The C kernels do the same
// where the CPU has AVX2 or AVX-512.
func AdamWFP8(p, g []float32, m, v []uint8, mr, vr []uint16, group int, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	n := len(p)
	if len(g) < n || len(m) < n || len(v) < n || len(mr) < 2*Blocks(n, group) || len(vr) < 2*Blocks(n, group) ||
		group < 1 || group > MaxBlock8 {
		panic(fmt.Sprintf("kernels: AdamWFP8: %d values, group %d, slices too short", n, group))
	}
	if adamWFP8SIMD(p, g, m, v, mr, vr, group, lr, b1, b2, eps, wd, bc1, bc2) {
		return
	}
	adamWFP8Go(p, g, m, v, mr, vr, group, lr, b1, b2, eps, wd, bc1, bc2)
}

func adamWFP8Go(p, g []float32, m, v []uint8, mr, vr []uint16, group int, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	step, decay := lr/bc1, 1-lr*wd
	isb2 := float32(1 / math.Sqrt(float64(bc2)))
	var mb, vb [MaxBlock8]float32
	for k := 0; k < Blocks(len(p), group); k++ {
		lo, hi := k*group, min((k+1)*group, len(p))
		dm, dv := DREParams(mr[2*k], mr[2*k+1]), DREParams(vr[2*k], vr[2*k+1])
		for i := lo; i < hi; i++ {
			gi := g[i]
			mi := b1*dm.Shrink(m[i]) + (1-b1)*gi
			vi := b2*dv.Shrink(v[i]) + (1-b2)*gi*gi
			mb[i-lo], vb[i-lo] = mi, vi
			p[i] = p[i]*decay - step*mi/(float32(math.Sqrt(float64(vi)))*isb2+eps)
		}
		mr[2*k], mr[2*k+1] = RangeDRE(mb[:hi-lo])
		vr[2*k], vr[2*k+1] = RangeDRE(vb[:hi-lo])
		dm, dv = DREParams(mr[2*k], mr[2*k+1]), DREParams(vr[2*k], vr[2*k+1])
		for i := lo; i < hi; i++ {
			m[i], v[i] = dm.Expand(mb[i-lo]), dv.Expand(vb[i-lo])
		}
	}
}
