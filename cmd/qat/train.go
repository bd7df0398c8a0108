package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"qat/cmd/internal/config"
	"qat/cmd/internal/train"
	"qat/data/atomic"
)

func trainCmd() *cobra.Command {
	var cfgPath, resume, initQuant, engine string
	var distributed bool
	var sets []string
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train or fine-tune a model (--config FILE, or --resume OUT_DIR)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (rerr error) {
			var c *config.Config
			var err error
			if initQuant != "" {
				sets = append(sets, "quant.init="+initQuant)
			}
			if engine != "" {
				sets = append(sets, "train.engine="+engine)
			}
			switch {
			case resume != "" && cfgPath != "":
				return inputf("give --config or --resume, not both: a resumed run keeps the config it started with")
			case resume != "":
				c, err = config.LoadSaved(filepath.Join(resume, "config.yaml"), sets...)
				if err == nil && c.OutDir != resume {
					c.OutDir = resume // the directory may have moved
				}
			case cfgPath != "":
				c, err = config.Load(cfgPath, sets...)
			default:
				return inputf("--config FILE or --resume OUT_DIR is required")
			}
			if err != nil {
				return err
			}
			opt := train.Options{Resume: resume != "", Overrides: sets}
			log := cmd.OutOrStdout()
			comm, end, err := joinJob(distributed)
			if err != nil {
				return err
			}
			defer func() { end(rerr) }()
			if comm != nil {
				opt.Comm = comm
				if comm.Rank() != 0 {
					log = io.Discard // the lead speaks for the job
				}
			}
			lead := opt.Comm == nil || opt.Comm.Rank() == 0
			r, err := train.OpenWith(c, opt, log)
			if err != nil {
				return err
			}
			defer r.Close()
			// the effective config: a fresh run's, or a resumed one's with
			// its --set overrides, which the next resume keeps
			if lead && (resume == "" || len(sets) > 0) {
				b, _ := yaml.Marshal(c)
				if err := atomic.WriteFile(filepath.Join(c.OutDir, "config.yaml"), b); err != nil {
					return err
				}
			}
			total, ne := c.Model.Params()
			fmt.Fprintf(log, "model: %d parameters (%d non-embedding), optimizer state (%s) %.1f MB, %.2f bytes per parameter; %d steps of %d x %d tokens; out %s\n",
				total, ne, c.Optimizer.Kind, float64(r.Opt.StateBytes())/1e6, float64(r.Opt.StateBytes())/float64(total), c.Train.Steps, c.Train.Batch*c.Train.GradAccum, c.Train.Seq, c.OutDir)
			if lead {
				r.AddHook(train.Progress(os.Stderr, c.Train.Steps, r.State.Step, c.Train.LogEvery))
			}
			defer train.HandleSignals(r, os.Stderr, true)()
			return r.Loop()
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "run configuration (YAML)")
	cmd.Flags().StringVar(&resume, "resume", "", "continue the run in this out_dir from its latest checkpoint")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override a config value: key.path=value (repeatable)")
	cmd.Flags().StringVar(&initQuant, "init-quant", "", "start QAT from post-training quantization: rtn, gptq, qqq or gwq (quant.init)")
	cmd.Flags().BoolVar(&distributed, "distributed", false, "one process of a data-parallel job started by mpirun, srun --mpi=pmix or an MPIJob (bin/qat-mpi)")
	cmd.Flags().StringVar(&engine, "engine", "", "compute engine: tape (default) or gorgonia (train.engine)")
	device := deviceFlag(cmd, "training", true)
	cmd.PreRunE = chain(cmd.PreRunE, func() {
		if *device == "cuda" {
			sets = append(sets, "train.device=cuda")
		}
	})
	return cmd
}
