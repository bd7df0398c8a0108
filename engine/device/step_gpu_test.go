//go:build gpu

package device

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"qat/autograd"
	"qat/kernels/cuda"
	"qat/layers"
	"qat/optim"
)

// On a GPU: the device step against the tape (one step, every gradient),
// and 20 training steps of the tiny config on both whose loss curves agree
// within 1e-3.

var dev *cuda.Device

func TestMain(m *testing.M) {
	var err error
	if dev, err = cuda.Open(0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	dev.Close()
	os.Exit(code)
}

func TestDeviceStep(t *testing.T) {
	for i, c := range configs {
		compare[cuda.Buffer, cuda.Buffer](t, dev, c, "", 2, c.MaxSeq, uint64(i+1), 1e-5, 1e-4)
	}
	for _, p := range presets {
		compare[cuda.Buffer, cuda.Buffer](t, dev, configs[2], p, 2, configs[2].MaxSeq, 5, 1e-5, 1e-4)
	}
}

// tiny is configs/tiny.yaml's model.
var tiny = layers.Config{Vocab: 4096, Dim: 256, Layers: 4, Heads: 4, KVHeads: 4, FFNHidden: 704, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 128}

func TestDeviceLossCurve(t *testing.T) {
	const B, T, steps = 8, 128, 20
	mk := func() (*layers.Model, *optim.AdamW, []*autograd.Var) {
		m := layers.New(tiny)
		m.Init(1)
		var ps []optim.Param
		var vars []*autograd.Var
		for _, p := range m.Params() {
			ps = append(ps, optim.Param{Name: p.Name, Var: p.Var, Decay: len(p.Var.Shape()) > 1})
			vars = append(vars, p.Var)
		}
		return m, optim.NewAdamW(optim.DefaultAdamW, ps, nil), vars
	}
	mc, oc, vc := mk()
	mg, og, vg := mk()
	s, err := New[cuda.Buffer, cuda.Buffer](dev, mg, B, T)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	ids, tgt := make([]int32, B*T), make([]int32, B*T)
	for step := 0; step < steps; step++ {
		for i := range ids { // a learnable pattern: the next id is ids+1
			ids[i] = int32(rng.IntN(tiny.Vocab))
			tgt[i] = (ids[i] + 1) % int32(tiny.Vocab)
		}
		autograd.ZeroGrad(vc...)
		autograd.ZeroGrad(vg...)
		tp := autograd.NewTape()
		l := mc.Loss(tp, ids, tgt, B, T)
		tp.Backward(l)
		lg, err := s.LossBackward(ids, tgt)
		if err != nil {
			t.Fatal(err)
		}
		lc := l.Data()[0]
		t.Logf("step %2d: loss CPU %.6f, GPU %.6f", step+1, lc, lg)
		if math.Abs(float64(lg-lc)) > 1e-3*math.Abs(float64(lc)) {
			t.Fatalf("step %d: loss GPU %g, CPU %g", step+1, lg, lc)
		}
		optim.ClipGradNorm(vc, 1)
		optim.ClipGradNorm(vg, 1)
		oc.Update(1e-3)
		og.Update(1e-3)
	}
}
