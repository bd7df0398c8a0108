//go:build !gpu

package device

import (
	"qat/engine"
	"qat/kernels/cuda"
	"qat/layers"
)

// "cuda" in a build without device code says so.
func init() {
	engine.Register("cuda", func(*layers.Model, engine.Options) (engine.Engine, error) {
		return nil, cuda.ErrNoGPUBuild
	})
}

// DeviceName is empty: this build has no GPU engine.
func DeviceName(engine.Engine) string { return "" }
