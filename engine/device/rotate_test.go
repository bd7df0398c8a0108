package device

import (
	"strings"
	"testing"

	"qat/kernels/cuda"
	"qat/layers"
)

// TestRotatedRefused: the device step has no online Hadamard transform
// of the down_proj input; New refuses a rotated model naming it, and lays
// out the same model without it.
func TestRotatedRefused(t *testing.T) {
	c := configs[0]
	if _, err := New[[]float32, []int32](cuda.Host{}, layers.New(c), 1, 4); err != nil {
		t.Fatalf("unrotated: %v", err)
	}
	c.DownHadamard = layers.DownBlock
	if _, err := New[[]float32, []int32](cuda.Host{}, layers.New(c), 1, 4); err == nil || !strings.Contains(err.Error(), "down_hadamard") {
		t.Errorf("rotated model: %v, want a refusal naming down_hadamard", err)
	}
}
