package data_test

import (
	"testing"

	"qat/data"
	"qat/layers"
)

// TestIgnoreTargetIsTheLossIgnoreIndex: the loader's mark for a target
// that does not count is the one the loss (and every engine) skips.
func TestIgnoreTargetIsTheLossIgnoreIndex(t *testing.T) {
	if data.IgnoreTarget != layers.IgnoreIndex {
		t.Fatalf("data.IgnoreTarget %d, layers.IgnoreIndex %d", data.IgnoreTarget, layers.IgnoreIndex)
	}
}
