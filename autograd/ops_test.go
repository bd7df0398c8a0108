package autograd

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"qat/autograd/ref"
	"qat/kernels"
)

// gradCase runs one op on the tape and its float64 reference, then checks
// (1) values against the reference and (2) the tape's gradients of
// L = sum(R * out) (R random) against central finite differences of the
// reference in float64.
type gradCase struct {
	name   string
	inputs []*Var
	run    func(t *Tape, in []*Var) *Var
	ref    func(in [][]float64) []float64
	vtol   float64 // value tolerance, abs+rel
	gtol   float64 // gradient tolerance, abs+rel
}

func randVar(rng *rand.Rand, scale float64, shape ...int) *Var {
	v := NewParam(shape...)
	for i := range v.x {
		v.x[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// close reports whether got is within tol (absolute + relative to the
// reference's largest magnitude) and the max difference.
func closeTo(got []float32, want []float64, tol float64) (bool, float64) {
	var scale, maxd float64
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	for i := range want {
		maxd = math.Max(maxd, math.Abs(float64(got[i])-want[i]))
	}
	return maxd <= tol*(1+scale), maxd
}

func (c gradCase) check(t *testing.T, rng *rand.Rand) {
	t.Helper()
	tp := NewTape()
	ZeroGrad(c.inputs...)
	out := c.run(tp, c.inputs)
	in64 := make([][]float64, len(c.inputs))
	for i, v := range c.inputs {
		in64[i] = to64(v.x)
	}
	want := c.ref(in64)
	if len(want) != out.Size() {
		t.Fatalf("%s: output has %d values, reference %d", c.name, out.Size(), len(want))
	}
	if ok, d := closeTo(out.x, want, c.vtol); !ok {
		t.Errorf("%s: value max diff %.3g over tolerance %.1g", c.name, d, c.vtol)
	}
	R := make([]float64, len(want))
	g := tp.grad(out)
	for i := range R {
		R[i] = rng.NormFloat64()
		g[i] = float32(R[i])
	}
	for i := len(tp.back) - 1; i >= 0; i-- {
		tp.back[i]()
	}
	L := func() float64 {
		y := c.ref(in64)
		var s float64
		for i := range y {
			s += R[i] * y[i]
		}
		return s
	}
	for vi, v := range c.inputs {
		if !v.needGrad {
			continue
		}
		// Elementwise ops on large inputs: differences at a random sample of
		// at most 300 entries keep the test fast; the rest are not compared.
		idx := make([]int, v.Size())
		for j := range idx {
			idx[j] = j
		}
		if len(idx) > 300 {
			rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
			idx = idx[:300]
		}
		fd := make([]float64, len(idx))
		got := make([]float32, len(idx))
		for jj, j := range idx {
			got[jj] = v.GradData()[j]
			x0 := in64[vi][j]
			h := 1e-6 * math.Max(1, math.Abs(x0))
			in64[vi][j] = x0 + h
			lp := L()
			in64[vi][j] = x0 - h
			lm := L()
			in64[vi][j] = x0
			fd[jj] = (lp - lm) / (2 * h)
		}
		if ok, d := closeTo(got, fd, c.gtol); !ok {
			t.Errorf("%s: input %d gradient max diff %.3g over tolerance %.1g", c.name, vi, d, c.gtol)
		} else {
			t.Logf("%s: input %d gradient max diff %.2g", c.name, vi, d)
		}
	}
}

// forEachKernelSet runs f with every kernel set this CPU has active.
func forEachKernelSet(t *testing.T, f func(t *testing.T)) {
	saved := kernels.Active
	defer kernels.Use(saved)
	for _, s := range kernels.Variants() {
		kernels.Use(s)
		t.Run(s.Name, f)
	}
}

func TestOpsAgainstFloat64(t *testing.T) {
	forEachKernelSet(t, func(t *testing.T) {
		for _, threads := range []int{1, 2} {
			kernels.SetThreads(threads)
			rng := rand.New(rand.NewPCG(1, uint64(threads)))
			for _, c := range opCases(rng) {
				c.check(t, rng)
			}
		}
		kernels.SetThreads(1)
	})
}

func opCases(rng *rand.Rand) []gradCase {
	var cs []gradCase
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {13, 9, 17}, {33, 40, 19}} {
		rows, in, out := sh[0], sh[1], sh[2]
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("Linear %dx%d->%d", rows, in, out),
			inputs: []*Var{randVar(rng, 1, rows, in), randVar(rng, 1, out, in)},
			run:    func(t *Tape, v []*Var) *Var { return t.Linear(v[0], v[1]) },
			ref:    func(v [][]float64) []float64 { return ref.Linear(v[0], v[1], rows, in, out) },
			vtol:   1e-5, gtol: 1e-4,
		})
	}
	// LinearAdd: res + x W^T, with res a second input and with res = x.
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {13, 9, 17}, {33, 40, 19}} {
		rows, in, out := sh[0], sh[1], sh[2]
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("LinearAdd %dx%d->%d", rows, in, out),
			inputs: []*Var{randVar(rng, 1, rows, in), randVar(rng, 1, out, in), randVar(rng, 1, rows, out)},
			run:    func(t *Tape, v []*Var) *Var { return t.LinearAdd(v[0], v[1], v[2]) },
			ref: func(v [][]float64) []float64 {
				y := ref.Linear(v[0], v[1], rows, in, out)
				for i := range y {
					y[i] += v[2][i]
				}
				return y
			},
			vtol: 1e-5, gtol: 1e-4,
		})
	}
	cs = append(cs, gradCase{
		name:   "LinearAdd(x, W, x)",
		inputs: []*Var{randVar(rng, 1, 6, 11), randVar(rng, 1, 11, 11)},
		run:    func(t *Tape, v []*Var) *Var { return t.LinearAdd(v[0], v[1], v[0]) },
		ref: func(v [][]float64) []float64 {
			y := ref.Linear(v[0], v[1], 6, 11, 11)
			for i := range y {
				y[i] += v[0][i]
			}
			return y
		},
		vtol: 1e-5, gtol: 1e-4,
	}, gradCase{
		// A temporary residual borrows the output's gradient and is then
		// added to by its other use.
		name:   "LinearAdd of a temporary residual",
		inputs: []*Var{randVar(rng, 1, 6, 5), randVar(rng, 1, 7, 5), randVar(rng, 1, 6, 7)},
		run: func(t *Tape, v []*Var) *Var {
			r := t.Scale(v[2], 2)
			return t.Add(t.Scale(r, 0.5), t.LinearAdd(v[0], v[1], r))
		},
		ref: func(v [][]float64) []float64 {
			y := ref.Linear(v[0], v[1], 6, 5, 7)
			for i := range y {
				y[i] += 3 * v[2][i]
			}
			return y
		},
		vtol: 1e-5, gtol: 1e-4,
	})
	for _, mm := range []struct {
		batch, ar, ac, br, bc int
		ta, tb                bool
	}{{1, 3, 5, 5, 4, false, false}, {2, 5, 3, 5, 4, true, false}, {3, 3, 5, 4, 5, false, true}, {2, 7, 3, 6, 7, true, true}} {
		mm := mm
		as, bs := []int{mm.ar, mm.ac}, []int{mm.br, mm.bc}
		if mm.batch > 1 {
			as, bs = []int{mm.batch, mm.ar, mm.ac}, []int{mm.batch, mm.br, mm.bc}
		}
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("MatMul %v^%v x %v^%v", as, mm.ta, bs, mm.tb),
			inputs: []*Var{randVar(rng, 1, as...), randVar(rng, 1, bs...)},
			run:    func(t *Tape, v []*Var) *Var { return t.MatMul(v[0], v[1], mm.ta, mm.tb) },
			ref: func(v [][]float64) []float64 {
				return ref.MatMul(v[0], v[1], mm.batch, mm.ar, mm.ac, mm.br, mm.bc, mm.ta, mm.tb)
			},
			vtol: 1e-5, gtol: 1e-4,
		})
	}
	for _, sh := range [][2]int{{1, 1}, {5, 7}, {17, 33}, {9, 256}} {
		rows, d := sh[0], sh[1]
		w := randVar(rng, 1, d)
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("RMSNorm %dx%d", rows, d),
			inputs: []*Var{randVar(rng, 2, rows, d), w},
			run:    func(t *Tape, v []*Var) *Var { return t.RMSNorm(v[0], v[1], 1e-5) },
			ref:    func(v [][]float64) []float64 { return ref.RMSNorm(v[0], v[1], rows, d, 1e-5) },
			vtol:   1e-5, gtol: 2e-4,
		})
	}
	for _, n := range []int{1, 7, 33, 1000, 20000} {
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("SwiGLU %d", n),
			inputs: []*Var{randVar(rng, 3, n), randVar(rng, 1, n)},
			run:    func(t *Tape, v []*Var) *Var { return t.SwiGLU(v[0], v[1]) },
			ref:    func(v [][]float64) []float64 { return ref.SwiGLU(v[0], v[1]) },
			vtol:   1e-6, gtol: 1e-5,
		}, gradCase{
			name:   fmt.Sprintf("SiLU %d", n),
			inputs: []*Var{randVar(rng, 4, n)},
			run:    func(t *Tape, v []*Var) *Var { return t.SiLU(v[0]) },
			ref:    func(v [][]float64) []float64 { return ref.SiLU(v[0]) },
			vtol:   1e-6, gtol: 1e-5,
		})
	}
	// SwiGLUCat: packed weights take the fused path, separate ones the
	// LinearCat + SwiGLU composition.
	for _, sh := range [][4]int{{1, 1, 1, 1}, {3, 5, 7, 1}, {13, 9, 17, 1}, {13, 9, 17, 0}, {33, 40, 19, 1}} {
		rows, in, f, pack := sh[0], sh[1], sh[2], sh[3] == 1
		ws := []*Var{randVar(rng, 1, f, in), randVar(rng, 1, f, in)}
		if pack {
			Pack(ws)
		}
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("SwiGLUCat %dx%d->%d packed %v", rows, in, f, pack),
			inputs: []*Var{randVar(rng, 1, rows, in), ws[0], ws[1]},
			run:    func(t *Tape, v []*Var) *Var { return t.SwiGLUCat(v[0], v[1], v[2]) },
			ref: func(v [][]float64) []float64 {
				return ref.SwiGLU(ref.Linear(v[0], v[1], rows, in, f), ref.Linear(v[0], v[2], rows, in, f))
			},
			vtol: 1e-5, gtol: 1e-4,
		})
	}
	for _, sh := range [][4]int{{2, 5, 3, 4}, {1, 9, 2, 8}, {3, 17, 4, 2}} {
		B, T, heads, hd := sh[0], sh[1], sh[2], sh[3]
		theta := 10000.0
		if hd == 2 {
			theta = 500000
		}
		tab := NewRoPETable(hd, 64, theta)
		pos := make([]int32, B*T)
		for i := range pos {
			pos[i] = int32(i%T + 40*(i/T%2)) // a second batch row starts at 40: positions need not start at 0
		}
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("RoPE B%d T%d H%d hd%d", B, T, heads, hd),
			inputs: []*Var{randVar(rng, 1, B, T, heads*hd)},
			run:    func(t *Tape, v []*Var) *Var { return t.RoPE(v[0], tab, pos, heads) },
			ref:    func(v [][]float64) []float64 { return ref.RoPE(v[0], pos, heads, hd, theta) },
			vtol:   1e-5, gtol: 1e-4,
		})
	}
	for _, sh := range [][5]int{{1, 1, 1, 1, 4}, {2, 7, 4, 4, 6}, {2, 9, 4, 2, 5}, {1, 13, 8, 2, 8}, {3, 5, 4, 1, 3}, {1, 33, 2, 2, 16}} {
		B, T, heads, kvh, hd := sh[0], sh[1], sh[2], sh[3], sh[4]
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("Attention B%d T%d H%d KV%d hd%d", B, T, heads, kvh, hd),
			inputs: []*Var{randVar(rng, 1, B, T, heads*hd), randVar(rng, 1, B, T, kvh*hd), randVar(rng, 1, B, T, kvh*hd)},
			run:    func(t *Tape, v []*Var) *Var { return t.Attention(v[0], v[1], v[2], heads, kvh) },
			ref:    func(v [][]float64) []float64 { return ref.Attention(v[0], v[1], v[2], B, T, heads, kvh, hd) },
			vtol:   1e-5, gtol: 1e-4,
		})
	}
	// One input as query, key and value: its three gradients add up.
	for _, sh := range [][3]int{{2, 9, 2}, {1, 70, 1}} {
		B, T, heads := sh[0], sh[1], sh[2]
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("Attention(x, x, x) B%d T%d H%d", B, T, heads),
			inputs: []*Var{randVar(rng, 1, B, T, heads*4)},
			run:    func(t *Tape, v []*Var) *Var { return t.Attention(v[0], v[0], v[0], heads, heads) },
			ref:    func(v [][]float64) []float64 { return ref.Attention(v[0], v[0], v[0], B, T, heads, heads, 4) },
			vtol:   1e-5, gtol: 1e-4,
		})
	}
	// AttentionCat against Linear, RoPE and Attention composed in float64:
	// packed weights (the fused path) and separate ones (the composition),
	// GQA ratios 1, 2 and 4, odd lengths.
	for _, sh := range [][7]int{{1, 1, 1, 1, 4, 3, 1}, {2, 7, 4, 4, 6, 5, 1}, {2, 9, 4, 2, 4, 7, 1}, {1, 13, 8, 2, 2, 9, 1},
		{3, 5, 4, 1, 2, 6, 1}, {2, 9, 4, 2, 4, 7, 0}} {
		B, T, heads, kvh, hd, d, pack := sh[0], sh[1], sh[2], sh[3], sh[4], sh[5], sh[6] == 1
		tab := NewRoPETable(hd, 64, 10000)
		pos := make([]int32, B*T)
		for i := range pos {
			pos[i] = int32(i%T + 20*(i/T%2))
		}
		ws := []*Var{randVar(rng, 1, heads*hd, d), randVar(rng, 1, kvh*hd, d), randVar(rng, 1, kvh*hd, d)}
		if pack {
			Pack(ws)
		}
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("AttentionCat B%d T%d H%d KV%d hd%d d%d packed %v", B, T, heads, kvh, hd, d, pack),
			inputs: []*Var{randVar(rng, 1, B, T, d), ws[0], ws[1], ws[2]},
			run: func(t *Tape, v []*Var) *Var {
				return t.AttentionCat(v[0], v[1], v[2], v[3], tab, pos, heads, kvh)
			},
			ref: func(v [][]float64) []float64 {
				q := ref.RoPE(ref.Linear(v[0], v[1], B*T, d, heads*hd), pos, heads, hd, 10000)
				k := ref.RoPE(ref.Linear(v[0], v[2], B*T, d, kvh*hd), pos, kvh, hd, 10000)
				return ref.Attention(q, k, ref.Linear(v[0], v[3], B*T, d, kvh*hd), B, T, heads, kvh, hd)
			},
			vtol: 1e-5, gtol: 1e-4,
		})
	}
	for _, sh := range [][2]int{{1, 2}, {7, 11}, {33, 300}} {
		rows, V := sh[0], sh[1]
		tg := make([]int32, rows)
		for i := range tg {
			tg[i] = int32(rng.IntN(V))
		}
		ignore := int32(-100)
		if rows > 2 {
			tg[1] = ignore
		}
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("CrossEntropy %dx%d", rows, V),
			inputs: []*Var{randVar(rng, 3, rows, V)},
			run:    func(t *Tape, v []*Var) *Var { return t.CrossEntropy(v[0], tg, ignore) },
			ref:    func(v [][]float64) []float64 { return ref.CrossEntropy(v[0], tg, V, ignore) },
			vtol:   1e-5, gtol: 1e-5,
		})
	}
	// Logits that are temporaries take CrossEntropy's kept gradient as
	// their own when nothing else reached them (the backward seeded with 1
	// and, through Scale, with 0.7); used by two losses, the second adds.
	{
		rows, V := 9, 13
		tg := make([]int32, rows)
		for i := range tg {
			tg[i] = int32(rng.IntN(V))
		}
		scaled := func(v []float64, s float64) []float64 {
			y := make([]float64, len(v))
			for i := range v {
				y[i] = s * v[i]
			}
			return y
		}
		cs = append(cs, gradCase{
			name:   "CrossEntropy of a temporary",
			inputs: []*Var{randVar(rng, 2, rows, V)},
			run:    func(t *Tape, v []*Var) *Var { return t.CrossEntropy(t.Scale(v[0], 1.5), tg, -100) },
			ref:    func(v [][]float64) []float64 { return ref.CrossEntropy(scaled(v[0], 1.5), tg, V, -100) },
			vtol:   1e-5, gtol: 1e-5,
		}, gradCase{
			name:   "CrossEntropy of a temporary, scaled, used twice",
			inputs: []*Var{randVar(rng, 2, rows, V)},
			run: func(t *Tape, v []*Var) *Var {
				y := t.Scale(v[0], 1.5)
				a := t.CrossEntropy(y, tg, -100) // its backward runs second and adds
				return t.Add(a, t.Scale(t.CrossEntropy(y, tg, -100), 0.7))
			},
			ref:  func(v [][]float64) []float64 { return scaled(ref.CrossEntropy(scaled(v[0], 1.5), tg, V, -100), 1.7) },
			vtol: 1e-5, gtol: 1e-5,
		})
	}
	for _, sh := range [][3]int{{5, 3, 4}, {17, 8, 40}} {
		V, d, n := sh[0], sh[1], sh[2]
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(rng.IntN(V)) // repeats: the scatter-add must sum them
		}
		cs = append(cs, gradCase{
			name:   fmt.Sprintf("Embedding %dx%d, %d ids", V, d, n),
			inputs: []*Var{randVar(rng, 1, V, d)},
			run:    func(t *Tape, v []*Var) *Var { return t.Embedding(v[0], ids, n, d) },
			ref:    func(v [][]float64) []float64 { return ref.Embedding(v[0], ids, d) },
			vtol:   0, gtol: 1e-6,
		})
	}
	a, b := randVar(rng, 1, 3, 5), randVar(rng, 1, 3, 5)
	cs = append(cs, gradCase{
		name: "Add+Scale, a used twice", inputs: []*Var{a, b},
		run: func(t *Tape, v []*Var) *Var { return t.Add(t.Scale(v[0], -2.5), t.Add(v[0], v[1])) },
		ref: func(v [][]float64) []float64 {
			y := make([]float64, len(v[0]))
			for i := range y {
				y[i] = -2.5*v[0][i] + v[0][i] + v[1][i]
			}
			return y
		},
		vtol: 1e-6, gtol: 1e-6,
	})
	// SwiGLU with gradients that are not fresh: one input used twice, and
	// an input whose gradient another op has already written.
	cs = append(cs, gradCase{
		name: "SwiGLU(x, x)", inputs: []*Var{randVar(rng, 2, 4, 9)},
		run:  func(t *Tape, v []*Var) *Var { return t.SwiGLU(v[0], v[0]) },
		ref:  func(v [][]float64) []float64 { return ref.SwiGLU(v[0], v[0]) },
		vtol: 1e-6, gtol: 1e-5,
	}, gradCase{
		name: "SwiGLU after a sibling", inputs: []*Var{randVar(rng, 2, 4, 9), randVar(rng, 1, 4, 9)},
		run: func(t *Tape, v []*Var) *Var {
			g := t.Scale(v[0], 1.5)
			return t.Add(t.SwiGLU(g, t.Scale(v[1], -1)), t.Scale(g, 2))
		},
		ref: func(v [][]float64) []float64 {
			g, u := make([]float64, len(v[0])), make([]float64, len(v[1]))
			for i := range g {
				g[i], u[i] = 1.5*v[0][i], -v[1][i]
			}
			y := ref.SwiGLU(g, u)
			for i := range y {
				y[i] += 2 * g[i]
			}
			return y
		},
		vtol: 1e-6, gtol: 1e-5,
	})
	// A temporary as Add's first input borrows the output's gradient buffer:
	// check it with the temporary used again (y + 2y) and twice (y + y).
	cs = append(cs, gradCase{
		name: "Add of a reused temporary", inputs: []*Var{randVar(rng, 1, 3, 7)},
		run: func(t *Tape, v []*Var) *Var {
			y := t.SiLU(v[0])
			return t.Add(t.Add(y, t.Scale(y, 2)), t.Add(y, y))
		},
		ref: func(v [][]float64) []float64 {
			y := ref.SiLU(v[0])
			for i := range y {
				y[i] *= 5
			}
			return y
		},
		vtol: 1e-6, gtol: 1e-5,
	})
	return cs
}

func TestShapeMismatchNamesBothShapes(t *testing.T) {
	tp := NewTape()
	a, b := NewParam(2, 3), NewParam(3, 2)
	for name, f := range map[string]func(){
		"Add":    func() { tp.Add(a, b) },
		"Linear": func() { tp.Linear(a, NewParam(4, 2)) },
		"MatMul": func() { tp.MatMul(a, NewParam(2, 3), false, false) },
		"SwiGLU": func() { tp.SwiGLU(a, b) },
	} {
		func() {
			defer func() {
				r := recover()
				msg, _ := r.(string)
				if r == nil || !(contains(msg, "[2 3]") && (contains(msg, "[3 2]") || contains(msg, "[4 2]") || contains(msg, "[2 3]"))) {
					t.Errorf("%s: panic %v, want a message naming both shapes", name, r)
				}
			}()
			f()
		}()
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestPoolReuse: a second identical step reuses every buffer of the first.
func TestPoolReuse(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	x, w := randVar(rng, 1, 4, 8), randVar(rng, 1, 8)
	tp := NewTape()
	step := func() float32 {
		y := tp.SiLU(tp.RMSNorm(x, w, 1e-5))
		l := tp.CrossEntropy(y, []int32{1, 2, 3, 4}, -1)
		tp.Backward(l)
		v := l.x[0]
		tp.Reset()
		return v
	}
	first := step()
	allocs := testing.AllocsPerRun(10, func() {
		if step() != first {
			t.Fatal("loss changed between identical steps")
		}
	})
	// What remains is a few small objects per op (the backward closure,
	// the closures handed to kernels.For), independent of tensor sizes.
	if allocs > 50 {
		t.Errorf("steady-state step allocates %.0f times, want the pool to serve it", allocs)
	}
}

// TestZeroGradLazy: after ZeroGrad, a second identical step gives the same
// gradients as the first, whether ops overwrite (Linear's sgemm) or add
// (Embedding, RMSNorm) into them, and a parameter no gradient reaches reads
// as zero.
func TestZeroGradLazy(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 7))
	table, w, nw, unused := randVar(rng, 1, 11, 8), randVar(rng, 1, 5, 8), randVar(rng, 1, 8), randVar(rng, 1, 3)
	ids := []int32{1, 4, 4, 9}
	tp := NewTape()
	step := func() [][]float32 {
		ZeroGrad(table, w, nw, unused)
		x := tp.Embedding(table, ids, 4, 8)
		y := tp.Linear(tp.RMSNorm(x, nw, 1e-5), w)
		tp.Backward(tp.CrossEntropy(y, []int32{0, 1, 2, 3}, -1))
		tp.Reset()
		return [][]float32{append([]float32(nil), table.GradData()...), append([]float32(nil), w.GradData()...),
			append([]float32(nil), nw.GradData()...), append([]float32(nil), unused.GradData()...)}
	}
	copy(unused.GradData(), []float32{1, 2, 3})
	first := step()
	second := step()
	for i := range first {
		if d := maxAbsDiff(first[i], second[i]); d != 0 {
			t.Errorf("tensor %d: second step differs by %g", i, d)
		}
	}
	for _, v := range first[3] {
		if v != 0 {
			t.Fatalf("unreached gradient %v, want zeros", first[3])
		}
	}
}

// TestLinearCat: the joint projection gives each x W_i^T and, for
// L = sum_i R_i . out_i, the gradients dx = sum_i R_i W_i and dW_i = R_i^T x,
// computed here in float64; with packed (adjacent) and separate weights, a
// frozen weight, and fresh or accumulating gradients.
func TestLinearCat(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 9))
	rows, in := 13, 10
	outsz := []int{7, 3, 5}
	for _, tc := range []struct {
		name         string
		pack, freeze bool
		accumulate   bool
	}{{"packed", true, false, false}, {"separate", false, false, false}, {"packed, frozen k", true, true, false},
		{"packed, accumulating", true, false, true}} {
		x := randVar(rng, 1, rows, in)
		ws := []*Var{randVar(rng, 1, outsz[0], in), randVar(rng, 1, outsz[1], in), randVar(rng, 1, outsz[2], in)}
		if tc.pack {
			vals := [][]float32{ws[0].Data(), ws[1].Data(), ws[2].Data()}
			saved := make([][]float32, 3)
			for i := range vals {
				saved[i] = append([]float32(nil), vals[i]...)
			}
			Pack(ws)
			for i := range ws {
				if maxAbsDiff(ws[i].Data(), saved[i]) != 0 {
					t.Fatal("Pack changed values")
				}
			}
			if !adjacent([][]float32{ws[0].Data(), ws[1].Data(), ws[2].Data()}) {
				t.Fatal("packed weights not adjacent")
			}
		}
		if tc.freeze {
			ws[1].SetRequiresGrad(false)
		}
		ZeroGrad(append([]*Var{x}, ws...)...)
		prior := make([][]float32, 3)
		if tc.accumulate { // gradients already hold a previous micro-batch's
			for i, w := range ws {
				if w.RequiresGrad() {
					for j := range w.GradData() {
						w.GradData()[j] = float32(j % 3)
					}
				}
				prior[i] = append([]float32(nil), w.GradData()...)
			}
		}
		tp := NewTape()
		outs := tp.LinearCat(x, ws...)
		x64 := to64(x.Data())
		dx := make([]float64, rows*in)
		for i, o := range outs {
			want := ref.Linear(x64, to64(ws[i].Data()), rows, in, outsz[i])
			if ok, d := closeTo(o.Data(), want, 1e-5); !ok {
				t.Errorf("%s: output %d differs by %g", tc.name, i, d)
			}
			R := make([]float64, rows*outsz[i])
			g := tp.grad(o)
			for j := range R {
				R[j] = rng.NormFloat64()
				g[j] = float32(R[j])
			}
			d := ref.MatMul(R, to64(ws[i].Data()), 1, rows, outsz[i], outsz[i], in, false, false)
			for j := range dx {
				dx[j] += d[j]
			}
			if ws[i].RequiresGrad() {
				dw := ref.MatMul(R, x64, 1, rows, outsz[i], rows, in, true, false)
				for j := range dw {
					if tc.accumulate {
						dw[j] += float64(prior[i][j])
					}
				}
				defer func(i int, dw []float64) {
					if ok, d := closeTo(ws[i].GradData(), dw, 1e-5); !ok {
						t.Errorf("%s: dW %d differs by %g", tc.name, i, d)
					}
				}(i, dw)
			}
		}
		for i := len(tp.back) - 1; i >= 0; i-- {
			tp.back[i]()
		}
		if ok, d := closeTo(x.GradData(), dx, 1e-5); !ok {
			t.Errorf("%s: dx differs by %g", tc.name, d)
		}
	}
}
