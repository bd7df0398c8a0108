package qat

import (
	"fmt"

	"qat/layers"
)

// sampleCap bounds the values a quantizer keeps while calibrating: a
// uniform sample (reservoir) of its inputs is enough for an MSE search over
// 80 clipping ratios, and keeps memory flat whatever the number of batches.
const sampleCap = 1 << 18

// calibration accumulates what a quantizer's steps are set from: the
// range and mean |x| of every value seen, and a uniform sample of them.
type calibration struct {
	lo, hi float32
	sumAbs float64
	n      int64
	sample []float32
	rng    uint64
}

func (c *calibration) record(x []float32) {
	for _, v := range x {
		if c.n == 0 {
			c.lo, c.hi = v, v
		}
		c.lo, c.hi = min(c.lo, v), max(c.hi, v)
		if v < 0 {
			c.sumAbs -= float64(v)
		} else {
			c.sumAbs += float64(v)
		}
		c.n++
		if len(c.sample) < sampleCap {
			c.sample = append(c.sample, v)
			continue
		}
		// Algorithm R: keep v with probability cap/n.
		c.rng ^= c.rng << 13
		c.rng ^= c.rng >> 7
		c.rng ^= c.rng << 17
		if j := c.rng % uint64(c.n); j < sampleCap {
			c.sample[j] = v
		}
	}
}

// activationQuantizers lists the quantizers of m whose steps come from
// data: activation quantizers with mse, lsq or clip scales, except those
// whose trained state a post-training quantization keeps (KeepInputs).
func activationQuantizers(m *layers.Model) []*Quantizer {
	var out []*Quantizer
	add := func(q layers.Quantizer) {
		if qq, ok := q.(*Quantizer); ok && qq.Activation && qq.Fixed() && !qq.kept {
			out = append(out, qq)
		}
	}
	for _, ln := range m.Linears() {
		add(ln.Linear.InputQuant)
	}
	for _, L := range m.Layers {
		add(L.Attn.KQuant)
		add(L.Attn.VQuant)
	}
	return out
}

// NeedsCalibration reports whether m has activation quantizers whose steps
// Calibrate must set before the model runs.
func NeedsCalibration(m *layers.Model) bool { return len(activationQuantizers(m)) > 0 }

// Calibrate sets the steps of m's data-calibrated activation quantizers
// (mse: the MSE search; lsq: LSQ's mean-|x| or LSQ+'s min/max init; clip:
// the clip values at the min and max) from
// the inputs they see while run makes forward passes. While it runs those
// quantizers pass values through unchanged, so each sees the inputs of the
// model quantized up to it but not by itself. It returns the number of
// quantizers set; run must feed at least one value to each.
func Calibrate(m *layers.Model, run func() error) (int, error) {
	qs := activationQuantizers(m)
	for i, q := range qs {
		q.cal = &calibration{rng: uint64(i)*0x9E3779B97F4A7C15 + 1}
	}
	defer func() {
		for _, q := range qs {
			q.cal = nil
		}
	}()
	if err := run(); err != nil {
		return 0, err
	}
	for _, q := range qs {
		c := q.cal
		if c.n == 0 {
			return 0, fmt.Errorf("qat: calibration fed no values to an activation quantizer")
		}
		if q.Scale == "clip" {
			q.initClip(c.lo, c.hi)
			continue
		}
		// Activations with steps have granularity tensor: one step.
		q.initGroup(0, c.sample, c.lo, c.hi, c.sumAbs/float64(c.n))
	}
	return len(qs), nil
}
