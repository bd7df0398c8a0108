package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"qat/cmd/internal/config"
	"qat/cmd/internal/train"
	"qat/data/atomic"
	"qat/dist"
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
			switch {
			case distributed:
				comm, err := dist.Open()
				if errors.Is(err, dist.ErrNoMPI) {
					return inputf("--distributed: %v", err)
				}
				if err != nil {
					return err
				}
				// a process that fails ends the job: the others would
				// wait for it in the next collective
				defer func() {
					if rerr != nil && comm.Size() > 1 {
						fmt.Fprintf(os.Stderr, "qat: process %d of %d: %v\n", comm.Rank(), comm.Size(), rerr)
						comm.Abort(exitCode(rerr))
					}
					comm.Close()
				}()
				opt.Comm = comm
				if comm.Rank() != 0 {
					log = io.Discard // the lead speaks for the job
				}
			case dist.Launched(os.Getenv) && launchedSize() > 1:
				return inputf("this process is one of %d an MPI launcher started: pass --distributed (to bin/qat-mpi, built by make mpi), or they would train %d runs into one out_dir", launchedSize(), launchedSize())
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

// launchedSize is the number of processes an MPI launcher says it started
// (0 when none says).
func launchedSize() int {
	for _, k := range []string{"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"} {
		if n, err := strconv.Atoi(os.Getenv(k)); err == nil {
			return n
		}
	}
	return 0
}
