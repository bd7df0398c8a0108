package gorgonia

import (
	"strings"
	"testing"

	"qat/layers"
)

// TestRotatedRefused: a rotated model's online Hadamard transform of the
// down_proj input has no Gorgonia op; New refuses the model naming it,
// and builds the same model without it.
func TestRotatedRefused(t *testing.T) {
	c := layers.Config{Vocab: 64, Dim: 32, Layers: 1, Heads: 2, KVHeads: 2, FFNHidden: 48, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 8}
	if _, err := New(layers.New(c), 1, 4, Options{}); err != nil {
		t.Fatalf("unrotated: %v", err)
	}
	c.DownHadamard = layers.DownFull
	if _, err := New(layers.New(c), 1, 4, Options{}); err == nil || !strings.Contains(err.Error(), "down_hadamard") {
		t.Errorf("rotated model: %v, want a refusal naming down_hadamard", err)
	}
}
