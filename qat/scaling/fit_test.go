package scaling

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// grid returns the law's deltas on a sweep-like grid with multiplicative
// log-normal noise of the given sigma.
func grid(l Law, sigma float64, rng *rand.Rand) []Point {
	var pts []Point
	for _, n := range []float64{2e5, 8e5, 3e6} {
		for _, d := range []float64{3e5, 1e6, 3e6} {
			for _, g := range []float64{32, 128, 512} {
				pts = append(pts, Point{N: n, D: d, G: g, Delta: l.Delta(n, d, g) * math.Exp(sigma*rng.NormFloat64())})
			}
		}
	}
	return pts
}

// TestFitRecoversLaw: constants drawn into synthetic data with 5% noise
// come back within their 95% intervals and within 0.1 of each exponent,
// for plain least squares and Huber; noise-free data exactly.
func TestFitRecoversLaw(t *testing.T) {
	want := Law{K: 3.2, GN: 0.35, GD: 0.2, GG: 1.1}
	for _, huber := range []float64{0, 1.345} {
		rng := rand.New(rand.NewPCG(1, 2))
		f, err := FitLaw(grid(want, 0.05, rng), Options{Huber: huber})
		if err != nil {
			t.Fatal(err)
		}
		got := [4]float64{math.Log(f.K), f.GD, f.GG, f.GN}
		exp := [4]float64{math.Log(want.K), want.GD, want.GG, want.GN}
		for i := range got {
			if math.Abs(got[i]-exp[i]) > 1.5*f.CI95[i] && math.Abs(got[i]-exp[i]) > 0.02 {
				t.Errorf("huber %g: coefficient %d = %.4f ± %.4f, want %.4f", huber, i, got[i], f.CI95[i], exp[i])
			}
			if i > 0 && math.Abs(got[i]-exp[i]) > 0.1 {
				t.Errorf("huber %g: exponent %d = %.4f, want %.4f within 0.1", huber, i, got[i], exp[i])
			}
		}
		if f.R2 < 0.95 {
			t.Errorf("huber %g: R2 %.3f", huber, f.R2)
		}
		t.Logf("huber %g: %v", huber, f)
	}
	f, err := FitLaw(grid(want, 0, rand.New(rand.NewPCG(3, 4))), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(f.GN-want.GN) > 1e-9 || math.Abs(f.GD-want.GD) > 1e-9 || math.Abs(f.GG-want.GG) > 1e-9 || math.Abs(f.K/want.K-1) > 1e-9 {
		t.Errorf("noise-free fit %+v, want %+v", f.Law, want)
	}
}

// TestHuberResistsOutliers: three points off by 5x pull least squares
// away from the law; Huber's loss stays close to it.
func TestHuberResistsOutliers(t *testing.T) {
	want := Law{K: 1, GN: 0.4, GD: 0.3, GG: 1}
	pts := grid(want, 0.02, rand.New(rand.NewPCG(5, 6)))
	for _, i := range []int{2, 11, 20} {
		pts[i].Delta *= 5
	}
	ls, err := FitLaw(pts, Options{})
	if err != nil {
		t.Fatal(err)
	}
	hu, err := FitLaw(pts, Options{Huber: 1.345})
	if err != nil {
		t.Fatal(err)
	}
	errOf := func(f Fit) float64 {
		return math.Abs(f.GN-want.GN) + math.Abs(f.GD-want.GD) + math.Abs(f.GG-want.GG)
	}
	if errOf(hu) >= errOf(ls) || errOf(hu) > 0.1 {
		t.Errorf("exponent error: huber %.3f, least squares %.3f", errOf(hu), errOf(ls))
	}
}

// TestEvaluateAndUsable: held-out scoring of the true law on its own
// noise-free points is perfect; unusable points are skipped, and too few
// points are an error.
func TestEvaluateAndUsable(t *testing.T) {
	l := Law{K: 2, GN: 0.3, GD: 0.2, GG: 1}
	s := l.Evaluate(grid(l, 0, rand.New(rand.NewPCG(7, 8))))
	if s.RMSE > 1e-12 || s.MeanRelErr > 1e-12 || math.Abs(s.R2-1) > 1e-12 || s.N != 27 {
		t.Errorf("score %+v", s)
	}
	pts := []Point{{1e5, 1e5, 32, -0.01}, {1e5, 1e5, 2, 0.1}, {1e5, 1e5, 32, 0.1}}
	if _, err := FitLaw(pts, Options{}); err != ErrFewPoints {
		t.Errorf("err %v, want ErrFewPoints", err)
	}
}

// TestPlots writes the three PNGs.
func TestPlots(t *testing.T) {
	l := Law{K: 2, GN: 0.3, GD: 0.2, GG: 1}
	dir := t.TempDir()
	if err := Plots(dir, grid(l, 0.05, rand.New(rand.NewPCG(9, 10))), l, "synthetic"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"delta_vs_d.png", "delta_vs_g.png", "fitted_vs_measured.png"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
			t.Errorf("%s: %d bytes, %v", f, len(b), err)
		}
	}
}
