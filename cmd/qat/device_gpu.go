//go:build gpu

package main

import (
	"io"

	"qat/kernels/cuda"
)

// benchDevice runs the device kernels' benchmark on GPU 0.
func benchDevice(w io.Writer, n int) error {
	d, err := cuda.Open(0)
	if err != nil {
		return err
	}
	defer d.Close()
	return cuda.Bench(d, w, n)
}
