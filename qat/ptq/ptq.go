// Package ptq is the post-training quantization pipeline that `qat ptq`
// and a QAT run's quant.init share: attach quantizers to a model, then
// round its weights by one of the methods (round to nearest; GPTQ, arXiv
// 2210.17323; QQQ's smoothing then GPTQ, arXiv 2406.09904; GWQ's
// gradient-located fp16 outliers, arXiv 2411.00850) and set activation
// steps, all from calibration batches described by one Calibration.
package ptq

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"qat/autograd"
	"qat/data"
	"qat/layers"
	"qat/qat"
	"qat/qat/rotate"
)

// Calibration is where statistics come from: Batches batches of Batch
// windows of Seq tokens of Data, drawn with a seed of their own (derived
// from Seed) so that a training run's batches stay those of its seed.
type Calibration struct {
	Data                *data.Dataset
	Batch, Seq, Batches int
	Seed                uint64
	// Progress gets a bar (a terminal) or a line per decoder block (GPTQ);
	// nil is silent.
	Progress io.Writer
}

// The methods.
const (
	RTN  = "rtn"
	GPTQ = "gptq"
	QQQ  = "qqq"
	GWQ  = "gwq"
)

// Methods lists the method names, for messages.
const Methods = "rtn, gptq, qqq or gwq"

// Options choose the method and its settings.
type Options struct {
	Method string
	// GWQBase is how GWQ rounds the rest: RTN or GPTQ.
	GWQBase string
	GPTQ    qat.GPTQConfig
	// KeepInputs keeps the model's trained input quantizers (learned clip
	// values or steps, as a checkpoint trained with them has) instead of
	// the rules' activations: the weights are quantized, the inputs stay
	// as trained (arXiv 2404.03605's PTQ of the weights after QAT of the
	// activations).
	KeepInputs bool
	// Rotate, when "hadamard", rotates the full-precision model first
	// (rotate.Hadamard, signs from RotateSeed), so every method quantizes
	// the rotated weights and calibrates on the rotated activations.
	Rotate     string
	RotateSeed uint64
}

// Hadamard is Options.Rotate's one rotation.
const Hadamard = "hadamard"

// Report is what Quantize did.
type Report struct {
	Smoothed  int // QQQ: linear groups whose input was smoothed
	Quantized int // GPTQ: linear layers rounded column by column
	Outliers  int // GWQ: linear layers that keep fp16 outliers
	Kept      int // GWQ: weights kept in fp16
	Inputs    int // KeepInputs: trained input quantizers kept
	// Rotation is what Options.Rotate did, nil when it was not asked.
	Rotation *rotate.Report
}

// Quantize attaches rules to m (qat.Prepare) and rounds its weights by the
// method; activation steps that need calibration are set first where the
// method's own statistics need the quantized model (call Calibrate again
// after, on the final weights). Quantizers m already has (a QAT
// checkpoint's) are removed first, or with o.KeepInputs its trained input
// quantizers are kept. With o.Rotate the full-precision model is rotated
// after its own quantizers are removed and before anything else (a
// rotated model cannot be smoothed by QQQ). It returns the rules to save with the result:
// GPTQ's scales become fixed steps; kept inputs are named layer by layer.
func Quantize(m *layers.Model, rules []qat.Rule, o Options, c Calibration) ([]qat.Rule, Report, error) {
	var rep Report
	var kept map[string]*qat.Quantizer
	switch {
	case o.Rotate != "" && o.Rotate != Hadamard:
		return nil, rep, fmt.Errorf("rotate %q: want %s", o.Rotate, Hadamard)
	case o.Rotate != "" && o.KeepInputs:
		// the kept quantizers were trained on the unrotated inputs
		return nil, rep, fmt.Errorf("keep inputs: the trained input quantizers saw the unrotated inputs; a rotation changes them")
	case o.Method == QQQ && (o.Rotate != "" || m.DownHadamard != ""):
		// smoothing folds down_proj's input scales into up_proj's rows,
		// and the online transform between them mixes those channels
		return nil, rep, fmt.Errorf("qqq: its smoothing of down_proj's input folds into up_proj, which a rotated model's online Hadamard transform separates from it: use rtn or gptq")
	}
	if o.KeepInputs {
		if o.Method == QQQ {
			// smoothing rescales the inputs the kept quantizers were
			// trained on
			return nil, rep, fmt.Errorf("keep inputs: qqq smooths the inputs, which the trained input quantizers were not trained on")
		}
		if kept = qat.TrainedInputs(m); len(kept) == 0 {
			return nil, rep, fmt.Errorf("keep inputs: the model has no trained input quantizers (learned clip values or steps)")
		}
	}
	qat.Detach(m)
	if o.Rotate != "" {
		r, err := rotate.Hadamard(m, o.RotateSeed, c.Progress)
		if err != nil {
			return nil, rep, fmt.Errorf("rotate: %w", err)
		}
		rep.Rotation = &r
	}
	var grads map[*autograd.Var][]float32
	if o.Method == GWQ {
		// saliency: |dL/dW| of the full-precision model's loss
		var err error
		if grads, err = LossGradients(m, c); err != nil {
			return nil, rep, err
		}
	}
	if err := qat.Prepare(m, rules); err != nil {
		return nil, rep, err
	}
	if o.Method == GWQ {
		rep.Outliers, rep.Kept = qat.SelectByGradient(m, grads)
		if rep.Outliers == 0 {
			return nil, rep, fmt.Errorf("gwq: no linear has an int weight quantizer")
		}
	}
	if kept != nil {
		// before GPTQ: its statistics come from the inputs as trained
		var err error
		if rep.Inputs, err = qat.KeepInputs(m, kept); err != nil {
			return nil, rep, err
		}
	}
	if o.Method == GPTQ || o.Method == QQQ || (o.Method == GWQ && o.GWQBase == GPTQ) {
		var err error
		if rep.Smoothed, rep.Quantized, err = PostTrain(m, o.Method == QQQ, o.GPTQ, c); err != nil {
			return nil, rep, err
		}
		if rep.Quantized == 0 {
			return nil, rep, fmt.Errorf("%s: no linear has a symmetric int weight quantizer per channel or group", o.Method)
		}
		// the quantized layers keep GPTQ's scales as fixed steps
		rules = qat.FixedWeightSteps(rules)
	}
	if kept != nil {
		var err error
		if rules, err = qat.KeptRules(m, rules, kept); err != nil {
			return nil, rep, err
		}
	}
	return rules, rep, nil
}

// Calibrate sets the steps of m's activation quantizers with mse or lsq
// scales (qat.Calibrate) and returns how many it set.
func Calibrate(m *layers.Model, c Calibration) (int, error) {
	return qat.Calibrate(m, c.forward(m))
}

// PostTrain runs GPTQ on m's symmetric int weight quantizers, after QQQ's
// smoothing when smooth is set. Activation steps are calibrated first
// where they need it, so the statistics come from the quantized model. It
// returns the groups smoothed and the layers quantized.
func PostTrain(m *layers.Model, smooth bool, g qat.GPTQConfig, c Calibration) (smoothed, quantized int, err error) {
	if qat.NeedsCalibration(m) {
		if _, err := Calibrate(m, c); err != nil {
			return 0, 0, err
		}
	}
	if smooth {
		if smoothed, err = qat.Smooth(m, qat.DefaultSmooth, c.forward(m)); err != nil {
			return 0, 0, err
		}
	}
	total := len(m.Layers)
	if m.Head != nil {
		total++
	}
	bar := blockProgress(c.Progress, "gptq", total)
	quantized, err = qat.ApplyGPTQ(m, g, c.forward(m), func(block int) { bar(block + 1) })
	return smoothed, quantized, err
}

// LossGradients accumulates the gradients of the language-model loss over
// the calibration batches into m's parameters and returns a copy of each
// linear's weight gradient (GWQ's saliency; Prepare may replace what holds
// them).
func LossGradients(m *layers.Model, c Calibration) (map[*autograd.Var][]float32, error) {
	l, err := data.NewLoader(c.Data, c.Batch, c.Seq, c.Seed^0x6a7)
	if err != nil {
		return nil, err
	}
	var vars []*autograd.Var
	for _, p := range m.Params() {
		vars = append(vars, p.Var)
	}
	autograd.ZeroGrad(vars...)
	ids, tg := make([]int32, c.Batch*c.Seq), make([]int32, c.Batch*c.Seq)
	tp := autograd.NewTape()
	for b := 0; b < c.Batches; b++ {
		l.Next(ids, tg)
		tp.Backward(m.Loss(tp, ids, tg, c.Batch, c.Seq))
		tp.Reset()
	}
	grads := map[*autograd.Var][]float32{}
	for _, nl := range m.Linears() {
		grads[nl.Linear.Weight] = append([]float32(nil), nl.Linear.Weight.GradData()...)
	}
	return grads, nil
}

// forward returns forward passes over the same calibration batches at
// every call (GPTQ and smoothing collect statistics block by block).
func (c Calibration) forward(m *layers.Model) func() error {
	ids, tg := make([]int32, c.Batch*c.Seq), make([]int32, c.Batch*c.Seq)
	return func() error {
		l, err := data.NewLoader(c.Data, c.Batch, c.Seq, c.Seed^0xca11b)
		if err != nil {
			return err
		}
		tp := autograd.NewTape()
		tp.SetNoGrad(true)
		for b := 0; b < c.Batches; b++ {
			l.Next(ids, tg)
			m.Forward(tp, ids, c.Batch, c.Seq)
			tp.Reset()
		}
		return nil
	}
}

// blockProgress draws a bar with ETA over n blocks when w is a terminal,
// else prints a line per block; nil w is silent.
func blockProgress(w io.Writer, what string, n int) func(done int) {
	if w == nil {
		return func(int) {}
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.NewOptions(n, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionSetDescription(what+" blocks"),
			progressbar.OptionSetWidth(30), progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
		return func(done int) { bar.Set(done) }
	}
	t0 := time.Now()
	return func(done int) {
		el := time.Since(t0)
		eta := time.Duration(float64(el) / float64(done) * float64(n-done))
		fmt.Fprintf(w, "%s: block %d/%d  elapsed %s  ETA %s\n", what, done, n, el.Round(time.Second), eta.Round(time.Second))
	}
}
