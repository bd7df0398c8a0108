package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"qat/cmd/internal/bench"
	"qat/cmd/internal/config"
	"qat/data/atomic"
	"qat/dist"
)

func benchCmd() *cobra.Command {
	var cfgPath, jsonOut, device, mpirun, distResult string
	var threads []int
	var steps, warmup, values, procs int
	var distributed bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure sgemm, the fused kernels and training steps on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDevice(device); err != nil {
				return err
			}
			if device == "cuda" {
				if values < 1024 {
					return inputf("--values must be at least 1024")
				}
				return benchDevice(cmd.OutOrStdout(), values)
			}
			c, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			for _, t := range threads {
				if t < 1 {
					return inputf("--threads: values must be at least 1")
				}
			}
			if steps < 1 || warmup < 0 {
				return inputf("--steps must be at least 1 and --warmup at least 0")
			}
			name := strings.TrimSuffix(filepath.Base(cfgPath), filepath.Ext(cfgPath))
			if distributed {
				o := bench.Options{Model: c.Model, Name: name, Batch: c.Train.Batch, Seq: c.Train.Seq, Steps: steps, Warmup: warmup}
				return benchDistributed(cmd, o, procs, mpirun, distResult, []string{"--config", cfgPath, "--steps", strconv.Itoa(steps), "--warmup", strconv.Itoa(warmup)})
			}
			_, err = bench.Run(cmd.OutOrStdout(), bench.Options{Model: c.Model, Name: name, Batch: c.Train.Batch,
				Seq: c.Train.Seq, Threads: threads, Steps: steps, Warmup: warmup, JSON: jsonOut})
			return err
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "configs/tiny.yaml", "run configuration (model and batch)")
	cmd.Flags().IntSliceVar(&threads, "threads", []int{1, 2}, "thread counts to measure")
	cmd.Flags().IntVar(&steps, "steps", 10, "timed training steps")
	cmd.Flags().IntVar(&warmup, "warmup", 3, "untimed training steps first")
	cmd.Flags().StringVar(&jsonOut, "json", "", "also write results as JSON lines to this file")
	cmd.Flags().StringVar(&device, "device", "cpu", "cpu, or cuda: the device kernels beside a device copy (a GPU build)")
	cmd.Flags().IntVar(&values, "values", 1<<26, "--device cuda: values of the elementwise kernels")
	cmd.Flags().BoolVar(&distributed, "distributed", false, "data-parallel training steps and the gradient reduction (GB/s beside MPI_Allreduce): by hand, 1 process against --np MPI processes; under mpirun, the job's part")
	cmd.Flags().IntVar(&procs, "np", 2, "--distributed: processes of the MPI job (and threads of the one-process baseline)")
	cmd.Flags().StringVar(&mpirun, "mpirun", "mpirun", "--distributed: the MPI launcher")
	cmd.Flags().StringVar(&distResult, "dist-result", "", "--distributed under a launcher: write the lead's result here as JSON")
	cmd.Flags().MarkHidden("dist-result")
	cmd.AddCommand(benchPackedCmd(), benchImportCmd(), benchFinetuneCmd(), benchRecipesCmd())
	return cmd
}

func benchRecipesCmd() *cobra.Command {
	var cfgPath, jsonOut string
	var threads []int
	var steps, warmup int
	cmd := &cobra.Command{
		Use:   "recipes",
		Short: "Training step time of each W4A4 recipe beside full precision and plain W4A4 QAT",
		Long: `Measure the training step (forward, backward with any kurtosis penalty,
gradient clipping, AdamW) of --config's model and batch in full precision,
with W4A4 QAT (configs/llama-w4a4.yaml's quantizers), with the
activation-regularization recipe (configs/tiny-w4a4-actreg.yaml: learned
clip values on the inputs, output kurtosis penalty) and with a Hadamard
rotation before W4A4 QAT: median ms/step, tokens/s and the ratios to full
precision and to W4A4 QAT. The recipes take their steps in turn, so a
machine whose speed drifts slows them alike.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			for _, t := range threads {
				if t < 1 {
					return inputf("--threads: values must be at least 1")
				}
			}
			if steps < 1 || warmup < 0 {
				return inputf("--steps must be at least 1 and --warmup at least 0")
			}
			// a --json that cannot be written fails now, not after the
			// measurements
			if jsonOut != "" {
				if st, err := os.Stat(filepath.Dir(jsonOut)); err != nil || !st.IsDir() {
					return inputf("--json %s: its directory does not exist", jsonOut)
				}
			}
			name := strings.TrimSuffix(filepath.Base(cfgPath), filepath.Ext(cfgPath))
			_, err = bench.Recipes(cmd.OutOrStdout(), bench.Options{Model: c.Model, Name: name, Batch: c.Train.Batch,
				Seq: c.Train.Seq, Threads: threads, Steps: steps, Warmup: warmup, JSON: jsonOut})
			return err
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "configs/tiny.yaml", "run configuration (model and batch)")
	cmd.Flags().IntSliceVar(&threads, "threads", []int{1, 2}, "thread counts to measure")
	cmd.Flags().IntVar(&steps, "steps", 10, "timed training steps of each recipe")
	cmd.Flags().IntVar(&warmup, "warmup", 3, "untimed training steps of each recipe first")
	cmd.Flags().StringVar(&jsonOut, "json", "", "also write results as JSON lines to this file")
	return cmd
}

func benchPackedCmd() *cobra.Command {
	var o bench.PackedOptions
	cmd := &cobra.Command{
		Use:   "packed",
		Short: "Measure the packed Q4_0/Q8_0 products and decoding, beside llama.cpp when its binaries are given",
		Long: `Measure the packed Q4_0/Q8_0 products and the per-channel int4/int8 x
per-token int8 products (w4a8c, w8a8c) (4096x4096 and 4096x14336 weights, 1, 8
and 32 columns) in microseconds, GFLOP/s and weight GB/s next to the copy
bandwidth, and decoding tokens/s on synthetic 4-layer Llama-3-8B-shaped
models (written to --synth) and the --gguf files. With --llamacpp DIR
(test-backend-ops and llama-bench, as ../shared/peers/llamacpp/build.sh
builds them) llama.cpp runs the same cases in the same session.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, t := range o.Threads {
				if t < 1 {
					return inputf("--threads: values must be at least 1")
				}
			}
			if o.Tokens < 1 {
				return inputf("--tokens must be positive")
			}
			for _, v := range o.Only {
				if !slices.Contains(bench.PackedSections, v) {
					return inputf("--only: %q is not one of %s", v, strings.Join(bench.PackedSections, ", "))
				}
			}
			return bench.Packed(cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().IntSliceVar(&o.Threads, "threads", []int{1, 2}, "thread counts to measure")
	cmd.Flags().StringVar(&o.LlamaCpp, "llamacpp", "", "directory of llama.cpp's test-backend-ops and llama-bench")
	cmd.Flags().StringSliceVar(&o.GGUFs, "gguf", nil, "GGUF models to decode")
	cmd.Flags().StringVar(&o.Synth, "synth", "runs/synth", "directory of the synthetic models (empty: none)")
	cmd.Flags().IntVar(&o.Tokens, "tokens", 32, "tokens to decode")
	cmd.Flags().StringSliceVar(&o.Only, "only", nil, "run only these sections: "+strings.Join(bench.PackedSections, ", ")+" (default: all)")
	return cmd
}

// benchDistributed runs `qat bench --distributed`: under an MPI launcher,
// this process's part of the job (the lead prints, and writes the result
// for the by-hand run that started it); by hand, the one-process baseline
// and then the job through mpirun, side by side.
func benchDistributed(cmd *cobra.Command, o bench.Options, procs int, mpirun, result string, args []string) error {
	w := cmd.OutOrStdout()
	if !dist.Available {
		return inputf("--distributed: %v", dist.ErrNoMPI)
	}
	if !dist.Launched(os.Getenv) {
		if procs < 2 {
			return inputf("--np %d: the job needs at least 2 processes", procs)
		}
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		return bench.DistributedSideBySide(w, o, procs, mpirun, exe, args)
	}
	comm, err := dist.Open()
	if err != nil {
		return err
	}
	defer comm.Close()
	r, err := bench.Distributed(comm, o)
	if err != nil {
		comm.Abort(1)
		return err
	}
	if comm.Rank() != 0 {
		return nil
	}
	if result == "" {
		bench.PrintDistributed(w, o, r)
		fmt.Fprintf(w, "%d processes x 1 thread: %.0f tokens/s, %.1f ms/step (%.1f ms in collectives)\n", r.Procs, r.TokensSec, r.StepMs, r.CommMs)
		bench.PrintOverlap(w, r)
		return nil
	}
	b, _ := json.Marshal(r)
	return atomic.WriteFile(result, b)
}
