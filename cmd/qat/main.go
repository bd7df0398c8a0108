// Command qat trains, quantizes, benchmarks and exports Llama-style models.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"qat/cmd/internal/config"
	"qat/data"
)

func main() {
	root := &cobra.Command{
		Use:           "qat",
		Short:         "Quantization-aware training for Llama-style models",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(benchCmd(), dataCmd(), trainCmd(), evalCmd(), generateCmd(), ptqCmd(), exportCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "qat:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for bad input (files, configs, flags), 1 otherwise.
func exitCode(err error) int {
	var de *data.InputError
	if config.IsInput(err) || errors.As(err, &de) || isUsage(err) {
		return 2
	}
	return 1
}

// isUsage recognises cobra's flag and argument errors.
func isUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand") || strings.Contains(s, "invalid argument") ||
		strings.HasPrefix(s, "accepts ") || strings.Contains(s, "flag needs an argument") ||
		strings.Contains(s, "required flag")
}

func inputf(format string, a ...any) error { return &config.InputError{Err: fmt.Errorf(format, a...)} }
