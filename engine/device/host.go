package device

import (
	"qat/engine"
	"qat/kernels/cuda"
	"qat/layers"
)

// "cuda-host" is the device step on the kernels' host build: the GPU's
// arithmetic on the CPU, slowly. It exists so the device step can be
// checked through the same seam as the other engines where no GPU is.
func init() {
	engine.Register("cuda-host", func(m *layers.Model, o engine.Options) (engine.Engine, error) {
		s, err := New[[]float32, []int32](cuda.Host{}, m, o.Batch, o.Seq)
		if err != nil {
			return nil, err
		}
		return hostStep{s}, nil
	})
}

type hostStep struct{ *Step[[]float32, []int32] }

// Close does nothing: host memory is the garbage collector's.
func (hostStep) Close() error { return nil }
