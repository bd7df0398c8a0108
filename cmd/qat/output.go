package main

import (
	"github.com/spf13/cobra"

	"qat/checkpoint"
	"qat/data/atomic"
)

// forceFlag adds --force: the one way to replace an output that qat did
// not write (never the command's input).
func forceFlag(cmd *cobra.Command, force *bool) {
	cmd.Flags().BoolVar(force, "force", false, "replace --out even if qat did not write it (never the input)")
}

// reserveOut claims the output directory before any work: it refuses the
// input model (the path given or the checkpoint it resolves to), a
// directory qat did not write (unless force) and one another process is
// writing, all as exit 2 naming the path.
func reserveOut(out string, force bool, model string) (*atomic.Reservation, error) {
	if err := checkOutFile(out, force, model); err != nil {
		return nil, err
	}
	return atomic.Reserve(out, force)
}

// checkOutFile refuses an output path that is the input model or holds
// it, and, unless force, anything already there that qat did not write.
func checkOutFile(out string, force bool, model string) error {
	inputs := []string{model}
	if dir, err := checkpoint.Resolve(model); err == nil {
		inputs = append(inputs, dir)
	}
	if err := atomic.CheckNotInput(out, inputs...); err != nil {
		return err
	}
	return atomic.CheckReplace(out, force)
}
