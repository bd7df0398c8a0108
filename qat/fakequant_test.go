package qat

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"

	"qat/autograd"
	"qat/kernels"
)

func randVar(rng *rand.Rand, scale float64, shape ...int) *autograd.Var {
	v := autograd.NewParam(shape...)
	for i := range v.Data() {
		v.Data()[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

// apply runs q on x with upstream gradient dy and returns the output and
// x's gradient.
func apply(q *Quantizer, x *autograd.Var, dy []float32) ([]float32, []float32) {
	tp := autograd.NewTape()
	autograd.ZeroGrad(x)
	for _, v := range q.State() {
		autograd.ZeroGrad(v)
	}
	out := q.Apply(tp, x)
	// L = sum(dy * out): a linear head whose gradient is dy
	l := tp.Custom([]int{1}, []*autograd.Var{out}, func(o []float32) {
		var s float32
		for i, v := range out.Data() {
			s += v * dy[i]
		}
		o[0] = s
	}, func(dout []float32, dins [][]float32) {
		for i := range dins[0] {
			dins[0][i] += dout[0] * dy[i]
		}
	})
	tp.Backward(l)
	return append([]float32(nil), out.Data()...), append([]float32(nil), x.GradData()...)
}

// refAffine is the int fake quantizer from the formulas of
// docs/algorithms.md section 1 (torchao's qparams). Like PyTorch's kernel
// it computes the scale and x*(1/s) in float32, where ties are decided;
// the rest is float64.
func refAffine(x []float32, group int, bits int, sym bool) (y, mask []float64) {
	for k := 0; k < len(x)/group; k++ {
		g := x[k*group : (k+1)*group]
		var s, z, qmin, qmax float64
		if sym {
			qmin, qmax = -math.Pow(2, float64(bits-1)), math.Pow(2, float64(bits-1))-1
			amax := 0.0
			for _, v := range g {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			s = float64(max(float32(amax)/float32((qmax-qmin)/2), eps))
		} else {
			qmin, qmax = 0, math.Pow(2, float64(bits))-1
			lo, hi := 0.0, 0.0
			for _, v := range g {
				lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
			}
			s = float64(max((float32(hi)-float32(lo))/float32(qmax-qmin), eps))
			z = math.Min(math.Max(qmin-math.RoundToEven(float64(float32(lo)/float32(s))), qmin), qmax)
		}
		inv := 1 / float32(s)
		for _, v := range g {
			q := math.RoundToEven(float64(v*inv)) + z
			m := 1.0
			if q < qmin || q > qmax {
				m = 0
			}
			q = math.Min(math.Max(q, qmin), qmax)
			y = append(y, (q-z)*s)
			mask = append(mask, m)
		}
	}
	return y, mask
}

func TestIntFakeQuantAgainstFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rows, row := 6, 64
	for _, bits := range []int{2, 3, 4, 8} {
		for _, sym := range []bool{true, false} {
			for _, gran := range []string{"tensor", "channel", "group", "token"} {
				spec := Spec{Format: kernels.Int, Bits: bits, Symmetric: sym, Granularity: gran, GroupSize: 16, Scale: "minmax"}
				if err := spec.Validate("q"); err != nil {
					t.Fatal(err)
				}
				q, err := NewQuantizer(spec, row, rows*row)
				if err != nil {
					t.Fatal(err)
				}
				x := randVar(rng, 1, rows, row)
				x.Data()[5] = 7 // an outlier
				dy := make([]float32, rows*row)
				for i := range dy {
					dy[i] = float32(rng.NormFloat64())
				}
				y, dx := apply(q, x, dy)
				group, _ := spec.Group(row, rows*row)
				wy, wm := refAffine(x.Data(), group, bits, sym)
				for i := range y {
					// values sit on the grid: allow float32 rounding of s*(q-z)
					if d := math.Abs(float64(y[i]) - wy[i]); d > 1e-6*(1+math.Abs(wy[i])) {
						t.Fatalf("%+v: y[%d] = %g, reference %g", spec, i, y[i], wy[i])
					}
					if float64(dx[i]) != float64(dy[i])*wm[i] {
						t.Fatalf("%+v: dx[%d] = %g, want dy*mask = %g", spec, i, dx[i], float64(dy[i])*wm[i])
					}
				}
			}
		}
	}
}

// TestQ4_0HandComputed: a block worked out by hand from llama.cpp's
// quantize_row_q4_0_ref.
func TestQ4_0HandComputed(t *testing.T) {
	spec := Spec{Format: kernels.Q4_0, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"}
	q, err := NewQuantizer(spec, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	x := autograd.NewParam(64)
	// Block 0: m = -4 (the first of largest magnitude), d = 0.5, id = 2,
	// q = floor(2x + 8.5), x_hat = (q-8)*0.5.
	copy(x.Data(), []float32{0.25, -4, 1.3, 3.9, -0.25, 0.75, 4, -1.2})
	want := []float32{0.5, -4, 1.5, 3.5, 0, 1, 3.5, -1}
	wantMask := []float32{1, 1, 1, 0, 1, 1, 0, 1}
	// Block 1: m = 1.0001, d = -0.1250125, which fp16 stores as -0.125:
	// x = m gives q = 0 and x_hat = (0-8)*(-0.125) = 1, not 1.0001.
	x.Data()[32] = 1.0001
	x.Data()[33] = -0.5 // x*id = 3.99960 -> q = floor(12.4996) = 12 -> -0.5
	dy := make([]float32, 64)
	for i := range dy {
		dy[i] = 1
	}
	y, dx := apply(q, x, dy)
	for i, w := range want {
		if y[i] != w || dx[i] != wantMask[i] {
			t.Errorf("x=%g: x_hat %g (want %g), gradient %g (want %g)", x.Data()[i], y[i], w, dx[i], wantMask[i])
		}
	}
	if y[32] != 1 || y[33] != -0.5 {
		t.Errorf("fp16 scale: x_hat %g, %g; want 1, -0.5", y[32], y[33])
	}
}

func TestQ8_0HandComputed(t *testing.T) {
	spec := Spec{Format: kernels.Q8_0, Symmetric: true, Granularity: "group", GroupSize: 32, Scale: "minmax"}
	q, _ := NewQuantizer(spec, 32, 32)
	x := autograd.NewParam(32)
	// amax 127: d = 1, q = round half away from zero
	copy(x.Data(), []float32{127, 2.5, -2.5, 1.5, -0.4, 0.5})
	y, _ := apply(q, x, make([]float32, 32))
	for i, w := range []float32{127, 3, -3, 2, 0, 1} {
		if y[i] != w {
			t.Errorf("x=%g: x_hat %g, want %g", x.Data()[i], y[i], w)
		}
	}
}

// fpTable lists every finite value of a format by decoding all codes.
func fpTable(e, m, bias int, e4m3fn bool) []float64 {
	var vals []float64
	for code := 0; code < 1<<(1+e+m); code++ {
		sign := 1.0
		if code>>(e+m)&1 == 1 {
			sign = -1
		}
		ex := code >> m & (1<<e - 1)
		man := code & (1<<m - 1)
		if !e4m3fn && ex == 1<<e-1 && e > 2 {
			continue // IEEE-style inf/NaN
		}
		if e4m3fn && ex == 1<<e-1 && man == 1<<m-1 {
			continue // E4M3's only NaN
		}
		var v float64
		if ex == 0 {
			v = float64(man) / float64(int(1)<<m) * math.Ldexp(1, 1-bias)
		} else {
			v = (1 + float64(man)/float64(int(1)<<m)) * math.Ldexp(1, ex-bias)
		}
		vals = append(vals, sign*v)
	}
	sort.Float64s(vals)
	return vals
}

func TestFPRoundingAgainstTables(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		spec      string
		e, m, b   int
		fn        bool
		max       float64
		ownValues int
	}{{"fp8_e4m3", 4, 3, 7, true, 448, 253}, {"fp8_e5m2", 5, 2, 15, false, 57344, 247}, {"fp4_e2m1", 2, 1, 1, false, 6, 16}} {
		id, err := kernels.ParseFormat(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		f := id.FP()
		tab := fpTable(c.e, c.m, c.b, c.fn)
		if tab[len(tab)-1] != c.max {
			t.Fatalf("%s: table max %g", c.spec, tab[len(tab)-1])
		}
		// every representable value maps to itself
		for _, v := range tab {
			if got := float64(f.RoundFP(float32(v))); got != v {
				t.Errorf("%s: %g rounds to %g", c.spec, v, got)
			}
		}
		// random values: the nearest table entry, ties to the even mantissa
		for i := 0; i < 20000; i++ {
			v := rng.NormFloat64() * c.max / 4
			if i%3 == 0 {
				v = rng.NormFloat64() * math.Ldexp(1, 1-c.b) // subnormal range
			}
			if i%7 == 0 { // an exact midpoint between neighbours
				j := rng.IntN(len(tab) - 1)
				v = (tab[j] + tab[j+1]) / 2
			}
			got := float64(f.RoundFP(float32(v)))
			vv := math.Max(math.Min(float64(float32(v)), c.max), -c.max)
			j := sort.SearchFloat64s(tab, vv)
			best := tab[min(j, len(tab)-1)]
			if j > 0 {
				lo := tab[j-1]
				dl, dh := vv-lo, best-vv
				if dl < dh || (dl == dh && evenMantissa(lo, c.m, c.b) && !evenMantissa(best, c.m, c.b)) {
					best = lo
				}
			}
			if got != best {
				t.Fatalf("%s: %g rounds to %g, nearest (ties to even) is %g", c.spec, v, got, best)
			}
		}
		if v := f.RoundFP(float32(c.max * 10)); float64(v) != c.max || f.RoundFP(float32(-c.max*10)) != -float32(c.max) {
			t.Errorf("%s: no saturation: %g", c.spec, v)
		}
		if v := f.RoundFP(float32(math.NaN())); v == v {
			t.Errorf("%s: NaN became %g", c.spec, v)
		}
	}
}

// evenMantissa reports whether the last mantissa bit of v (a value of a
// format with m mantissa bits and exponent bias b) is 0: v in units of its
// binade's step (subnormals share the smallest normal binade's step).
func evenMantissa(v float64, m, b int) bool {
	if v == 0 {
		return true
	}
	e := max(int(math.Floor(math.Log2(math.Abs(v)))), 1-b)
	return int64(math.Abs(v)/math.Ldexp(1, e-m))%2 == 0
}

// TestLSQGradients: LSQ's step gradient equals the formula of
// docs/algorithms.md section 2 and central differences of the LSQ
// surrogate (rounding residuals frozen), both with the 1/sqrt(N*Qp) scale.
func TestLSQGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	spec := Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "lsq"}
	rows, row := 3, 20
	q, err := NewQuantizer(spec, row, rows*row)
	if err != nil {
		t.Fatal(err)
	}
	x := randVar(rng, 1, rows, row)
	q.InitLSQ(x.Data())
	for k := range q.Step.Data() {
		q.Step.Data()[k] *= 1.7 // some values clip
	}
	dy := make([]float32, rows*row)
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	y, dx := apply(q, x, dy)
	qn, qp := 8.0, 7.0
	g := 1 / math.Sqrt(float64(row)*qp)
	for k := 0; k < rows; k++ {
		s := float64(q.Step.Data()[k])
		var want float64
		res := make([]float64, row)
		for i := 0; i < row; i++ {
			v := float64(x.Data()[k*row+i]) / s
			var e, m float64
			switch {
			case v < -qn:
				e = -qn
			case v > qp:
				e = qp
			default:
				e, m = math.RoundToEven(v)-v, 1
			}
			res[i] = e
			want += float64(dy[k*row+i]) * e
			if float64(dx[k*row+i]) != float64(dy[k*row+i])*m {
				t.Fatalf("dx[%d] = %g, want %g", k*row+i, dx[k*row+i], float64(dy[k*row+i])*m)
			}
			if wy := math.RoundToEven(math.Max(math.Min(v, qp), -qn)) * s; math.Abs(float64(y[k*row+i])-wy) > 1e-6 {
				t.Fatalf("y[%d] = %g, want %g", k*row+i, y[k*row+i], wy)
			}
		}
		want *= g
		// surrogate: y_i(s) = x_i + s*e_i inside (residual frozen), s*bound outside
		surrogate := func(s float64) float64 {
			var l float64
			for i := 0; i < row; i++ {
				xi := float64(x.Data()[k*row+i])
				var yi float64
				if res[i] == qp || res[i] == -qn {
					yi = s * res[i]
				} else {
					yi = xi + s*res[i]
				}
				l += float64(dy[k*row+i]) * yi
			}
			return l
		}
		h := 1e-6
		fd := g * (surrogate(s+h) - surrogate(s-h)) / (2 * h)
		got := float64(q.Step.GradData()[k])
		if math.Abs(got-want) > 1e-5*(1+math.Abs(want)) || math.Abs(got-fd) > 1e-4*(1+math.Abs(fd)) {
			t.Errorf("group %d: step gradient %g, formula %g, finite differences %g", k, got, want, fd)
		}
	}
}

func TestSpecValidation(t *testing.T) {
	for _, s := range []Spec{
		{Format: kernels.Int, Bits: 1, Symmetric: true, Granularity: "tensor", Scale: "minmax"},
		{Format: kernels.Int, Bits: 9, Symmetric: true, Granularity: "tensor", Scale: "minmax"},
		{Format: kernels.FP8E4M3, Symmetric: false, Granularity: "tensor", Scale: "minmax"},
		{Format: kernels.Q4_0, Symmetric: true, Granularity: "group", GroupSize: 64, Scale: "minmax"},
		{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "row", Scale: "minmax"},
		{Format: kernels.FP8E4M3, Symmetric: true, Granularity: "channel", Scale: "mse"},
		{Format: kernels.Int, Bits: 4, Symmetric: false, Granularity: "token", Scale: "lsq"},
		{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "channel", Scale: "absmax"},
		{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 0, Scale: "minmax"},
		{Format: kernels.F16, Bits: 4, Symmetric: true, Granularity: "tensor", Scale: "minmax"},
		{Bits: 4, Symmetric: true, Granularity: "tensor", Scale: "minmax"},
	} {
		if err := s.Validate("quant.weights"); err == nil {
			t.Errorf("%+v validated", s)
		}
	}
	// a name no format has is kept from the file for Validate to name
	var s Spec
	if err := json.Unmarshal([]byte(`{"format": "int4", "bits": 4, "symmetric": true, "granularity": "tensor", "scale": "minmax"}`), &s); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate("quant.weights"); err == nil || !strings.Contains(err.Error(), `quant.weights.format: "int4"`) {
		t.Errorf("format int4: %v", err)
	}
	// a known one decodes to its id and back to its name
	if err := json.Unmarshal([]byte(`{"format": "q8_0", "bits": 8, "symmetric": true, "granularity": "group", "group_size": 32, "scale": "minmax"}`), &s); err != nil || s.Format != kernels.Q8_0 || s.Validate("w") != nil {
		t.Errorf("q8_0 decodes to %+v (%v)", s, err)
	}
	if b, _ := json.Marshal(s); !strings.Contains(string(b), `"format":"q8_0"`) {
		t.Errorf("q8_0 encodes as %s", b)
	}
	// specFile mirrors Spec field for field
	st, ft := reflect.TypeOf(Spec{}), reflect.TypeOf(specFile{})
	for i := 0; i < ft.NumField(); i++ {
		f, g := ft.Field(i), st.Field(i)
		if f.Name != g.Name || f.Tag != g.Tag || (f.Type != g.Type && f.Name != "Format") {
			t.Errorf("specFile field %d is %s %s %q, Spec's %s %s %q", i, f.Name, f.Type, f.Tag, g.Name, g.Type, g.Tag)
		}
	}
	if st.NumField() != ft.NumField()+1 {
		t.Errorf("Spec has %d fields, specFile %d (and unknown)", st.NumField(), ft.NumField())
	}
	if _, err := NewQuantizer(Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: 48, Scale: "minmax"}, 64, 128); err == nil {
		t.Error("group 48 accepted for rows of 64")
	}
}
