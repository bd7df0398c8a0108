//go:build gpu

package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"qat/engine/device"
	"qat/kernels/cuda"
	"qat/layers"
	qatpkg "qat/qat"
)

// benchDevice runs the device kernels' benchmark on GPU 0, then times the
// Llama step (forward, loss and backward, with the weights' upload and the
// gradients' download it does every step) at the tiny and small configs,
// full precision and w4a8.
func benchDevice(w io.Writer, n int) error {
	d, err := cuda.Open(0)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := cuda.Bench(d, w, n); err != nil {
		return err
	}
	configs := []struct {
		name string
		c    layers.Config
		B, T int
	}{
		{"tiny", layers.Config{Vocab: 4096, Dim: 256, Layers: 4, Heads: 4, KVHeads: 4, FFNHidden: 704, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 128}, 8, 128},
		{"small", layers.Config{Vocab: 8192, Dim: 512, Layers: 8, Heads: 8, KVHeads: 8, FFNHidden: 1376, RopeTheta: 10000, NormEps: 1e-5, Tied: true, MaxSeq: 256}, 8, 256},
	}
	for _, cf := range configs {
		for _, preset := range []string{"", "w4a8"} {
			m := layers.New(cf.c)
			m.Init(1)
			if preset != "" {
				if err := qatpkg.Prepare(m, qatpkg.Presets[preset]); err != nil {
					return err
				}
			}
			s, err := device.New[cuda.Buffer, cuda.Buffer](d, m, cf.B, cf.T)
			if err != nil {
				return err
			}
			rng := rand.New(rand.NewPCG(1, 1))
			ids, tgt := make([]int32, cf.B*cf.T), make([]int32, cf.B*cf.T)
			for i := range ids {
				ids[i], tgt[i] = int32(rng.IntN(cf.c.Vocab)), int32(rng.IntN(cf.c.Vocab))
			}
			if _, err := s.LossBackward(ids, tgt); err != nil { // warm-up
				return err
			}
			const reps = 5
			t0 := time.Now()
			for i := 0; i < reps; i++ {
				if _, err := s.LossBackward(ids, tgt); err != nil {
					return err
				}
			}
			sec := time.Since(t0).Seconds() / reps
			name := preset
			if name == "" {
				name = "fp32"
			}
			fmt.Fprintf(w, "training step %s %s: %.1f ms, %.0f tokens/s (forward + backward + weight/gradient transfers)\n",
				cf.name, name, 1e3*sec, float64(cf.B*cf.T)/sec)
		}
	}
	return nil
}
