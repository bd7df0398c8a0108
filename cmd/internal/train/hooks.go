package train

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Every returns a hook that calls f every n steps (n > 0) and at the
// run's last step, telling it which.
func Every(n int, f func(r *Run, last bool) error) Hook {
	return func(r *Run, s StepResult) error {
		last := s.Step == r.Cfg.Train.Steps
		if n > 0 && s.Step%n == 0 || last {
			return f(r, last)
		}
		return nil
	}
}

// Progress returns a hook that draws a progress bar with step, loss,
// tokens/s and ETA when w is a terminal, and otherwise prints one plain
// line every `every` steps (no carriage returns in logs).
func Progress(w io.Writer, total, start, every int) Hook {
	f, isFile := w.(*os.File)
	if isFile && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
		bar.Set(start)
		return func(r *Run, s StepResult) error {
			bar.Describe(fmt.Sprintf("loss %.4f  %5.0f tok/s", s.Loss, s.TokensSec))
			return bar.Set(s.Step)
		}
	}
	t0, s0 := time.Now(), start
	return func(r *Run, s StepResult) error {
		if every > 0 && (s.Step%every == 0 || s.Step == total) {
			el := time.Since(t0)
			eta := time.Duration(float64(el) / float64(s.Step-s0) * float64(total-s.Step))
			fmt.Fprintf(w, "step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f tokens/s  elapsed %s  ETA %s\n",
				s.Step, total, s.Loss, s.LR, s.GradNorm, s.TokensSec, el.Round(time.Second), eta.Round(time.Second))
		}
		return nil
	}
}
