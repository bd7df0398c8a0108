package train

import (
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// plot writes out_dir/loss.png: training loss (mean over windows of 20
// steps) and validation loss against the step.
func (r *Run) plot() error {
	p := plot.New()
	p.Title.Text = "qat: " + filepath.Base(r.Cfg.OutDir)
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss (nats/token)"
	p.Add(plotter.NewGrid())
	var tr, va plotter.XYs
	var sum float64
	var n int
	for _, c := range r.curve {
		if c.Loss > 0 {
			sum += c.Loss
			n++
			if n == 20 {
				tr = append(tr, plotter.XY{X: float64(c.Step), Y: sum / float64(n)})
				sum, n = 0, 0
			}
		}
		if c.ValLoss > 0 {
			va = append(va, plotter.XY{X: float64(c.Step), Y: c.ValLoss})
		}
	}
	for _, s := range []struct {
		name string
		xy   plotter.XYs
		pts  bool
	}{{"train", tr, false}, {"validation", va, true}} {
		if len(s.xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return err
		}
		if s.pts {
			l.Color = color.RGBA{R: 200, G: 30, B: 30, A: 255}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	p.Legend.Top = true
	tmp := filepath.Join(r.Cfg.OutDir, ".loss.tmp.png")
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(r.Cfg.OutDir, "loss.png"))
}
