package train

import (
	"math"
	"testing"

	"qat/cmd/internal/config"
)

func TestLRSchedule(t *testing.T) {
	tc := config.Train{Steps: 110, Warmup: 10, LR: 1e-3, MinLR: 1e-4}
	for _, c := range []struct {
		step int
		want float64
	}{{0, 1e-4}, {4, 5e-4}, {9, 1e-3}, {10, 1e-3}, {60, 5.5e-4}, {110, 1e-4}, {200, 1e-4}} {
		if got := LR(tc, c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("step %d: lr %g, want %g", c.step, got, c.want)
		}
	}
}
