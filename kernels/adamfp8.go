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
// up and min nonzero |x| rounded down to bfloat16 (4 bytes): k follows
// from it, the same way when writing and reading, and with it COAT's
// centre c = sqrt(max*min) and scale S = (max/c)^k/448, which cancel to
// f(x)/S = 448 (|x|/max)^k (DRE).

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

// DRE holds one group's expansion, derived from its stored range: the
// exponent K (and 1/K), the stored maximum Hi, 1/Hi and log2(Hi); Zero
// marks an all-zero group. COAT's expansion f(x) = sign(x)|x/c|^K / S
// with c = sqrt(max*min) and S = (max/c)^K/448 is, with the centre
// cancelled, 448 (|x|/Hi)^K: that is the form computed, in the log2
// domain, so that each value costs one log2 and one exp2 to write, and
// two table reads to read back.
type DRE struct {
	K, InvK, Hi, InvHi, Log2Hi float32
	Zero                       bool
	// te and tm split reading into two lookups and a product, one exp2
	// per table entry per group instead of one per value: a code with
	// exponent bits e and mantissa bits m reads te[e]*tm[m] (tm[8+m] for
	// subnormals, e = 0, whose te[0] is te[1]), with te[e] =
	// 2^(log2E4M3Exp[e]/K + log2 Hi) and tm[j] = 2^(log2E4M3Man[j]/K).
	te, tm [16]float32
}

// log2Man[i] is log2(1 + i/128), the log of a bfloat16 mantissa; the C
// kernels get the same table, so k comes out the same on every path.
var log2Man = func() (t [128]float64) {
	for i := range t {
		t[i] = math.Log2(1 + float64(i)/128)
	}
	return t
}()

// log2E4M3Exp[e] is log2(2^(e-7)/448) for E4M3's exponent bits e (e = 0,
// the subnormals, reads as e = 1: their values are (m/8) 2^-6);
// log2E4M3Man[m] is log2(1 + m/8) and log2E4M3Man[8+m] log2(m/8), the
// normal and subnormal mantissas. The C kernels get both tables.
var log2E4M3Exp, log2E4M3Man = func() (te, tm [16]float32) {
	for e := 0; e < 16; e++ {
		te[e] = float32(float64(max(e, 1)-7) - math.Log2(448))
	}
	for m := 0; m < 8; m++ {
		tm[m] = float32(math.Log2(1 + float64(m)/8))
		if m > 0 {
			tm[8+m] = float32(math.Log2(float64(m) / 8))
		}
	}
	return te, tm
}()

// dreL is log2(448^2/2), the range E4M3 can hold with the expansion;
// log2E4M3Max is log2(448).
const (
	dreL        = 16.614709844115208
	log2E4M3Max = 8.807354922057604
)

// loFloor keeps the stored minimum a normal number (2^-100) so that its
// logarithm comes from its bits; a group whose maximum is below it is
// stored as all zero (RangeDRE).
const loFloor = 0x0D80

// DREParams derives a group's expansion from its stored range: with
// log2(max/min) taken exactly from the bfloat16 bits (exponents and a
// table of mantissa logarithms), k = floor(log2(448^2/2)/log2(max/min)*16)/16
// (COAT's kernel: multiples of 1/16), kept in [1/16, 256] (a group of equal
// magnitudes has no range to fill and gets the cap).
func DREParams(hi, lo uint16) DRE {
	if hi < loFloor {
		return DRE{K: 1, InvK: 1, Hi: 0, InvHi: 1, Zero: true}
	}
	lo = min(max(lo, loFloor), hi)
	l2r := float64(int(hi>>7)-int(lo>>7)) + log2Man[hi&127] - log2Man[lo&127]
	k := 256.0
	if l2r > 0 {
		k = min(max(math.Floor(dreL/l2r*16)/16, 1.0/16), 256)
	}
	h := fromBF16(hi)
	d := DRE{K: float32(k), InvK: float32(1 / k), Hi: h, InvHi: 1 / h,
		Log2Hi: float32(float64(int(hi>>7)-127) + log2Man[hi&127])}
	for i := range d.te {
		d.te[i] = exp2p(fma32(log2E4M3Exp[i], d.InvK, d.Log2Hi))
		d.tm[i] = exp2p(log2E4M3Man[i] * d.InvK)
	}
	return d
}

// fma32 is a*b+c rounded once to float32, as the FMA instructions of the
// C kernels compute it: the product is exact in float64, the sum is
// rounded to odd there (a rounding error moves it to the odd neighbour),
// and rounding that to float32 is then the single rounding.
func fma32(a, b, c float32) float32 {
	p, z := float64(a)*float64(b), float64(c)
	s := p + z
	bv := s - p
	e := (p - (s - bv)) + (z - bv)
	if e != 0 && math.Float64bits(s)&1 == 0 {
		if (e > 0) == (s > 0) {
			s = math.Float64frombits(math.Float64bits(s) + 1)
		} else {
			s = math.Float64frombits(math.Float64bits(s) - 1)
		}
	}
	return float32(s)
}

// Polynomial coefficients (float32, highest degree first), fitted for
// relative error on Chebyshev nodes: 2^f on [-1/2, 1/2] (error below
// 2.3e-7) and log2(1+t)/t on [-1/4, 1/2] (below 1.4e-6). E4M3 keeps 3
// mantissa bits, so even times k = 256 these errors move a value across
// a rounding boundary only next to a tie.
var (
	exp2Poly = [...]float32{0.0013266970636323094, 0.009675459936261177, 0.05550742521882057, 0.24022121727466583,
		0.6931469440460205, 1}
	log2Poly = [...]float32{0.11685951054096222, -0.24032768607139587, 0.29815673828125, -0.3617551624774933,
		0.4806441068649292, -0.7213243246078491, 1.442696213722229}
)

// log2p is log2 x for a positive normal float32: exponent from the bits,
// mantissa folded into [3/4, 3/2), t = m-1 (exact), e + t*P(t) with FMAs
// (the C kernels compute the same operations).
func log2p(x float32) float32 {
	b := math.Float32bits(x)
	big := (b >> 22) & 1 // mantissa >= 1.5: halve it
	e := float32(int32(b>>23) - 127 + int32(big))
	t := math.Float32frombits(b&0x7FFFFF|(0x3F800000-big<<23)) - 1
	p := log2Poly[0]
	for _, c := range log2Poly[1:] {
		p = fma32(p, t, c)
	}
	return fma32(t, p, e)
}

// exp2p is 2^w for w clamped to [-126, 127]: n = rne(w), f = w-n in
// [-1/2, 1/2], P(f) by FMAs, times 2^n (exact).
func exp2p(w float32) float32 {
	w = min(max(w, -126), 127)
	n := float32(math.RoundToEven(float64(w)))
	f := w - n
	p := exp2Poly[0]
	for _, c := range exp2Poly[1:] {
		p = fma32(p, f, c)
	}
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// Expand returns x's E4M3 byte in group d: E4M3(sign(x) 448 (|x|/Hi)^K),
// the power as 2^(K log2(max(|x|/Hi, 2^-126)) + log2 448).
func (d DRE) Expand(x float32) uint8 {
	if x == 0 || d.Zero {
		return 0
	}
	y := max(float32(math.Abs(float64(x)))*d.InvHi, 0x1p-126)
	code := EncodeE4M3(exp2p(fma32(d.K, log2p(y), log2E4M3Max)))
	if x < 0 {
		code |= 0x80
	}
	return code
}

// Shrink inverts Expand: x = sign(q) Hi (|E4M3(q)|/448)^(1/K), as the
// product of the powers of q's exponent and mantissa (DRE.te, DRE.tm).
func (d DRE) Shrink(q uint8) float32 {
	if q&0x7F == 0 || d.Zero {
		return 0
	}
	j := q & 7
	if q&0x78 == 0 {
		j += 8
	}
	x := d.te[q>>3&15] * d.tm[j]
	if q&0x80 != 0 {
		return -x
	}
	return x
}

// RangeDRE returns the stored range of a group: max |x| rounded up and min
// nonzero |x| rounded down to bfloat16; 0, 0 for a group that is all zero
// or whose maximum is below 2^-100 (loFloor: such moments are stored as 0).
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
	if mx == 0 || bf16Up(mx) < loFloor {
		return 0, 0
	}
	return bf16Up(mx), bf16Down(mn)
}

// AdamWFP8 is one AdamW step (adamMoments and adamParam) on moments
// stored as E4M3 bytes with dynamic range expansion per group, fused: per
// group, shrink m and v back, update them and p, store the new ranges
// (mr, vr: hi, lo per group) and expand again. The C kernels give the
// same bits where the CPU has AVX2 or AVX-512 (16 lanes at a time with
// AVX-512). That kernel is bound by its arithmetic, about 10 instructions
// a value (the expansion's loop alone 82 vector instructions per 16
// values, 26 of them the FMAs of log2p and exp2p): with the states in
// cache about 1.4-1.7 ns a value on this machine's Zen 5 cores, against
// about 0.6 ns for fp32 AdamW streaming from memory (issue 27). The work
// per group (ranges, DREParams, its tables) is up to a fifth of it at
// group 128 (1.70 against 1.37 ns a value at group 4096).
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
	step, decay := lr/bc1, 1-float32(lr*wd)
	isb2 := float32(1 / math.Sqrt(float64(bc2)))
	var mb, vb [MaxBlock8]float32
	for k := 0; k < Blocks(len(p), group); k++ {
		lo, hi := k*group, min((k+1)*group, len(p))
		dm, dv := DREParams(mr[2*k], mr[2*k+1]), DREParams(vr[2*k], vr[2*k+1])
		for i := lo; i < hi; i++ {
			gi := g[i]
			mi, vi := adamMoments(dm.Shrink(m[i]), dv.Shrink(v[i]), gi, b1, b2)
			mb[i-lo], vb[i-lo] = mi, vi
			p[i] = adamParam(p[i], mi, vi, decay, step, isb2, eps)
		}
		mr[2*k], mr[2*k+1] = RangeDRE(mb[:hi-lo])
		vr[2*k], vr[2*k+1] = RangeDRE(vb[:hi-lo])
		dm, dv = DREParams(mr[2*k], mr[2*k+1]), DREParams(vr[2*k], vr[2*k+1])
		for i := lo; i < hi; i++ {
			m[i], v[i] = dm.Expand(mb[i-lo]), dv.Expand(vb[i-lo])
		}
	}
}
