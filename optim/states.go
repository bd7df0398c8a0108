package optim

import (
	"fmt"
	"path"

	"qat/kernels"
)

// States selects how AdamW stores its moments: Kind fp32, int8 (block-wise
// dynamic map) or fp8 (COAT's E4M3 with dynamic range expansion), Block
// the values per absmax block (int8) or per expansion group (fp8), and
// which tensors keep fp32 moments anyway: those with fewer than MinSize
// values (bitsandbytes' min_8bit_size: norms, quantizer steps) and those
// whose name matches a glob of FP32Match (embeddings, as bitsandbytes'
// StableEmbedding does).
type States struct {
	Kind      string   `yaml:"state" json:"state"`
	Block     int      `yaml:"block" json:"block"`
	MinSize   int      `yaml:"min_8bit_size" json:"min_8bit_size"`
	FP32Match []string `yaml:"fp32_states" json:"fp32_states"`
}

// DefaultStates keeps fp32 moments.
var DefaultStates = States{Kind: "fp32", MinSize: 4096}

// Validate checks the fields; path prefixes the field names in messages.
func (s States) Validate(prefix string) error {
	switch s.Kind {
	case "fp32", "int8", "fp8":
	default:
		return fmt.Errorf("%s.state: %q, want fp32, int8 or fp8", prefix, s.Kind)
	}
	if s.Block < 0 || s.Block > kernels.MaxBlock8 {
		return fmt.Errorf("%s.block: %d, must be 1 to %d (0: the kind's default)", prefix, s.Block, kernels.MaxBlock8)
	}
	if s.MinSize < 0 {
		return fmt.Errorf("%s.min_8bit_size: %d, must not be negative", prefix, s.MinSize)
	}
	for i, g := range s.FP32Match {
		if _, err := path.Match(g, "x"); err != nil {
			return fmt.Errorf("%s.fp32_states[%d]: %q: %v", prefix, i, g, err)
		}
	}
	return nil
}

// Factory returns the moments maker NewAdamW takes.
func (s States) Factory() func(p Param) Moments {
	return func(p Param) Moments {
		n := p.Var.Size()
		keep := s.Kind == "fp32" || n < s.MinSize
		for _, g := range s.FP32Match {
			if ok, _ := path.Match(g, p.Name); ok {
				keep = true
			}
		}
		switch {
		case keep:
			return NewFP32Moments(n)
		case s.Kind == "int8":
			return NewInt8Moments(n, orDefault(s.Block, DefaultBlock8))
		default:
			return NewFP8Moments(n, orDefault(s.Block, DefaultGroupFP8))
		}
	}
}

// orDefault returns v, or def when v is 0.
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// splitUpdate runs run over [0, n) items (values, blocks or groups), in
// chunks of at least grain on the threads set by kernels.SetThreads. It
// goes through kernels.ForBLAS rather than For: For keeps element-wise
// work on the calling goroutine whenever OpenBLAS runs its own threads
// (their idle spinning after an sgemm would fight a second goroutine),
// which would leave the 8-bit updates, bound by arithmetic rather than
// memory, on one core; ForBLAS holds OpenBLAS to one thread while the
// update runs. The chunks are disjoint and each value's arithmetic does
// not depend on the split, so the result is the same on any number of
// threads.
func splitUpdate(n, grain int, run func(lo, hi int)) {
	if kernels.Chunks(n, grain) <= 1 {
		run(0, n)
		return
	}
	kernels.ForBLAS(n, grain, func(_, lo, hi int) { run(lo, hi) })
}
