package main

import (
	"github.com/spf13/cobra"

	"qat/kernels/cuda"
)

// deviceFlag adds --device to cmd. The GPU build (make gpu) runs the
// quantization, optimizer and packed-product kernels on the device (qat
// bench --device cuda); the commands that take this flag run on the CPU
// until the training step and the packed decoder are on the device, and
// --device cuda on them is a clear error (exit 2), not a silent CPU run.
func deviceFlag(cmd *cobra.Command, what string) {
	var device string
	cmd.Flags().StringVar(&device, "device", "cpu", "where to compute: cpu, or cuda (a GPU build)")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if err := checkDevice(device); err != nil || device != "cuda" {
			return err
		}
		return inputf("--device cuda: %s does not run on the GPU yet; this build runs the quantization, 8-bit AdamW and packed-product kernels there (qat bench --device cuda)", what)
	}
}

// checkDevice accepts cpu, and cuda in a GPU build.
func checkDevice(device string) error {
	switch device {
	case "cpu":
		return nil
	case "cuda":
		if !cuda.Available {
			return inputf("--device cuda: %v", cuda.ErrNoGPUBuild)
		}
		return nil
	}
	return inputf("--device %q: want cpu or cuda", device)
}
