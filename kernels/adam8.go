package kernels

import (
	"fmt"
	"math"
	"slices"
)

// Block-wise 8-bit state quantization (Dettmers et al., arXiv 2110.02861,
// as bitsandbytes implements it): a state tensor is cut into blocks; each
// block keeps its absmax in float32 and one byte per value, the index of
// the nearest entry of a 256-value map of x/absmax.

// Map8 is a sorted 256-value quantization map with a nearest-code lookup
// that needs no search: the magnitude |y| <= 1 picks a bucket from its
// float32 exponent and top 6 mantissa bits; at most two boundaries between
// neighbouring magnitudes fall in a bucket (checked when built), so two
// comparisons finish the job. Negative values use the mirrored
// magnitudes the map has.
type Map8 struct {
	// Values is the map, ascending; a code byte indexes it.
	Values [256]float32
	Signed bool
	// Bound[j] is the midpoint between magnitudes j and j+1 (the last is
	// above 1); Bucket[b] is the number of bounds below bucket b's start.
	// Magnitude j is the code byte Zero+j; -magnitude j is Zero-j, or the
	// most negative value where the map has none (signed), or 0 (unsigned
	// maps clamp negatives to 0).
	Bound  []float32
	Bucket []int32
	Zero   int
	// fine is the SIMD kernels' form of the same lookup, one gather per
	// value: indexed by |y|'s bits >> 16 (exponent and 7 mantissa bits),
	// at most one bound falls in each of its buckets, and the entry holds
	// the magnitude index at the bucket's start (low 8 bits) and that
	// bound's low 16 bits (above; 0x1FFFF where the bucket has none), so
	// one integer comparison of |y|'s low bits finishes the job. Nil when
	// a bucket holds two bounds (a map denser than the dynamic ones): the
	// Go loop runs then.
	fine []uint32
}

// bucketShift keeps the exponent and 6 mantissa bits of a float32.
const bucketShift = 17

// DynamicMap builds the dynamic (tree) map of bitsandbytes'
// create_dynamic_map with 7 exponent levels: level i holds the midpoints of
// linspace(0.1, 1, K+1) times 10^(i-6), K = 2^i intervals (signed, with
// their negatives) or 2^(i+1) (unsigned); then 0 and 1. Signed: 127
// negatives, 0, 128 positives; unsigned: 0 and 255 positives.
func DynamicMap(signed bool) *Map8 {
	var vals []float64
	for i := 0; i < 7; i++ {
		k := 1 << i
		if !signed {
			k = 2 << i
		}
		for j := 0; j < k; j++ {
			lo := 0.1 + 0.9*float64(j)/float64(k)
			hi := 0.1 + 0.9*float64(j+1)/float64(k)
			v := (lo + hi) / 2 * math.Pow(10, float64(i-6))
			vals = append(vals, v)
			if signed {
				vals = append(vals, -v)
			}
		}
	}
	vals = append(vals, 0, 1)
	// Unsigned: 254 level values + 0 + 1 = 256. Signed: 2*127 + 2 = 256.
	slices.Sort(vals)
	m := &Map8{Signed: signed}
	for i, v := range vals {
		m.Values[i] = float32(v)
	}
	m.build()
	return m
}

func (m *Map8) build() {
	zero := slices.Index(m.Values[:], 0)
	if zero < 0 {
		panic("kernels: Map8 without 0")
	}
	var mags []float32
	for _, v := range m.Values[zero:] {
		mags = append(mags, v)
	}
	m.Zero = zero
	for j := 1; j <= zero; j++ {
		if m.Values[zero-j] != -mags[j] {
			panic("kernels: Map8: negatives are not the mirrored positives")
		}
	}
	m.Bound = make([]float32, len(mags))
	for j := 0; j+1 < len(mags); j++ {
		m.Bound[j] = (mags[j] + mags[j+1]) / 2
	}
	m.Bound[len(mags)-1] = 2
	nb := int(math.Float32bits(1)>>bucketShift) + 1
	m.Bucket = make([]int32, nb)
	j := 0
	for b := 0; b < nb; b++ {
		start := math.Float32frombits(uint32(b) << bucketShift)
		for j < len(mags)-1 && m.Bound[j] < start {
			j++
		}
		m.Bucket[b] = int32(j)
		end := math.Float32frombits(uint32(b+1)<<bucketShift - 1)
		if j+2 < len(mags) && m.Bound[j+2] < end {
			panic(fmt.Sprintf("kernels: Map8: three bounds in bucket %d", b))
		}
	}
	m.fine = fineTable(m.Bound)
}

// fineShift keeps the exponent and 7 mantissa bits of a float32: fine
// enough that no bucket below 1 holds two bounds of the dynamic maps
// (their closest magnitudes, 0.9/128 apart near 1, are wider than a
// bucket there, 2^-8).
const fineShift = 16

// fineTable builds Map8.fine from the bounds (ascending, positive), or
// returns nil when a bucket holds two of them.
func fineTable(bound []float32) []uint32 {
	nb := int(math.Float32bits(1)>>fineShift) + 1
	t := make([]uint32, nb)
	j := 0
	for b := 0; b < nb; b++ {
		for j < len(bound)-1 && math.Float32bits(bound[j])>>fineShift < uint32(b) {
			j++
		}
		rem := uint32(0x1FFFF) // no bound here: the low bits never exceed it
		if bb := math.Float32bits(bound[j]); bb>>fineShift == uint32(b) {
			if j+1 < len(bound) && math.Float32bits(bound[j+1])>>fineShift == uint32(b) {
				return nil
			}
			rem = bb & (1<<fineShift - 1)
		}
		t[b] = uint32(j) | rem<<8
	}
	return t
}

// Code returns the byte of the map value nearest to y (|y| <= 1; ties go
// to the smaller magnitude).
func (m *Map8) Code(y float32) uint8 {
	a := min(float32(math.Abs(float64(y))), 1)
	j := int(m.Bucket[math.Float32bits(a)>>bucketShift])
	if a > m.Bound[j] {
		j++
	}
	if a > m.Bound[j] {
		j++
	}
	if y < 0 {
		return uint8(max(m.Zero-j, 0))
	}
	return uint8(m.Zero + j)
}

// Blocks returns the number of blocks of n values.
func Blocks(n, block int) int { return (n + block - 1) / block }

// Quantize8 writes the codes and per-block absmax of x (absmax 0 is
// stored as 1, as bitsandbytes does, so an all-zero block decodes to 0).
func Quantize8(codes []uint8, absmax, x []float32, block int, m *Map8) {
	for k := 0; k < Blocks(len(x), block); k++ {
		xs := x[k*block : min((k+1)*block, len(x))]
		var a float32
		for _, v := range xs {
			a = max(a, float32(math.Abs(float64(v))))
		}
		if a == 0 {
			a = 1
		}
		absmax[k] = a
		inv := 1 / a
		for i, v := range xs {
			codes[k*block+i] = m.Code(v * inv)
		}
	}
}

// Dequantize8 writes x = Values[code] * absmax of its block.
func Dequantize8(x []float32, codes []uint8, absmax []float32, block int, m *Map8) {
	for i, c := range codes[:len(x)] {
		x[i] = m.Values[c] * absmax[i/block]
	}
}

// Adam8 holds what the fused 8-bit AdamW update reads besides the tensors:
// the maps of the two moments and the block size (at most MaxBlock8).
type Adam8 struct {
	M, V  *Map8
	Block int
}

// MaxBlock8 bounds the block size: the fused kernel keeps one block's
// dequantized moments on the stack.
const MaxBlock8 = 4096

// AdamW8 is one AdamW step (adamMoments and adamParam) on moments
// stored as 8-bit codes with per-block absmax, fused: for each block,
// dequantize m and v, update them and p, requantize with the new absmax.
// The C kernels give the same bits where the CPU has AVX2 or AVX-512
// (vectorised with AVX-512: permutes for the dequantization, a gather
// from Map8.fine for the requantization). With the states in cache the
// AVX-512 kernel costs about 1.4-1.6 ns a value on this machine's Zen 5
// cores, nearly all of it instructions (about 9 a value, 7 of them
// 512-bit, and one 16-lane gather per moment per 16 values at about 20
// cycles each), not memory: fp32 AdamW streams past the caches at about
// 0.6 ns a value, so on one core the 8-bit update is slower however few
// bytes it moves (issue 27).
func AdamW8(p, g []float32, m, v []uint8, mAbs, vAbs []float32, a *Adam8, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	n := len(p)
	if len(g) < n || len(m) < n || len(v) < n || len(mAbs) < Blocks(n, a.Block) || len(vAbs) < Blocks(n, a.Block) ||
		a.Block < 1 || a.Block > MaxBlock8 {
		panic(fmt.Sprintf("kernels: AdamW8: %d values, block %d, slices too short", n, a.Block))
	}
	if adamW8SIMD(p, g, m, v, mAbs, vAbs, a, lr, b1, b2, eps, wd, bc1, bc2) {
		return
	}
	adamW8Go(p, g, m, v, mAbs, vAbs, a, lr, b1, b2, eps, wd, bc1, bc2)
}

// adamMoments and adamParam are AdamW's arithmetic as the 8-bit kernels
// do it, every product rounded before it is added (float32 conversions
// stop Go from fusing them where the target has FMA; the C kernels keep
// them apart the same way), so that every path gives the same bits:
// m = b1 m + (1-b1) g, v = b2 v + ((1-b2) g) g,
// p = p*decay - (step m)/(sqrt(v) isb2 + eps).
func adamMoments(m, v, g, b1, b2 float32) (float32, float32) {
	return float32(b1*m) + float32((1-b1)*g), float32(b2*v) + float32(float32((1-b2)*g)*g)
}

func adamParam(p, m, v, decay, step, isb2, eps float32) float32 {
	return float32(p*decay) - float32(step*m)/(float32(float32(math.Sqrt(float64(v)))*isb2)+eps)
}

func adamW8Go(p, g []float32, m, v []uint8, mAbs, vAbs []float32, a *Adam8, lr, b1, b2, eps, wd, bc1, bc2 float32) {
	step, decay := lr/bc1, 1-float32(lr*wd)
	isb2 := float32(1 / math.Sqrt(float64(bc2)))
	var mb, vb [MaxBlock8]float32
	for k := 0; k < Blocks(len(p), a.Block); k++ {
		lo, hi := k*a.Block, min((k+1)*a.Block, len(p))
		am, av := mAbs[k], vAbs[k]
		var nm, nv float32
		for i := lo; i < hi; i++ {
			gi := g[i]
			mi, vi := adamMoments(a.M.Values[m[i]]*am, a.V.Values[v[i]]*av, gi, b1, b2)
			mb[i-lo], vb[i-lo] = mi, vi
			nm, nv = max(nm, float32(math.Abs(float64(mi)))), max(nv, vi)
			p[i] = adamParam(p[i], mi, vi, decay, step, isb2, eps)
		}
		if nm == 0 {
			nm = 1
		}
		if nv == 0 {
			nv = 1
		}
		mAbs[k], vAbs[k] = nm, nv
		im, iv := 1/nm, 1/nv
		for i := lo; i < hi; i++ {
			m[i] = a.M.Code(mb[i-lo] * im)
			v[i] = a.V.Code(vb[i-lo] * iv)
		}
	}
}
