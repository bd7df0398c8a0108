//go:build !gpu

package train

import (
	"qat/kernels/cuda"
	"qat/layers"
)

// newDeviceStep: this build has no device code.
func newDeviceStep(*layers.Model, int, int) (string, deviceStep, error) {
	return "", nil, cuda.ErrNoGPUBuild
}
