package gorgonia

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"qat/autograd"
	"qat/kernels"
	"qat/qat"
)

// input is a test input: its values (bound to the graph's node, so
// changing them changes the next run) and whether it takes a gradient.
type input struct {
	shape []int
	x     []float32
	grad  bool
}

func randInput(rng *rand.Rand, std float64, shape ...int) input {
	n := 1
	for _, d := range shape {
		n *= d
	}
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * std)
	}
	return input{shape, x, true}
}

func idsInput(rng *rand.Rand, vocab, n int) input {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.IntN(vocab))
	}
	return input{[]int{n}, x, false}
}

// graph is f over nodes bound to the inputs, with the scalar cost
// sum(R * f) (f itself when f is a scalar).
type graph struct {
	g     *G.ExprGraph
	nodes []*G.Node
	out   *G.Node
	cost  *G.Node
}

func build(t *testing.T, ins []input, R []float32, f func(in []*G.Node) (*G.Node, error)) *graph {
	t.Helper()
	gr := &graph{g: G.NewGraph()}
	for i, in := range ins {
		val := tensor.New(tensor.WithShape(in.shape...), tensor.WithBacking(in.x))
		gr.nodes = append(gr.nodes, G.NewTensor(gr.g, tensor.Float32, len(in.shape), G.WithShape(in.shape...),
			G.WithName(string(rune('a'+i))), G.WithValue(val)))
	}
	out, err := f(gr.nodes)
	if err != nil {
		t.Fatal(err)
	}
	gr.out, gr.cost = out, out
	if !out.IsScalar() {
		r := G.NewTensor(gr.g, tensor.Float32, len(out.Shape()), G.WithShape(out.Shape()...), G.WithName("R"),
			G.WithValue(tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(R))))
		gr.cost = G.Must(G.Sum(G.Must(G.HadamardProd(out, r))))
	}
	return gr
}

func scalar(v G.Value) float64 {
	switch v := v.(type) {
	case *G.F32:
		return float64(*v)
	case tensor.Tensor:
		if s, ok := v.Data().(float32); ok {
			return float64(s)
		}
		return float64(v.Data().([]float32)[0])
	}
	panic("not a scalar")
}

// symbolic runs the graph and the gradients of its cost on the
// TapeMachine (SymDiff), lisp on the LispMachine (DoDiff); both return the
// output and the inputs' gradients.
func (gr *graph) gradients(t *testing.T, ins []input, lisp bool) ([]float32, [][]float32) {
	t.Helper()
	var wrt G.Nodes
	for i, in := range ins {
		if in.grad {
			wrt = append(wrt, gr.nodes[i])
		}
	}
	var m G.VM
	if lisp {
		m = G.NewLispMachine(gr.g)
	} else {
		if _, err := G.Grad(gr.cost, wrt...); err != nil {
			t.Fatal(err)
		}
		m = G.NewTapeMachine(gr.g)
	}
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	out, err := floats(gr.out.Op(), []G.Value{gr.out.Value()})
	if err != nil {
		t.Fatal(err)
	}
	grads := make([][]float32, len(ins))
	for i, in := range ins {
		if !in.grad {
			continue
		}
		gv, err := gr.nodes[i].Grad()
		if err != nil {
			t.Fatal(err)
		}
		g, err := floats(gr.nodes[i].Op(), []G.Value{gv})
		if err != nil {
			t.Fatal(err)
		}
		grads[i] = append([]float32(nil), g[0]...)
	}
	return append([]float32(nil), out[0]...), grads
}

// numeric is the central difference of the cost in input i, element j.
func numeric(t *testing.T, f func() float64, x []float32, j int, h float32) float64 {
	old := x[j]
	x[j] = old + h
	up := f()
	x[j] = old - h
	down := f()
	x[j] = old
	return (up - down) / float64(2*h)
}

// TestOpsFiniteDifferences checks the Llama ops' gradients, on both of
// Gorgonia's differentiation modes (SymDiff on the TapeMachine, DoDiff on
// the LispMachine), against central differences of a forward-only graph.
func TestOpsFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rope := autograd.NewRoPETable(8, 16, 10000)
	const B, T = 2, 5
	for _, c := range []struct {
		name string
		ins  []input
		f    func(in []*G.Node) (*G.Node, error)
	}{
		{"Embedding", []input{randInput(rng, 1, 11, 6), idsInput(rng, 11, 9)},
			func(in []*G.Node) (*G.Node, error) { return Embedding(in[0], in[1]) }},
		{"RMSNorm", []input{randInput(rng, 1, 7, 12), randInput(rng, 1, 12)},
			func(in []*G.Node) (*G.Node, error) { return RMSNorm(in[0], in[1], 1e-5) }},
		{"RoPE", []input{randInput(rng, 1, B*T, 16)},
			func(in []*G.Node) (*G.Node, error) { return RoPE(in[0], rope, T, 2) }},
		{"CausalSoftmax", []input{randInput(rng, 1, 3, T, T)},
			func(in []*G.Node) (*G.Node, error) { return CausalSoftmax(in[0], 0.7) }},
		{"CrossEntropy", []input{randInput(rng, 2, 6, 13), idsInput(rng, 13, 6)},
			func(in []*G.Node) (*G.Node, error) { return CrossEntropy(in[0], in[1], -100) }},
		{"SwiGLU", []input{randInput(rng, 1.5, 4, 9), randInput(rng, 1, 4, 9)},
			func(in []*G.Node) (*G.Node, error) { return SwiGLU(in[0], in[1]) }},
		{"Attention (grouped-query)", []input{randInput(rng, 1, B*T, 16), randInput(rng, 1, B*T, 8), randInput(rng, 1, B*T, 8)},
			func(in []*G.Node) (*G.Node, error) { return Attention(in[0], in[1], in[2], B, T, 4, 2) }},
		{"ComposedAttention", []input{randInput(rng, 1, B*T, 16), randInput(rng, 1, B*T, 16), randInput(rng, 1, B*T, 16)},
			func(in []*G.Node) (*G.Node, error) { return ComposedAttention(in[0], in[1], in[2], B, T, 2) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Output size from a first build; R weighs the outputs.
			probe := build(t, c.ins, nil, c.f)
			R := make([]float32, max(probe.out.Shape().TotalSize(), 1))
			for i := range R {
				R[i] = float32(rng.NormFloat64())
			}
			_, tapeG := build(t, c.ins, R, c.f).gradients(t, c.ins, false)
			_, lispG := build(t, c.ins, R, c.f).gradients(t, c.ins, true)

			fwd := build(t, c.ins, R, c.f)
			m := G.NewTapeMachine(fwd.g)
			defer m.Close()
			cost := func() float64 {
				defer m.Reset()
				if err := m.RunAll(); err != nil {
					t.Fatal(err)
				}
				return scalar(fwd.cost.Value())
			}
			for i, in := range c.ins {
				if !in.grad {
					continue
				}
				if d := relDiff(tapeG[i], lispG[i]); d > 1e-6 {
					t.Errorf("input %d: SymDiff and DoDiff gradients differ by %.2g", i, d)
				}
				for k := 0; k < 12; k++ {
					j := rng.IntN(len(in.x))
					num := numeric(t, cost, in.x, j, 1e-2)
					if got := float64(tapeG[i][j]); math.Abs(got-num) > 2e-3+2e-2*math.Abs(num) {
						t.Errorf("input %d element %d: gradient %.5f, finite difference %.5f", i, j, got, num)
					}
				}
			}
		})
	}
}

// TestComposedMatchesFused: Gorgonia's own Reshape/Transpose/BatchedMatMul
// attention and Sigmoid/HadamardProd SwiGLU give the fused ops' values
// and gradients within float32 rounding.
func TestComposedMatchesFused(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const B, T, H = 2, 40, 4 // T > 32: the fused kernel's query blocks
	ins := []input{randInput(rng, 1, B*T, H*8), randInput(rng, 1, B*T, H*8), randInput(rng, 1, B*T, H*8)}
	R := make([]float32, B*T*H*8)
	for i := range R {
		R[i] = float32(rng.NormFloat64())
	}
	fo, fg := build(t, ins, R, func(in []*G.Node) (*G.Node, error) { return Attention(in[0], in[1], in[2], B, T, H, H) }).gradients(t, ins, false)
	co, cg := build(t, ins, R, func(in []*G.Node) (*G.Node, error) { return ComposedAttention(in[0], in[1], in[2], B, T, H) }).gradients(t, ins, false)
	if d := relDiff(fo, co); d > 1e-6 {
		t.Errorf("attention values differ by %.2g", d)
	}
	for i := range fg {
		if d := relDiff(fg[i], cg[i]); d > 1e-5 {
			t.Errorf("attention gradient %d differs by %.2g", i, d)
		}
	}
	sw := ins[:2]
	so, sg := build(t, sw, R, func(in []*G.Node) (*G.Node, error) { return SwiGLU(in[0], in[1]) }).gradients(t, sw, false)
	po, pg := build(t, sw, R, func(in []*G.Node) (*G.Node, error) {
		silu, err := G.HadamardProd(in[0], G.Must(G.Sigmoid(in[0])))
		if err != nil {
			return nil, err
		}
		return G.HadamardProd(silu, in[1])
	}).gradients(t, sw, false)
	if d := relDiff(so, po); d > 1e-6 {
		t.Errorf("SwiGLU values differ by %.2g", d)
	}
	for i := range sg {
		if d := relDiff(sg[i], pg[i]); d > 1e-5 {
			t.Errorf("SwiGLU gradient %d differs by %.2g", i, d)
		}
	}
}

// TestFakeQuantMatchesTape: the FakeQuant op gives the tape's values and
// gradients (x's straight-through gradient, LSQ's step and LSQ+'s offset
// gradients) to the bit, on both differentiation modes, for every scale
// rule and format.
func TestFakeQuantMatchesTape(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	spec := func(format kernels.FormatID, bits int, sym bool, gran string, group int, scale string) qat.Spec {
		return qat.Spec{Format: format, Bits: bits, Symmetric: sym, Granularity: gran, GroupSize: group, Scale: scale}
	}
	const rows, row = 6, 64
	for _, s := range []qat.Spec{
		spec(kernels.Int, 4, true, "channel", 0, "minmax"),
		spec(kernels.Int, 8, false, "token", 0, "minmax"),
		spec(kernels.Int, 4, true, "group", 32, "minmax"),
		spec(kernels.Q4_0, 4, true, "group", 32, "minmax"),
		spec(kernels.Q8_0, 8, true, "group", 32, "minmax"),
		spec(kernels.FP8E4M3, 0, true, "channel", 0, "minmax"),
		spec(kernels.Int, 3, true, "group", 16, "mse"),
		spec(kernels.Int, 4, true, "channel", 0, "lsq"),
		spec(kernels.Int, 4, false, "group", 32, "lsq"),
	} {
		name := s.Format.String() + "/" + s.Granularity + "/" + s.Scale
		if !s.Symmetric {
			name += "/asym"
		}
		t.Run(name, func(t *testing.T) {
			q, err := qat.NewQuantizer(s, row, rows*row)
			if err != nil {
				t.Fatal(err)
			}
			x := randInput(rng, 1, rows, row)
			q.Init(x.x)
			R := make([]float32, rows*row)
			for i := range R {
				R[i] = float32(rng.NormFloat64())
			}
			// The tape.
			xv := autograd.NewParam(rows, row)
			copy(xv.Data(), x.x)
			st := q.State()
			var vs []*autograd.Var
			for _, v := range []*autograd.Var{xv, q.Step, q.Offset} {
				if v != nil {
					vs = append(vs, v)
				}
			}
			autograd.ZeroGrad(vs...)
			tp := autograd.NewTape()
			out := q.Apply(tp, xv)
			want := append([]float32(nil), out.Data()...)
			tp.Backward(tp.Scale(sumWeighted(tp, out, R), 1))
			// Gorgonia: x, then the lsq parameters.
			ins := []input{x}
			if s.Scale == "lsq" {
				ins = append(ins, input{[]int{st["step"].Size()}, st["step"].Data(), true})
				if q.Offset != nil {
					ins = append(ins, input{[]int{q.Offset.Size()}, q.Offset.Data(), true})
				}
			}
			f := func(in []*G.Node) (*G.Node, error) { return FakeQuant(q, in[0], in[1:]...) }
			for _, lisp := range []bool{false, true} {
				got, grads := build(t, ins, R, f).gradients(t, ins, lisp)
				if d := relDiff(want, got); d != 0 {
					t.Errorf("lisp %v: value differs by %.2g", lisp, d)
				}
				for i := range ins {
					if d := relDiff(vs[i].GradData(), grads[i]); d > 1e-6 {
						t.Errorf("lisp %v: gradient of input %d differs by %.2g", lisp, i, d)
					}
				}
			}
		})
	}
}

// sumWeighted is sum(R * x) on the tape.
func sumWeighted(tp *autograd.Tape, x *autograd.Var, R []float32) *autograd.Var {
	return tp.Custom([]int{1}, []*autograd.Var{x}, func(out []float32) {
		var s float64
		for i, v := range x.Data() {
			s += float64(v) * float64(R[i])
		}
		out[0] = float32(s)
	}, func(dout []float32, dins [][]float32) {
		for i := range dins[0] {
			dins[0][i] += dout[0] * R[i]
		}
	})
}
