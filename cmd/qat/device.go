package main

import (
	"github.com/spf13/cobra"

	"qat/kernels/cuda"
)

// deviceFlag adds --device to cmd and returns its value. In a binary
// built without the gpu tag --device cuda is a clear error (exit 2). With
// onGPU false the command has no device path yet (eval and generate: the
// packed decoder is not on the device), and --device cuda is refused in
// the GPU build too, never run silently on the CPU.
func deviceFlag(cmd *cobra.Command, what string, onGPU bool) *string {
	device := new(string)
	cmd.Flags().StringVar(device, "device", "cpu", "where to compute: cpu, or cuda (a GPU build)")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if err := checkDevice(*device); err != nil || *device != "cuda" || onGPU {
			return err
		}
		return inputf("--device cuda: %s does not run on the GPU yet (training does: qat train --device cuda)", what)
	}
	return device
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

// chain runs check, then (when it passes) then.
func chain(check func(*cobra.Command, []string) error, then func()) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		if err := check(c, args); err != nil {
			return err
		}
		then()
		return nil
	}
}
