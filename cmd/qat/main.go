// Command qat trains, quantizes, benchmarks and exports Llama-style models.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"qat/cmd/internal/config"
	"qat/data"
	"qat/layers"
)

func main() {
	root := &cobra.Command{
		Use:           "qat",
		Short:         "Quantization-aware training for Llama-style models",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// --cpuprofile: where a command's time goes, for `go tool pprof`
	var prof, limits string
	var profFile *os.File
	root.PersistentFlags().StringVar(&prof, "cpuprofile", "", "write a CPU profile of the command to this file")
	root.PersistentFlags().StringVar(&limits, "limits", "", "raise the size limits checked before a model is allocated: key=value,... ("+layers.LimitKeys()+")")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		l, err := layers.ParseLimits(limits)
		if err != nil {
			return inputf("--limits: %v", err)
		}
		layers.SetLimits(l)
		if prof == "" {
			return nil
		}
		f, err := os.Create(prof)
		if err != nil {
			return inputf("--cpuprofile: %v", err)
		}
		profFile = f
		return pprof.StartCPUProfile(f)
	}
	root.PersistentPostRun = func(cmd *cobra.Command, args []string) {
		if profFile != nil {
			pprof.StopCPUProfile()
			profFile.Close()
		}
	}
	root.AddCommand(benchCmd(), dataCmd(), trainCmd(), evalCmd(), generateCmd(), ptqCmd(), exportCmd(), mergeCmd(), sweepCmd(), fitCmd())
	defer crashReport()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "qat:", err)
		os.Exit(exitCode(err))
	}
}

// crashReport turns a panic (a bug of ours, never the user's input) into
// exit 1 with the message on stderr and the stack in a file, instead of
// Go's exit 2, which scripts would read as bad input.
func crashReport() {
	r := recover()
	if r == nil {
		return
	}
	stack := debug.Stack()
	fmt.Fprintf(os.Stderr, "qat: internal error: %v\n", r)
	f, err := os.CreateTemp("", "qat-crash-*.txt")
	if err == nil {
		fmt.Fprintf(f, "qat %s\npanic: %v\n\n%s", strings.Join(os.Args[1:], " "), r, stack)
		f.Close()
		fmt.Fprintf(os.Stderr, "qat: the stack is in %s; please report it\n", f.Name())
	} else {
		os.Stderr.Write(stack)
	}
	os.Exit(1)
}

// exitCode is 2 for bad input (files, configs, flags), 128+n for a run
// stopped by signal n (checkpoint written), 1 otherwise.
func exitCode(err error) int {
	var de *data.InputError
	var bad interface{ BadInput() }
	if config.IsInput(err) || errors.As(err, &de) || errors.As(err, &bad) || isUsage(err) {
		return 2
	}
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) {
		return coded.ExitCode()
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
