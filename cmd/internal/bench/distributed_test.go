package bench

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"qat/dist"
)

// TestDistributedMeasures runs the benchmark's job part on two in-process
// ranks: every figure is measured (positive), the gradient count is the
// model's, and the overlap table prints the figures it was given.
func TestDistributedMeasures(t *testing.T) {
	o := recipeModel
	o.Steps = 2
	res := make([]DistResult, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r, c := range dist.Local(2) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[r], errs[r] = Distributed(c, o)
		}()
	}
	wg.Wait()
	for r := range errs {
		if errs[r] != nil {
			t.Fatalf("rank %d: %v", r, errs[r])
		}
	}
	d := res[0]
	c := o.Model
	want := c.Vocab*c.Dim + c.Layers*(2*c.Dim+c.Dim*c.Dim*2+2*c.Dim*c.Dim*c.KVHeads/c.Heads+3*c.Dim*c.FFNHidden) + c.Dim
	if d.Procs != 2 || d.GradValues != want {
		t.Errorf("%d processes, %d gradient values; want 2 and %d", d.Procs, d.GradValues, want)
	}
	for name, v := range map[string]float64{"ours": d.OursMs, "MPI": d.MPIMs, "step": d.StepMs, "local": d.LocalMs, "overlap": d.OverlapMs, "tokens/s": d.TokensSec} {
		if !(v > 0) {
			t.Errorf("%s: %g", name, v)
		}
	}
	var out bytes.Buffer
	PrintOverlap(&out, d)
	if !strings.Contains(out.String(), "saved by overlapping") {
		t.Errorf("overlap table:\n%s", out.String())
	}
}
