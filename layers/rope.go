package layers

import (
	"fmt"
	"math"

	"qat/autograd"
)

// RopeFreqs returns RoPE's inverse frequencies for c, one per pair of a
// head's dimensions: theta^(-2j/head_dim), rescaled by c.RopeScaling.
//
// Plain RoPE keeps them in float64 (the table rounds once, as it always
// has). Llama 3's scaling follows transformers' _compute_llama3_parameters
// step by step in float32, the precision it computes in (its inv_freq is a
// float32 tensor and every comparison and blend below runs on it), so a
// frequency on the edge of a band lands in the band transformers puts it:
// wavelengths 2*pi/f longer than OriginalMax/LowFreqFactor are divided by
// Factor, shorter than OriginalMax/HighFreqFactor kept, and the band
// between blends the two by smooth = (OriginalMax/wavelength -
// LowFreqFactor) / (HighFreqFactor - LowFreqFactor).
func (c Config) RopeFreqs() []float64 {
	hd := c.HeadDim()
	out := make([]float64, hd/2)
	for j := range out {
		out[j] = math.Pow(c.RopeTheta, -float64(2*j)/float64(hd))
	}
	if c.RopeScaling.Type != "llama3" {
		return out
	}
	s := c.RopeScaling
	factor, low, high := float32(s.Factor), float32(s.LowFreqFactor), float32(s.HighFreqFactor)
	old := float32(s.OriginalMax)
	// Python divides the ints/floats of the config in float64, then torch
	// compares the float32 tensor with the result.
	lowWave := float32(float64(s.OriginalMax) / s.LowFreqFactor)
	highWave := float32(float64(s.OriginalMax) / s.HighFreqFactor)
	for j := range out {
		// 1.0 / (base ** (arange(0, dim, 2).float() / dim)), each step in float32
		e := float32(2*j) / float32(hd)
		f := 1 / float32(math.Pow(c.RopeTheta, float64(e)))
		// torch computes scalar / tensor as tensor.reciprocal() * scalar
		wave := (1 / f) * float32(2*math.Pi)
		llama := f
		if wave > lowWave {
			llama = f / factor
		}
		if !(wave < highWave) && !(wave > lowWave) {
			smooth := (float32((1/wave)*old) - low) / (high - low)
			// the conversions keep each product rounded on its own (no
			// fused multiply-add), as torch's elementwise ops are
			llama = float32((1-smooth)*llama/factor) + float32(smooth*llama)
		}
		out[j] = float64(llama)
	}
	return out
}

// RoPE returns the cos/sin table for c's positions and frequencies
// (RopeFreqs), computed in float64 from them and rounded once. The model
// and the engines build theirs here, so a scaled RoPE is the same
// everywhere.
func (c Config) RoPE() *autograd.RoPETable {
	hd := c.HeadDim()
	if c.RopeScaling.Type == "" {
		return autograd.NewRoPETable(hd, c.MaxSeq, c.RopeTheta)
	}
	freqs := c.RopeFreqs()
	h2 := hd / 2
	r := &autograd.RoPETable{HeadDim: hd, MaxPos: c.MaxSeq, Theta: c.RopeTheta,
		Cos: make([]float32, c.MaxSeq*h2), Sin: make([]float32, c.MaxSeq*h2)}
	for p := 0; p < c.MaxSeq; p++ {
		for j, f := range freqs {
			a := float64(p) * f
			r.Cos[p*h2+j] = float32(math.Cos(a))
			r.Sin[p*h2+j] = float32(math.Sin(a))
		}
	}
	return r
}

// validate checks rope_scaling as transformers'
// _validate_llama3_parameters does: a known type, factor >= 1,
// low_freq_factor < high_freq_factor (both positive), and an original
// context that is positive.
func (s RopeScaling) validate() error {
	switch s.Type {
	case "":
		if s != (RopeScaling{}) {
			return &FieldError{"rope_scaling.type", 0, "empty, with other rope_scaling fields set: want \"llama3\""}
		}
		return nil
	case "llama3":
	default:
		return &FieldError{"rope_scaling.type", 0, fmt.Sprintf("%q: only \"llama3\" is supported", s.Type)}
	}
	switch {
	case !(s.Factor >= 1) || math.IsInf(s.Factor, 0):
		return &FieldError{"rope_scaling.factor", 0, fmt.Sprintf("%g, must be >= 1", s.Factor)}
	case !(s.LowFreqFactor > 0) || math.IsInf(s.LowFreqFactor, 0):
		return &FieldError{"rope_scaling.low_freq_factor", 0, fmt.Sprintf("%g, must be positive", s.LowFreqFactor)}
	case !(s.HighFreqFactor > s.LowFreqFactor) || math.IsInf(s.HighFreqFactor, 0):
		return &FieldError{"rope_scaling.high_freq_factor", 0, fmt.Sprintf("%g, must be above low_freq_factor %g", s.HighFreqFactor, s.LowFreqFactor)}
	case s.OriginalMax <= 0:
		return &FieldError{"rope_scaling.original_max_position_embeddings", int64(s.OriginalMax), fmt.Sprintf("%d, must be positive", s.OriginalMax)}
	}
	return nil
}
