//go:build gpu

package train

import (
	"qat/kernels/cuda"
	"qat/layers"
	"qat/layers/device"
)

// newDeviceStep opens GPU 0 and lays m out on it for B x T batches.
func newDeviceStep(m *layers.Model, B, T int) (string, deviceStep, error) {
	d, err := cuda.Open(0)
	if err != nil {
		return "", nil, err
	}
	s, err := device.New[cuda.Buffer, cuda.Buffer](d, m, B, T)
	if err != nil {
		d.Close()
		return "", nil, err
	}
	return d.Name, s, nil
}
