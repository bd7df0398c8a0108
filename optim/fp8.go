package optim

import (
	"encoding/binary"
	"fmt"

	"qat/data/safetensors"
	"qat/kernels"
)

// FP8Moments keeps AdamW's moments as E4M3 bytes under COAT's dynamic
// range expansion (arXiv 2410.19313): per group of values, each moment
// stores its range (max and min nonzero magnitude, bfloat16, 4 bytes),
// from which the expansion x -> sign(x)|x/c|^k that fills E4M3's range is
// derived when writing and reading.
type FP8Moments struct {
	M, V   []uint8
	MR, VR []uint16 // hi, lo per group
	Group  int
}

// DefaultGroupFP8 is COAT's group size.
const DefaultGroupFP8 = kernels.DefaultDREGroup

// NewFP8Moments returns zeroed moments for n values in groups of group.
func NewFP8Moments(n, group int) *FP8Moments {
	nb := kernels.Blocks(n, group)
	return &FP8Moments{M: make([]uint8, n), V: make([]uint8, n), MR: make([]uint16, 2*nb), VR: make([]uint16, 2*nb), Group: group}
}

// Update runs the fused kernel, groups split over threads in large tensors.
func (s *FP8Moments) Update(p, g []float32, h Hyper) {
	b := s.Group
	run := func(lo, hi int) {
		e0, e1 := lo*b, min(hi*b, len(p))
		kernels.AdamWFP8(p[e0:e1], g[e0:e1], s.M[e0:e1], s.V[e0:e1], s.MR[2*lo:2*hi], s.VR[2*lo:2*hi], b,
			h.LR, h.Beta1, h.Beta2, h.Eps, h.WeightDecay, h.BC1, h.BC2)
	}
	splitUpdate(len(s.MR)/2, max(1, (1<<14)/b), run)
}

// Bytes is 2 per value and 8 per group.
func (s *FP8Moments) Bytes() int { return len(s.M) + len(s.V) + 2*len(s.MR) + 2*len(s.VR) }

// Tensors names the codes m.NAME and v.NAME (F8_E4M3) and the ranges
// m_range.NAME and v_range.NAME (BF16, hi and lo per group).
func (s *FP8Moments) Tensors(name string) []safetensors.Tensor {
	u16 := func(x []uint16) []byte {
		b := make([]byte, 2*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint16(b[2*i:], v)
		}
		return b
	}
	return []safetensors.Tensor{
		{Name: "m." + name, DType: "F8_E4M3", Shape: []int{len(s.M)}, Data: append([]byte(nil), s.M...)},
		{Name: "m_range." + name, DType: "BF16", Shape: []int{len(s.MR) / 2, 2}, Data: u16(s.MR)},
		{Name: "v." + name, DType: "F8_E4M3", Shape: []int{len(s.V)}, Data: append([]byte(nil), s.V...)},
		{Name: "v_range." + name, DType: "BF16", Shape: []int{len(s.VR) / 2, 2}, Data: u16(s.VR)},
	}
}

// Load reads what Tensors wrote.
func (s *FP8Moments) Load(name string, f *safetensors.File) error {
	if err := loadBytes(f, "m."+name, "F8_E4M3", s.M); err != nil {
		return err
	}
	if err := loadBytes(f, "v."+name, "F8_E4M3", s.V); err != nil {
		return err
	}
	for _, x := range []struct {
		key string
		dst []uint16
	}{{"m_range." + name, s.MR}, {"v_range." + name, s.VR}} {
		b := make([]byte, 2*len(x.dst))
		if err := loadBytes(f, x.key, "BF16", b); err != nil {
			return fmt.Errorf("%w (group size changed?)", err)
		}
		for i := range x.dst {
			// a magnitude: a non-negative finite bfloat16
			if h := binary.LittleEndian.Uint16(b[2*i:]); h >= 0x7F80 {
				return fmt.Errorf("optimizer state %s: bfloat16 bits %#04x at %d are not a finite non-negative range", x.key, h, i)
			}
		}
		for i := range x.dst {
			x.dst[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
	}
	return nil
}
