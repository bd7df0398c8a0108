package ptq

import (
	"math"
	"strings"
	"testing"

	"qat/autograd"
	"qat/layers"
	"qat/qat"
)

// TestQuantizeRotated: Options.Rotate rotates a QAT checkpoint's
// full-precision weights after its quantizers are removed and before the
// method runs: RTN and GPTQ quantize the rotated model (untied, with the
// online transform), whose full-precision logits were the original's;
// a second rotation, QQQ on a rotated model and kept inputs with a
// rotation are refused.
func TestQuantizeRotated(t *testing.T) {
	for _, method := range []string{RTN, GPTQ} {
		m, _ := trained(t)
		ids := make([]int32, 2*cfg.MaxSeq)
		for i := range ids {
			ids[i] = int32(i*7) % int32(cfg.Vocab)
		}
		logits := func(m *layers.Model) []float32 {
			tp := autograd.NewTape()
			tp.SetNoGrad(true)
			return append([]float32(nil), m.Forward(tp, ids, 2, cfg.MaxSeq).Data()...)
		}
		qat.Detach(m)
		fp := logits(m)
		m, _ = trained(t)
		_, rep, err := Quantize(m, qat.Presets["w4a8"], Options{Method: method, GPTQ: qat.DefaultGPTQ, Rotate: Hadamard, RotateSeed: 3}, calibration())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Rotation == nil || m.DownHadamard != layers.DownFull || m.Layers[0].MLP.Online == nil {
			t.Fatalf("%s: report %+v, down_hadamard %q: not rotated", method, rep.Rotation, m.DownHadamard)
		}
		if method == GPTQ && rep.Quantized != 7*cfg.Layers {
			t.Errorf("gptq quantized %d linears", rep.Quantized)
		}
		// the rotated weights under the quantizers: without them the
		// logits are the original model's
		qat.Detach(m)
		var d, top float64
		for i, v := range logits(m) {
			d = math.Max(d, math.Abs(float64(v-fp[i])))
			top = math.Max(top, math.Abs(float64(fp[i])))
		}
		if method == RTN && d > 1e-5*top {
			t.Errorf("rtn: the rotated full-precision logits differ by %.3g of the largest", d/top)
		}
		if _, _, err := Quantize(m, qat.Presets["w4a8"], Options{Method: RTN, Rotate: Hadamard}, calibration()); err == nil || !strings.Contains(err.Error(), "rotated already") {
			t.Errorf("a second rotation: %v", err)
		}
		if _, _, err := Quantize(m, qat.Presets["w4a8-qqq"], Options{Method: QQQ, GPTQ: qat.DefaultGPTQ}, calibration()); err == nil || !strings.Contains(err.Error(), "qqq") {
			t.Errorf("qqq on a rotated model: %v", err)
		}
	}
	m, _ := trained(t)
	if _, _, err := Quantize(m, qat.Presets["w4a4"], Options{Method: RTN, KeepInputs: true, Rotate: Hadamard}, calibration()); err == nil {
		t.Error("kept inputs with a rotation: no error")
	}
}
