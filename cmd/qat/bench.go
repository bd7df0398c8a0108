package main

import (
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"qat/cmd/internal/bench"
	"qat/cmd/internal/config"
)

func benchCmd() *cobra.Command {
	var cfgPath, jsonOut string
	var threads []int
	var steps, warmup int
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure sgemm, the fused kernels and training steps on this machine",
		Args:  cobra.NoArgs,
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
			name := strings.TrimSuffix(filepath.Base(cfgPath), filepath.Ext(cfgPath))
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
	return cmd
}
