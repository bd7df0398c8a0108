// Package scaling fits the QAT scaling law of arXiv 2505.14302 to sweep
// results: the loss QAT adds over full precision at N (non-embedding)
// parameters, D training tokens and weight group size G,
//
//	delta(N, D, G) = k * D^gD * (log2 G)^gG / N^gN,
//
// by least squares on log delta = log k + gD log D + gG log log2 G -
// gN log N (docs/algorithms.md, section 11), optionally with Huber's loss.
package scaling

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distuv"
)

// Point is one measured QAT run.
type Point struct {
	N, D, G float64
	Delta   float64
}

// Law holds the constants.
type Law struct {
	K, GN, GD, GG float64
}

// Delta is the law at a point.
func (l Law) Delta(n, d, g float64) float64 {
	return l.K * math.Pow(d, l.GD) * math.Pow(math.Log2(g), l.GG) / math.Pow(n, l.GN)
}

// Fit is a fitted law with its uncertainty.
type Fit struct {
	Law
	// CI95 are the half-widths of 95% confidence intervals of log k, gN,
	// gD and gG (Student t with n-4 degrees of freedom on the
	// least-squares covariance; for Huber, of the final weighted fit).
	CI95 [4]float64
	// R2 is the in-sample R^2 of log delta; RMSE its root mean square
	// residual (natural log).
	R2, RMSE float64
	N        int
}

// Options select the loss.
type Options struct {
	// Huber > 0 uses Huber's loss with this threshold in units of the
	// residuals' robust scale (1.345 is the usual choice), by iteratively
	// reweighted least squares; 0 is plain least squares.
	Huber float64
}

// ErrFewPoints is returned when fewer than five usable points remain.
var ErrFewPoints = errors.New("scaling: fewer than 5 points with delta > 0, N > 0, D > 0 and G > 2")

// design returns a point's row [1, log D, log log2 G, -log N].
func design(p Point) [4]float64 {
	return [4]float64{1, math.Log(p.D), math.Log(math.Log2(p.G)), -math.Log(p.N)}
}

// Usable reports whether a point can enter the log-linear fit.
func Usable(p Point) bool { return p.Delta > 0 && p.N > 0 && p.D > 1 && p.G > 2 }

// FitLaw fits the law to the usable points (the others are skipped: a
// delta <= 0, where QAT matched full precision within noise, has no log).
func FitLaw(pts []Point, o Options) (Fit, error) {
	var use []Point
	for _, p := range pts {
		if Usable(p) {
			use = append(use, p)
		}
	}
	n := len(use)
	if n < 5 {
		return Fit{}, ErrFewPoints
	}
	X := mat.NewDense(n, 4, nil)
	y := mat.NewVecDense(n, nil)
	for i, p := range use {
		r := design(p)
		X.SetRow(i, r[:])
		y.SetVec(i, math.Log(p.Delta))
	}
	w := make([]float64, n)
	for i := range w {
		w[i] = 1
	}
	var beta *mat.VecDense
	var cov *mat.SymDense
	var err error
	for it := 0; it < 50; it++ {
		prev := beta
		if beta, cov, err = wls(X, y, w); err != nil {
			return Fit{}, err
		}
		if o.Huber <= 0 {
			break
		}
		res := residuals(X, y, beta)
		s := mad(res) / 0.6745
		if s == 0 {
			break
		}
		for i, r := range res {
			if a := math.Abs(r) / s; a > o.Huber {
				w[i] = o.Huber / a
			} else {
				w[i] = 1
			}
		}
		if prev != nil && mat.EqualApprox(prev, beta, 1e-10) {
			break
		}
	}
	res := residuals(X, y, beta)
	var ss, st, mean float64
	for i := 0; i < n; i++ {
		mean += y.AtVec(i) / float64(n)
	}
	for i, r := range res {
		ss += r * r
		d := y.AtVec(i) - mean
		st += d * d
	}
	f := Fit{Law: Law{K: math.Exp(beta.AtVec(0)), GD: beta.AtVec(1), GG: beta.AtVec(2), GN: beta.AtVec(3)},
		RMSE: math.Sqrt(ss / float64(n)), N: n}
	if st > 0 {
		f.R2 = 1 - ss/st
	}
	if n > 4 {
		t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(n - 4)}.Quantile(0.975)
		for j := 0; j < 4; j++ {
			f.CI95[j] = t * math.Sqrt(cov.At(j, j))
		}
	}
	return f, nil
}

// wls solves weighted least squares and returns the coefficients and
// their covariance sigma^2 (X^T W X)^-1.
func wls(X *mat.Dense, y *mat.VecDense, w []float64) (*mat.VecDense, *mat.SymDense, error) {
	n, k := X.Dims()
	xtwx := mat.NewSymDense(k, nil)
	xw := mat.NewDense(n, k, nil)
	for i := 0; i < n; i++ {
		for j := 0; j < k; j++ {
			xw.Set(i, j, X.At(i, j)*w[i])
		}
	}
	var a mat.Dense
	a.Mul(X.T(), xw)
	for i := 0; i < k; i++ {
		for j := i; j < k; j++ {
			xtwx.SetSym(i, j, a.At(i, j))
		}
	}
	var chol mat.Cholesky
	if !chol.Factorize(xtwx) {
		return nil, nil, errors.New("scaling: the points do not determine the law (vary N, D and G)")
	}
	var xty mat.VecDense
	xty.MulVec(xw.T(), y)
	var beta mat.VecDense
	if err := chol.SolveVecTo(&beta, &xty); err != nil {
		return nil, nil, err
	}
	var ss, sw float64
	res := residuals(X, y, &beta)
	for i, r := range res {
		ss += w[i] * r * r
		sw += w[i]
	}
	sigma2 := ss / math.Max(float64(n-k), 1) * float64(n) / sw
	var inv mat.SymDense
	if err := chol.InverseTo(&inv); err != nil {
		return nil, nil, err
	}
	inv.ScaleSym(sigma2, &inv)
	return &beta, &inv, nil
}

func residuals(X *mat.Dense, y, beta *mat.VecDense) []float64 {
	var p mat.VecDense
	p.MulVec(X, beta)
	out := make([]float64, y.Len())
	for i := range out {
		out[i] = y.AtVec(i) - p.AtVec(i)
	}
	return out
}

// mad is the median absolute deviation from the median.
func mad(x []float64) float64 {
	m := median(x)
	d := make([]float64, len(x))
	for i, v := range x {
		d[i] = math.Abs(v - m)
	}
	return median(d)
}

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Score is the law's error on points it was not fitted to: R^2 and root
// mean square error of log delta, and the mean relative error of delta.
type Score struct {
	R2, RMSE, MeanRelErr float64
	N                    int
}

// Evaluate scores the law on pts (usable ones only).
func (l Law) Evaluate(pts []Point) Score {
	var ss, st, rel, mean float64
	var use []Point
	for _, p := range pts {
		if Usable(p) {
			use = append(use, p)
			mean += math.Log(p.Delta)
		}
	}
	if len(use) == 0 {
		return Score{}
	}
	mean /= float64(len(use))
	for _, p := range use {
		pred := l.Delta(p.N, p.D, p.G)
		r := math.Log(p.Delta) - math.Log(pred)
		ss += r * r
		d := math.Log(p.Delta) - mean
		st += d * d
		rel += math.Abs(pred-p.Delta) / p.Delta
	}
	s := Score{RMSE: math.Sqrt(ss / float64(len(use))), MeanRelErr: rel / float64(len(use)), N: len(use)}
	if st > 0 {
		s.R2 = 1 - ss/st
	}
	return s
}

// String reports the law with its intervals.
func (f Fit) String() string {
	return fmt.Sprintf("delta = k * D^gD * (log2 G)^gG / N^gN\n"+
		"  k  = %.4g (log k %.3f ± %.3f)\n  gN = %.3f ± %.3f\n  gD = %.3f ± %.3f\n  gG = %.3f ± %.3f\n"+
		"  in-sample R2 %.3f, RMSE of log delta %.3f, %d points",
		f.K, math.Log(f.K), f.CI95[0], f.GN, f.CI95[3], f.GD, f.CI95[1], f.GG, f.CI95[2], f.R2, f.RMSE, f.N)
}
