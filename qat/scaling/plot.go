package scaling

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var palette = []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}}

func distinct(pts []Point, f func(Point) float64) []float64 {
	seen := map[float64]bool{}
	var out []float64
	for _, p := range pts {
		if v := f(p); !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Float64s(out)
	return out
}

// Plots writes delta_vs_d.png (per N, at the middle group size), delta_vs_g.png
// (per N, at the largest D) and fitted_vs_measured.png into dir, each
// written to a temp file and renamed.
func Plots(dir string, pts []Point, l Law, title string) error {
	var use []Point
	for _, p := range pts {
		if Usable(p) {
			use = append(use, p)
		}
	}
	if len(use) == 0 {
		return fmt.Errorf("scaling: nothing to plot")
	}
	ns, gs, ds := distinct(use, func(p Point) float64 { return p.N }), distinct(use, func(p Point) float64 { return p.G }),
		distinct(use, func(p Point) float64 { return p.D })
	gMid, dMax := gs[len(gs)/2], ds[len(ds)-1]

	// delta vs D, one colour per N
	p := newPlot(fmt.Sprintf("%s: delta vs D (G = %g)", title, gMid), "training tokens D", "delta (nats)")
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
	for i, n := range ns {
		var xy plotter.XYs
		for _, q := range use {
			if q.N == n && q.G == gMid {
				xy = append(xy, plotter.XY{X: q.D, Y: q.Delta})
			}
		}
		var line plotter.XYs
		for k := 0; k <= 40; k++ {
			d := ds[0] * math.Pow(ds[len(ds)-1]/ds[0], float64(k)/40)
			line = append(line, plotter.XY{X: d, Y: l.Delta(n, d, gMid)})
		}
		if err := addSeries(p, fmt.Sprintf("N = %.3gM", n/1e6), xy, line, palette[i%len(palette)]); err != nil {
			return err
		}
	}
	if err := save(p, filepath.Join(dir, "delta_vs_d.png")); err != nil {
		return err
	}

	// delta vs G, one colour per N
	p = newPlot(fmt.Sprintf("%s: delta vs G (D = %.3gM)", title, dMax/1e6), "group size G (log2 axis)", "delta (nats)")
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
	for i, n := range ns {
		var xy plotter.XYs
		for _, q := range use {
			if q.N == n && q.D == dMax {
				xy = append(xy, plotter.XY{X: q.G, Y: q.Delta})
			}
		}
		var line plotter.XYs
		for k := 0; k <= 40; k++ {
			g := gs[0] * math.Pow(gs[len(gs)-1]/gs[0], float64(k)/40)
			line = append(line, plotter.XY{X: g, Y: l.Delta(n, dMax, g)})
		}
		if err := addSeries(p, fmt.Sprintf("N = %.3gM", n/1e6), xy, line, palette[i%len(palette)]); err != nil {
			return err
		}
	}
	if err := save(p, filepath.Join(dir, "delta_vs_g.png")); err != nil {
		return err
	}

	// fitted vs measured
	p = newPlot(title+": fitted vs measured delta", "measured delta", "fitted delta")
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
	lo, hi := math.Inf(1), 0.0
	var xy plotter.XYs
	for _, q := range use {
		f := l.Delta(q.N, q.D, q.G)
		xy = append(xy, plotter.XY{X: q.Delta, Y: f})
		lo, hi = math.Min(lo, math.Min(q.Delta, f)), math.Max(hi, math.Max(q.Delta, f))
	}
	if err := addSeries(p, "runs", xy, plotter.XYs{{X: lo, Y: lo}, {X: hi, Y: hi}}, palette[0]); err != nil {
		return err
	}
	return save(p, filepath.Join(dir, "fitted_vs_measured.png"))
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

// addSeries draws measured points and the law's line in one colour.
func addSeries(p *plot.Plot, name string, pts, line plotter.XYs, c color.RGBA) error {
	if len(pts) > 0 {
		s, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		s.GlyphStyle.Color, s.GlyphStyle.Shape, s.GlyphStyle.Radius = c, draw.CircleGlyph{}, vg.Points(3)
		p.Add(s)
		p.Legend.Add(name, s)
	}
	l, err := plotter.NewLine(line)
	if err != nil {
		return err
	}
	l.Color = c
	l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
	p.Add(l)
	return nil
}

func save(p *plot.Plot, path string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp.png")
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
