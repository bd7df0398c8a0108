//go:build !gpu

package main

import (
	"io"

	"qat/kernels/cuda"
)

// benchDevice: this build has no device code.
func benchDevice(io.Writer, int) error { return inputf("--device cuda: %v", cuda.ErrNoGPUBuild) }
