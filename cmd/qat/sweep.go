package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"qat/cmd/internal/sweep"
	"qat/data/atomic"
	"qat/qat/scaling"
)

func sweepCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sweep",
		Short: "Scaling-law sweeps: plan a grid, run its entries (locally or on a cluster), collect the results",
	}
	cmd.AddCommand(sweepPlanCmd(), sweepRunCmd(), sweepCollectCmd(), sweepEmitCmd())
	return cmd
}

func sweepPlanCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "plan SWEEP.yaml",
		Short: "Expand a sweep file into a plan (JSON on standard output)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sweep.LoadSpec(args[0])
			if err != nil {
				return err
			}
			p, err := s.Expand()
			if err != nil {
				return err
			}
			b, err := p.Marshal()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
}

func loadPlan(path string) (*sweep.Plan, error) {
	p, err := sweep.LoadPlan(path)
	if err != nil {
		return nil, err
	}
	if len(p.Entries) == 0 {
		return nil, inputf("%s: no entries", path)
	}
	return p, nil
}

func sweepRunCmd() *cobra.Command {
	var index, workers int
	var out string
	var distributed bool
	cmd := &cobra.Command{
		Use:   "run PLAN.json [--index I | --workers K]",
		Short: "Run one entry of a plan (--index, JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID), or all of them with a local pool",
		Long: `Run one entry of a plan, or the whole plan with --workers K.

One entry: --index I, else the index a scheduler gives (JOB_COMPLETION_INDEX
on Kubernetes Indexed Jobs, SLURM_ARRAY_TASK_ID in SLURM job arrays). An
entry that succeeded is skipped; a stopped one resumes from its last
checkpoint. Exit status: 0 done; 1 failed, recorded in RESULTS/ID/failure.json
(with the attempt count), which does not count as done, so the cluster's
retry runs the entry again; 2 bad input, or the entry is held by another
process; 143 (130) stopped by SIGTERM (SIGINT) after writing a checkpoint,
nothing recorded.

--workers K runs every entry that has not succeeded (failed ones again), K
at a time, each in a child process (a crash or out-of-memory kill becomes a
failure record; the others go on), then collects the results into
results.parquet in the results directory (or --out). SIGTERM or SIGINT is
passed to the running entries, which checkpoint; a second one kills them.
Exit status 1 when an entry failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (rerr error) {
			p, err := loadPlan(args[0])
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("workers") {
				if workers < 1 {
					return inputf("--workers %d: must be at least 1", workers)
				}
				return sweepPool(cmd, p, args[0], workers, out)
			}
			i := index
			if !cmd.Flags().Changed("index") {
				var from string
				var ok bool
				if i, from, ok = sweep.IndexFromEnv(); !ok {
					return inputf("give --index, --workers, or set JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID")
				} else if i < 0 {
					return inputf("%s=%q is not an entry index", from, os.Getenv(from))
				}
			}
			if i < 0 || i >= len(p.Entries) {
				return inputf("entry %d: %s has entries 0 to %d", i, args[0], len(p.Entries)-1)
			}
			e := p.Entries[i]
			comm, end, err := joinJob(distributed)
			if err != nil {
				return err
			}
			defer func() { end(rerr) }()
			skipped, err := p.RunIn(i, cmd.OutOrStdout(), comm)
			if comm != nil && comm.Rank() != 0 && err == nil {
				return nil // the lead reports
			}
			var fe *sweep.FailedError
			switch {
			case errors.As(err, &fe):
				// exit status 1 whatever the cause (it does not unwrap):
				// the cluster retries
				return err
			case err != nil:
				// interrupted (143/130: checkpointed), busy (2)
				return fmt.Errorf("entry %d (%s): %w", i, e.ID, err)
			case skipped:
				fmt.Fprintf(cmd.OutOrStdout(), "entry %d (%s): has a result, skipped\n", i, e.ID)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "entry %d (%s): done, %s\n", i, e.ID, p.ResultPath(i))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&index, "index", 0, "the entry to run")
	cmd.Flags().IntVar(&workers, "workers", 1, "run the whole plan, this many entries at a time")
	cmd.Flags().BoolVar(&distributed, "distributed", false, "one process of a data-parallel job running the entry (bin/qat-mpi under srun --mpi=pmix or an MPIJob: sweep emit --ranks)")
	cmd.Flags().StringVar(&out, "out", "", "with --workers: the results table (default RESULTS/results.parquet)")
	return cmd
}

// sweepPool runs the plan's entries in a local pool and collects them.
func sweepPool(cmd *cobra.Command, p *sweep.Plan, plan string, workers int, out string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	rep, err := p.Pool(sweep.PoolOptions{Workers: workers, Self: self, Args: []string{"sweep", "run", plan, "--index"},
		Progress: cmd.ErrOrStderr(), Signals: sigs})
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "ran %d entries: %d ok, %d failed", rep.Ran, rep.OK, rep.Failed)
	if rep.Interrupted > 0 {
		fmt.Fprintf(w, ", %d stopped (they resume next time)", rep.Interrupted)
	}
	if rep.Busy > 0 {
		fmt.Fprintf(w, ", %d held by another process", rep.Busy)
	}
	fmt.Fprintf(w, "; %d of %d have results\n", countDone(p), len(p.Entries))
	if err := collect(cmd, p, out); err != nil {
		return err
	}
	switch {
	case rep.Signal != nil:
		sig, _ := rep.Signal.(syscall.Signal)
		return &stoppedError{sig}
	case rep.Failed > 0:
		return fmt.Errorf("%d entries failed (%s): `qat sweep run %s --workers %d` runs them again",
			rep.Failed, strings.Join(rep.FailedIDs, ", "), plan, workers)
	case rep.Busy > 0:
		return fmt.Errorf("%d entries are held by another process", rep.Busy)
	}
	return nil
}

// stoppedError is a pool stopped by a signal: exit status 128+n, as a
// process killed by it.
type stoppedError struct{ sig syscall.Signal }

func (e *stoppedError) Error() string {
	return fmt.Sprintf("stopped by %v; the running entries wrote checkpoints and resume when the sweep runs again", e.sig)
}

func (e *stoppedError) ExitCode() int { return 128 + int(e.sig) }

func countDone(p *sweep.Plan) int {
	n := 0
	for i := range p.Entries {
		if p.Done(i) {
			n++
		}
	}
	return n
}

func collect(cmd *cobra.Command, p *sweep.Plan, out string) error {
	rows, err := p.Rows()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(p.ResultsDir(), "results.parquet")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := sweep.WriteParquet(out, rows); err != nil {
		return err
	}
	count := map[string]int{}
	w := cmd.OutOrStdout()
	for i, r := range rows {
		count[r.Status]++
		if r.Status == "failed" {
			res, _, _ := p.LoadResult(i)
			msg, _, _ := strings.Cut(r.Error, "\n")
			fmt.Fprintf(w, "failed: %s (attempt %d): %s; see %s\n", r.ID, res.Attempts, msg, p.FailurePath(i))
		}
	}
	fmt.Fprintf(w, "%d rows (%d ok, %d failed, %d missing) -> %s\n", len(rows), count["ok"], count["failed"], count["missing"], out)
	return nil
}

func sweepCollectCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "collect PLAN.json",
		Short: "Gather a plan's results into one Parquet table (default RESULTS/results.parquet)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := loadPlan(args[0])
			if err != nil {
				return err
			}
			return collect(cmd, p, out)
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "the table's path")
	return cmd
}

func sweepEmitCmd() *cobra.Command {
	var k8s, slurm bool
	var c sweep.Cluster
	cmd := &cobra.Command{
		Use:   "emit PLAN.json --kubernetes|--slurm",
		Short: "Write a Kubernetes Indexed Job manifest or a SLURM job-array script that runs every entry of a plan",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if k8s == slurm {
				return inputf("give one of --kubernetes and --slurm")
			}
			p, err := loadPlan(args[0])
			if err != nil {
				return err
			}
			if c.Plan == "" {
				c.Plan = args[0]
			}
			if c.Parallelism < 1 || c.CPUs < 0 || c.Retries < 0 || c.Grace < 1 || c.Ranks < 1 {
				return inputf("--parallelism, --grace and --ranks must be at least 1, --cpus and --retries at least 0")
			}
			var text string
			if k8s {
				if c.Image == "" || c.Claim == "" {
					return inputf("--kubernetes needs --image (holding qat) and --claim (the volume with the data and results)")
				}
				text, err = p.Kubernetes(c)
			} else {
				text, err = p.Slurm(c)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), text)
			return err
		},
	}
	cmd.Flags().BoolVar(&k8s, "kubernetes", false, "a Kubernetes Indexed Job manifest")
	cmd.Flags().BoolVar(&slurm, "slurm", false, "an sbatch job-array script")
	cmd.Flags().StringVar(&c.Plan, "plan-path", "", "the plan's path as the tasks see it (default: as given)")
	cmd.Flags().StringVar(&c.Workdir, "workdir", "/work", "the tasks' working directory (relative paths of the plan and config start there)")
	cmd.Flags().IntVar(&c.Parallelism, "parallelism", 4, "entries running at once")
	cmd.Flags().IntVar(&c.Retries, "retries", 2, "retries of an entry that failed")
	cmd.Flags().IntVar(&c.CPUs, "cpus", 0, "CPUs per entry (0: the largest train.threads of the entries)")
	cmd.Flags().StringVar(&c.Memory, "memory", "", "memory per entry, as 8Gi (default: estimated from the entries' model, optimizer and batch)")
	cmd.Flags().IntVar(&c.Grace, "grace", sweep.DefaultGrace, "seconds from SIGTERM to SIGKILL: for a step and a checkpoint")
	cmd.Flags().StringVar(&c.Image, "image", "", "container image with the qat binary (Kubernetes)")
	cmd.Flags().StringVar(&c.Claim, "claim", "", "persistent volume claim mounted at --workdir (Kubernetes)")
	cmd.Flags().IntVar(&c.Ranks, "ranks", 1, "processes per entry: > 1 runs each entry data-parallel over MPI (srun --mpi=pmix tasks, or an MPIJob per entry); --cpus and --memory are per process")
	return cmd
}

func fitCmd() *cobra.Command {
	var huber float64
	var holdout int
	var plots string
	cmd := &cobra.Command{
		Use:   "fit RESULTS.parquet",
		Short: "Fit the QAT scaling law delta = k D^gD (log2 G)^gG / N^gN to a sweep's results, with plots",
		Long: `Fit the QAT scaling law of arXiv 2505.14302 to the ok QAT rows of a results
table (qat sweep collect), their deltas averaged over seeds: log-linear least squares (--huber C for Huber's
loss), 95% confidence intervals, in-sample R2, and the error on held-out
points: the --holdout largest (N, D) pairs (by N*D) are left out of the fit
and predicted. Writes delta_vs_d.png, delta_vs_g.png and
fitted_vs_measured.png to --plots (default: beside the table).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rows, err := sweep.ReadParquet(args[0])
			if err != nil {
				return inputf("%v", err)
			}
			// Seeds of one (N, D, G) are averaged before the log: a run
			// whose delta came out <= 0 by noise then still counts.
			type key struct{ n, d, g int64 }
			sum, cnt := map[key]float64{}, map[key]int{}
			var order []key
			for _, r := range rows {
				if r.Kind != "qat" || r.Status != "ok" || r.FPValLoss == 0 {
					continue
				}
				k := key{r.N, r.D, r.G}
				if cnt[k] == 0 {
					order = append(order, k)
				}
				sum[k] += r.Delta
				cnt[k]++
			}
			var pts []scaling.Point
			skipped := 0
			for _, k := range order {
				p := scaling.Point{N: float64(k.n), D: float64(k.d), G: float64(k.g), Delta: sum[k] / float64(cnt[k])}
				if !scaling.Usable(p) {
					skipped++
					continue
				}
				pts = append(pts, p)
			}
			// held-out (N, D) pairs: the largest by N*D
			type nd struct{ n, d float64 }
			seen := map[nd]bool{}
			var pairs []nd
			for _, p := range pts {
				if k := (nd{p.N, p.D}); !seen[k] {
					seen[k] = true
					pairs = append(pairs, k)
				}
			}
			sort.Slice(pairs, func(i, j int) bool { return pairs[i].n*pairs[i].d > pairs[j].n*pairs[j].d })
			if holdout < 0 || holdout >= len(pairs) {
				return inputf("--holdout %d: the table has %d (N, D) pairs with usable QAT rows", holdout, len(pairs))
			}
			held := map[nd]bool{}
			for _, k := range pairs[:holdout] {
				held[k] = true
			}
			var fitPts, testPts []scaling.Point
			for _, p := range pts {
				if held[nd{p.N, p.D}] {
					testPts = append(testPts, p)
				} else {
					fitPts = append(fitPts, p)
				}
			}
			f, err := scaling.FitLaw(fitPts, scaling.Options{Huber: huber})
			if err != nil {
				return inputf("%s: %v", args[0], err)
			}
			w := cmd.OutOrStdout()
			loss := "least squares"
			if huber > 0 {
				loss = fmt.Sprintf("Huber (c = %g)", huber)
			}
			fmt.Fprintf(w, "%s: %d usable (N, D, G) points, seeds averaged (%d with mean delta <= 0 skipped), %d held out, %s\n%v\n",
				args[0], len(pts), skipped, len(testPts), loss, f)
			sign := func(name string, v, ci float64, want string) {
				s := "positive"
				if v < 0 {
					s = "negative"
				}
				sure := ""
				if math.Abs(v) < ci {
					sure = " (its interval holds 0)"
				}
				fmt.Fprintf(w, "  %s is %s%s: %s\n", name, s, sure, want)
			}
			sign("gN", f.GN, f.CI95[3], "the paper finds delta falls with N (gN > 0)")
			sign("gD", f.GD, f.CI95[1], "the paper finds delta rises with D (gD > 0)")
			sign("gG", f.GG, f.CI95[2], "the paper finds delta rises with G (gG > 0)")
			if len(testPts) > 0 {
				s := f.Law.Evaluate(testPts)
				var names []string
				for _, k := range pairs[:holdout] {
					names = append(names, fmt.Sprintf("N=%.3gM D=%.3gM", k.n/1e6, k.d/1e6))
				}
				fmt.Fprintf(w, "held out (%s): %d points, R2 %.3f, RMSE of log delta %.3f, mean relative error of delta %.1f%%\n",
					strings.Join(names, "; "), s.N, s.R2, s.RMSE, 100*s.MeanRelErr)
			}
			if plots == "" {
				plots = filepath.Dir(args[0])
			}
			if err := os.MkdirAll(plots, 0o755); err != nil {
				return err
			}
			if err := scaling.Plots(plots, pts, f.Law, "QAT scaling law"); err != nil {
				return err
			}
			b := fmt.Sprintf(`{"k": %g, "gN": %g, "gD": %g, "gG": %g, "ci95_logk_gD_gG_gN": [%g, %g, %g, %g], "r2": %g, "rmse": %g, "points": %d}`+"\n",
				f.K, f.GN, f.GD, f.GG, f.CI95[0], f.CI95[1], f.CI95[2], f.CI95[3], f.R2, f.RMSE, f.N)
			if err := atomic.WriteFile(filepath.Join(plots, "fit.json"), []byte(b)); err != nil {
				return err
			}
			fmt.Fprintf(w, "plots and fit.json in %s\n", plots)
			return nil
		},
	}
	cmd.Flags().Float64Var(&huber, "huber", 0, "Huber loss threshold in robust standard deviations (1.345 typical; 0: least squares)")
	cmd.Flags().IntVar(&holdout, "holdout", 1, "leave the largest N*D pairs out of the fit and report the error on them")
	cmd.Flags().StringVar(&plots, "plots", "", "directory for the PNG plots and fit.json (default: the table's)")
	return cmd
}
