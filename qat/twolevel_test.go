package qat

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"

	"qat/autograd"
	"qat/kernels"
)

// TestTwoLevel: the two-level weights against the formula computed in
// float64 (fp16 roundings where the kernel has them): groups of 16 at 4
// bits, s_c = max|W_dq|/127, w8 = rne(fp16(q * fp16(s_g/s_c))).
func TestTwoLevel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	const rows, cols, group = 5, 64, 16
	spec := Spec{Format: kernels.Int, Bits: 4, Symmetric: true, Granularity: "group", GroupSize: group, Scale: "minmax", TwoLevel: true}
	in, err := NewQuantizer(spec, cols, rows*cols)
	if err != nil {
		t.Fatal(err)
	}
	tl := &TwoLevel{Inner: in}
	w := autograd.NewParam(rows, cols)
	for i := range w.Data() {
		w.Data()[i] = float32(rng.NormFloat64() * (1 + float64(i%group)/4))
	}
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	got := tl.Apply(tp, w).Data()
	h := func(v float64) float64 { return float64(float16.Fromfloat32(float32(v)).Float32()) }
	for r := 0; r < rows; r++ {
		sg := make([]float64, cols/group)
		q := make([]float64, cols)
		var amaxRow float64
		for g := range sg {
			var amax float64
			for j := g * group; j < (g+1)*group; j++ {
				amax = math.Max(amax, math.Abs(float64(w.Data()[r*cols+j])))
			}
			sg[g] = float64(float32(amax / 7.5))
			for j := g * group; j < (g+1)*group; j++ {
				// x*(1/s) in float32, as the group quantizer rounds (the
				// group's largest value sits on the 7.5 tie)
				inv := 1 / float32(sg[g])
				q[j] = math.Min(math.Max(math.RoundToEven(float64(w.Data()[r*cols+j]*inv)), -8), 7)
				amaxRow = math.Max(amaxRow, math.Abs(float64(float32(q[j]*sg[g]))))
			}
		}
		sc := float64(float32(amaxRow / 127))
		top := 0.0
		for j := 0; j < cols; j++ {
			w8 := math.RoundToEven(h(q[j] * h(sg[j/group]/sc)))
			top = math.Max(top, math.Abs(w8))
			want := float32(sc * w8)
			if got[r*cols+j] != want {
				t.Fatalf("W[%d,%d] = %g, want %g (q %g, s_g %g, s_c %g)", r, j, got[r*cols+j], want, q[j], sg[j/group], sc)
			}
		}
		if top < 120 || top > 127 {
			t.Fatalf("row %d: largest int8 weight %g, want about 127", r, top)
		}
	}
}
