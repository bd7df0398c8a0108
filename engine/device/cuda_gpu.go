//go:build gpu

package device

import (
	"qat/engine"
	"qat/kernels/cuda"
	"qat/layers"
)

func init() { engine.Register("cuda", newCUDA) }

// onGPU is the step on GPU 0, which it closes with the engine.
type onGPU struct {
	*Step[cuda.Buffer, cuda.Buffer]
	d *cuda.Device
}

func (g onGPU) Close() error { return g.d.Close() }

// newCUDA opens GPU 0 and lays m out on it for the batch shape.
func newCUDA(m *layers.Model, o engine.Options) (engine.Engine, error) {
	d, err := cuda.Open(0)
	if err != nil {
		return nil, err
	}
	s, err := New[cuda.Buffer, cuda.Buffer](d, m, o.Batch, o.Seq)
	if err != nil {
		d.Close()
		return nil, err
	}
	return onGPU{s, d}, nil
}

// DeviceName is the name of the GPU a cuda engine runs on.
func DeviceName(e engine.Engine) string {
	if g, ok := e.(onGPU); ok {
		return g.d.Name
	}
	return ""
}
