package optim

import (
	"fmt"
	"math"

	"qat/data/safetensors"
	"qat/kernels"
)

// Int8Moments keeps AdamW's moments in 8 bits, block-wise (Dettmers et al.,
// arXiv 2110.02861, as bitsandbytes does): one byte per value, the index of
// the nearest value of the dynamic map (signed for m, unsigned for v) of
// x/absmax, and one float32 absmax per block.
type Int8Moments struct {
	M, V       []uint8
	MAbs, VAbs []float32
	k          *kernels.Adam8
}

// The maps are built once; the kernels only read them.
var (
	signedMap   = kernels.DynamicMap(true)
	unsignedMap = kernels.DynamicMap(false)
)

// DefaultBlock8 is bitsandbytes' current block size for 8-bit optimizer
// states (the paper used 2048).
const DefaultBlock8 = 256

// NewInt8Moments returns zeroed moments for n values in blocks of block
// (1 to kernels.MaxBlock8).
func NewInt8Moments(n, block int) *Int8Moments {
	nb := kernels.Blocks(n, block)
	s := &Int8Moments{M: make([]uint8, n), V: make([]uint8, n), MAbs: make([]float32, nb), VAbs: make([]float32, nb),
		k: &kernels.Adam8{M: signedMap, V: unsignedMap, Block: block}}
	for i := range s.M {
		s.M[i], s.V[i] = uint8(signedMap.Zero), uint8(unsignedMap.Zero)
	}
	for i := range s.MAbs {
		s.MAbs[i], s.VAbs[i] = 1, 1
	}
	return s
}

// Update runs the fused kernel, blocks split over threads in large tensors.
func (s *Int8Moments) Update(p, g []float32, h Hyper) {
	b := s.k.Block
	run := func(lo, hi int) { // block range
		e0, e1 := lo*b, min(hi*b, len(p))
		kernels.AdamW8(p[e0:e1], g[e0:e1], s.M[e0:e1], s.V[e0:e1], s.MAbs[lo:hi], s.VAbs[lo:hi], s.k,
			h.LR, h.Beta1, h.Beta2, h.Eps, h.WeightDecay, h.BC1, h.BC2)
	}
	splitUpdate(len(s.MAbs), max(1, (1<<15)/b), run)
}

// Bytes is 2 per value and 8 per block.
func (s *Int8Moments) Bytes() int { return len(s.M) + len(s.V) + 4*len(s.MAbs) + 4*len(s.VAbs) }

// Tensors names the codes m.NAME and v.NAME (U8) and the block maxima
// m_absmax.NAME and v_absmax.NAME (F32).
func (s *Int8Moments) Tensors(name string) []safetensors.Tensor {
	return []safetensors.Tensor{
		{Name: "m." + name, DType: "U8", Shape: []int{len(s.M)}, Data: append([]byte(nil), s.M...)},
		safetensors.FromF32("m_absmax."+name, []int{len(s.MAbs)}, s.MAbs),
		{Name: "v." + name, DType: "U8", Shape: []int{len(s.V)}, Data: append([]byte(nil), s.V...)},
		safetensors.FromF32("v_absmax."+name, []int{len(s.VAbs)}, s.VAbs),
	}
}

// Load reads what Tensors wrote.
func (s *Int8Moments) Load(name string, f *safetensors.File) error {
	for _, x := range []struct {
		key string
		dst []uint8
	}{{"m." + name, s.M}, {"v." + name, s.V}} {
		if err := loadBytes(f, x.key, "U8", x.dst); err != nil {
			return err
		}
	}
	for _, x := range []struct {
		key string
		dst []float32
	}{{"m_absmax." + name, s.MAbs}, {"v_absmax." + name, s.VAbs}} {
		if err := loadF32(f, x.key, x.dst, finiteNonNeg); err != nil {
			return err
		}
	}
	return nil
}

func loadBytes(f *safetensors.File, key, dtype string, dst []uint8) error {
	t, ok := f.Get(key)
	if !ok {
		return fmt.Errorf("optimizer state %s missing (saved with another optimizer.state?)", key)
	}
	if t.DType != dtype || len(t.Data) != len(dst) {
		return fmt.Errorf("optimizer state %s: %s with %d bytes, want %s with %d", key, t.DType, len(t.Data), dtype, len(dst))
	}
	copy(dst, t.Data)
	return nil
}

// loadF32 reads key into dst: F32 with len(dst) values, each of which
// must pass ok (checked before dst is written).
func loadF32(f *safetensors.File, key string, dst []float32, ok func(float32) bool) error {
	t, found := f.Get(key)
	if !found {
		return fmt.Errorf("optimizer state %s missing (saved with another optimizer.state?)", key)
	}
	if t.DType != "F32" || len(t.Data) != 4*len(dst) {
		return fmt.Errorf("optimizer state %s: %s with %d bytes, want F32 with %d values", key, t.DType, len(t.Data), len(dst))
	}
	v, err := t.F32()
	if err != nil {
		return fmt.Errorf("optimizer state %s: %w", key, err)
	}
	for i, x := range v {
		if !ok(x) {
			return fmt.Errorf("optimizer state %s: value %g at %d is out of range", key, x, i)
		}
	}
	copy(dst, v)
	return nil
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

func finiteNonNeg(x float32) bool { return finite(x) && x >= 0 }
