// Package qat holds quantization-aware training: quantizer specifications,
// fake-quant ops on the autograd tape (straight-through estimator, LSQ
// learned steps, llama.cpp's Q4_0/Q8_0 grids, FP8/FP4), and the rules that
// attach quantizers to a model's linear layers.
package qat

import (
	"encoding/json"
	"fmt"
	"math"

	"qat/kernels"
)

// Spec describes one quantizer; configs, checkpoints and export read it.
type Spec struct {
	// Format: int, q4_0, q8_0 (llama.cpp's block grids), fp8_e4m3,
	// fp8_e5m2, fp4_e2m1: an entry of kernels.Formats, spelled by name in
	// configs and quant.json (parsed once, when they are read).
	Format kernels.FormatID `yaml:"format" json:"format"`
	// Bits of an int format, 2 to 8.
	Bits int `yaml:"bits" json:"bits,omitempty"`
	// Symmetric: zero point 0 and a signed grid; else an unsigned grid
	// with an integer zero point (int only).
	Symmetric bool `yaml:"symmetric" json:"symmetric"`
	// Granularity: tensor, channel (a weight row), group (GroupSize
	// values along a row), token (an activation row, dynamic).
	Granularity string `yaml:"granularity" json:"granularity"`
	GroupSize   int    `yaml:"group_size" json:"group_size,omitempty"`
	// Scale: minmax (from the range, recomputed every forward, no
	// gradient); mse (fixed steps from a search over clipping ratios that
	// minimises the squared error, on the weight at Prepare or on
	// calibration batches for activations; int only); lsq (a learned
	// step per group, LSQ; asymmetric adds LSQ+'s learned offset); clip
	// (two learned clip values lo < hi per layer input, arXiv 2404.03605:
	// int, asymmetric, granularity tensor, activations only; clip.go).
	// Activations with fixed or learned steps (mse, lsq, clip) use
	// granularity tensor: one step for every token.
	Scale string `yaml:"scale" json:"scale"`
	// Restricted: a symmetric int grid without its most negative value,
	// [-(2^(b-1)-1), 2^(b-1)-1], so s = amax/(2^(b-1)-1) (QQQ's
	// per-channel W4: [-7, 7]).
	Restricted bool `yaml:"restricted" json:"restricted,omitempty"`
	// Outliers: the fraction of a weight's values kept in fp16 beside the
	// quantized rest (GWQ; 0.01 in the paper), chosen by magnitude until
	// qat ptq --method gwq chooses them by loss gradient. Weights only.
	Outliers float64 `yaml:"outliers" json:"outliers,omitempty"`
	// TwoLevel: QQQ's per-group W4 folded into int8 per channel for an
	// int8 GEMM (TwoLevel); symmetric int groups, weights only.
	TwoLevel bool `yaml:"two_level" json:"two_level,omitempty"`
	// unknown is a format name decoding did not know, kept for Validate,
	// which reports it under the spec's path (and so the config's line:
	// decoders place no errors of custom types).
	unknown string
}

// specFile is Spec as files spell it: the format by name.
type specFile struct {
	Format      string  `yaml:"format" json:"format"`
	Bits        int     `yaml:"bits" json:"bits,omitempty"`
	Symmetric   bool    `yaml:"symmetric" json:"symmetric"`
	Granularity string  `yaml:"granularity" json:"granularity"`
	GroupSize   int     `yaml:"group_size" json:"group_size,omitempty"`
	Scale       string  `yaml:"scale" json:"scale"`
	Restricted  bool    `yaml:"restricted" json:"restricted,omitempty"`
	Outliers    float64 `yaml:"outliers" json:"outliers,omitempty"`
	TwoLevel    bool    `yaml:"two_level" json:"two_level,omitempty"`
}

// fromFile parses f's format name once; an unknown one is left for
// Validate.
func (s *Spec) fromFile(f specFile) {
	*s = Spec{Bits: f.Bits, Symmetric: f.Symmetric, Granularity: f.Granularity, GroupSize: f.GroupSize, Scale: f.Scale,
		Restricted: f.Restricted, Outliers: f.Outliers, TwoLevel: f.TwoLevel}
	if err := s.Format.UnmarshalText([]byte(f.Format)); err != nil {
		s.unknown = f.Format
	}
}

// UnmarshalYAML decodes a spec from YAML (goccy/go-yaml's
// InterfaceUnmarshaler: strict decoding and its error positions apply).
func (s *Spec) UnmarshalYAML(unmarshal func(any) error) error {
	var f specFile
	if err := unmarshal(&f); err != nil {
		return err
	}
	s.fromFile(f)
	return nil
}

// UnmarshalJSON decodes a spec from JSON (quant.json).
func (s *Spec) UnmarshalJSON(b []byte) error {
	var f specFile
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	s.fromFile(f)
	return nil
}

// Validate checks the spec on its own; path names it in messages.
func (s Spec) Validate(path string) error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%s.%s: %s", path, field, fmt.Sprintf(format, a...))
	}
	switch s.Format {
	case kernels.Int:
		if s.Bits < 2 || s.Bits > 8 {
			return bad("bits", "%d, must be 2 to 8", s.Bits)
		}
	case kernels.Q4_0, kernels.Q8_0:
		if b := s.block(); s.Granularity != "group" || s.GroupSize != b || !s.Symmetric {
			return bad("format", "%s is llama.cpp's grid: symmetric, granularity group, group_size %d", s.Format, b)
		}
	case kernels.FP8E4M3, kernels.FP8E5M2, kernels.FP4E2M1:
		if !s.Symmetric {
			return bad("symmetric", "false, but %s has no zero point", s.Format)
		}
	default:
		name := s.Format.String()
		if s.unknown != "" {
			name = s.unknown
		}
		return bad("format", "%q, want int, q4_0, q8_0, fp8_e4m3, fp8_e5m2 or fp4_e2m1", name)
	}
	if s.Outliers < 0 || s.Outliers >= 0.5 || math.IsNaN(s.Outliers) {
		return bad("outliers", "%g, must be in [0, 0.5)", s.Outliers)
	}
	if s.Outliers > 0 && s.Format != kernels.Int {
		return bad("outliers", "%g needs an int format", s.Outliers)
	}
	if s.TwoLevel && (s.Format != kernels.Int || !s.Symmetric || s.Granularity != "group" || s.Bits > 7 || s.Outliers > 0) {
		return bad("two_level", "true needs symmetric int groups of at most 7 bits, without outliers")
	}
	if s.Restricted && (s.Format != kernels.Int || !s.Symmetric) {
		return bad("restricted", "true needs a symmetric int format")
	}
	switch s.Granularity {
	case "tensor", "channel", "token":
	case "group":
		if s.GroupSize < 1 {
			return bad("group_size", "%d, must be positive", s.GroupSize)
		}
	default:
		return bad("granularity", "%q, want tensor, channel, group or token", s.Granularity)
	}
	switch s.Scale {
	case "minmax":
	case "lsq", "mse":
		if s.Format != kernels.Int {
			return bad("scale", "%s needs an int format (%s has its own grid)", s.Scale, s.Format)
		}
		if s.Granularity == "token" {
			return bad("scale", "%s steps are fixed; per-token scales are dynamic (use minmax)", s.Scale)
		}
	case "clip":
		switch {
		case s.Format != kernels.Int:
			return bad("scale", "clip needs an int format (%s has its own grid)", s.Format)
		case s.Symmetric:
			return bad("symmetric", "true, but clip learns both ends of the range (symmetric: false)")
		case s.Restricted:
			return bad("restricted", "true, but clip's grid is its own 2^bits levels between the clip values")
		case s.Granularity != "tensor":
			return bad("granularity", "%q, but clip learns one pair of clip values per tensor (granularity: tensor)", s.Granularity)
		}
	default:
		return bad("scale", "%q, want minmax, mse, lsq or clip", s.Scale)
	}
	return nil
}

// Group returns the number of consecutive values that share a scale in a
// tensor whose rows have `row` values and `n` values in all, or an error
// when the group size does not divide the row.
func (s Spec) Group(row, n int) (int, error) {
	switch s.Granularity {
	case "tensor":
		return n, nil
	case "channel", "token":
		return row, nil
	}
	if row%s.GroupSize != 0 {
		return 0, fmt.Errorf("group_size %d does not divide the row of %d", s.GroupSize, row)
	}
	return s.GroupSize, nil
}

// Grid returns the integer range of an int spec: signed [-2^(b-1),
// 2^(b-1)-1] when symmetric ([-(2^(b-1)-1), 2^(b-1)-1] restricted), else
// unsigned [0, 2^b-1].
func (s Spec) Grid() (qmin, qmax float32) {
	if s.Symmetric && s.Restricted {
		return -float32(int(1)<<(s.Bits-1)) + 1, float32(int(1)<<(s.Bits-1)) - 1
	}
	if s.Symmetric {
		return -float32(int(1) << (s.Bits - 1)), float32(int(1)<<(s.Bits-1)) - 1
	}
	return 0, float32(int(1)<<s.Bits) - 1
}

// block is the block size of a llama.cpp grid (Q4_0, Q8_0: their own
// scale per block, the grid's rule), 0 for the other formats.
func (s Spec) block() int {
	if b := kernels.Formats[s.Format].BlockElems; b > 1 {
		return b
	}
	return 0
}

// eps keeps scales positive on all-zero groups.
const eps = 1.1920929e-07

// dynamicScales computes each group's scale (and zero point) from its
// range, as torchao does: symmetric s = amax/((qmax-qmin)/2); asymmetric
// s = (hi-lo)/(qmax-qmin) over a range that contains 0, z = qmin - rne(lo/s);
// FP s = amax/Max.
func (s Spec) dynamicScales(scale, zero, x []float32, group int) {
	switch {
	case s.Format == kernels.Int && !s.Symmetric:
		lo, hi := zero, scale // reuse the buffers: ranges first
		kernels.MinMaxGroups(lo, hi, x, group)
		qmin, qmax := s.Grid()
		for k := range x[:len(x)/group] {
			l, h := min(lo[k], 0), max(hi[k], 0)
			sc := max((h-l)/(qmax-qmin), eps)
			z := qmin - float32(math.RoundToEven(float64(l/sc)))
			scale[k], zero[k] = sc, min(max(z, qmin), qmax)
		}
	case s.Format == kernels.Int:
		kernels.AbsMaxGroups(scale, x, group)
		qmin, qmax := s.Grid()
		for k := range scale[:len(x)/group] {
			scale[k] = max(scale[k]/((qmax-qmin)/2), eps)
			zero[k] = 0
		}
	default:
		kernels.AbsMaxGroups(scale, x, group)
		fmax := s.Format.FP().Max
		for k := range scale[:len(x)/group] {
			scale[k] = max(scale[k]/fmax, 1e-12)
		}
	}
}
