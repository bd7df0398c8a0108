package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalJSON: qat eval --json writes the numbers it prints, unrounded
// (each rounds to the printed text), and prints exactly what it prints
// without --json; a --json in a missing directory is exit 2 before the
// evaluation.
func TestEvalJSON(t *testing.T) {
	data := smallData(t)
	tmp := t.TempDir()
	fp := filepath.Join(tmp, "fp")
	if msg, code := qat(t, "train", "--config", writeConfig(t, strings.Replace(tinyRun, "steps: 40", "steps: 4", 1), data, fp)); code != 0 {
		t.Fatalf("%d\n%s", code, msg)
	}
	args := []string{"eval", "--model", fp, "--data", data, "--seq", "32", "--batches", "3", "--preset", "w4a4", "--kl-divergence", fp, "--kurtosis"}
	plain, code := qat(t, args...)
	if code != 0 {
		t.Fatalf("eval: %d\n%s", code, plain)
	}
	js := filepath.Join(tmp, "eval.json")
	withJSON, code := qat(t, append(args, "--json", js)...)
	if code != 0 || withJSON != plain {
		t.Fatalf("eval --json printed something else (%d):\n%s\nwithout --json:\n%s", code, withJSON, plain)
	}
	var r struct {
		Model, Preset, Split string
		Tokens               int
		Loss                 *float64
		Perplexity           float64
		BitsPerByte          *float64 `json:"bits_per_byte"`
		Batches              int
		KL                   *struct {
			Reference       string
			Tokens          int
			Mean, P99, Top1 float64
		}
		Kurtosis map[string]float64
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if r.Loss == nil || r.BitsPerByte == nil || r.KL == nil || r.Model != fp || r.Preset != "w4a4" || r.Split != "validation" || r.Batches != 3 {
		t.Fatalf("fields missing or wrong:\n%s", b)
	}
	// the text's rounding of each value is what eval printed
	want := []string{
		fmt.Sprintf("validation (%d tokens): loss %.4f  perplexity %.2f  bits per byte %.4f", r.Tokens, *r.Loss, r.Perplexity, *r.BitsPerByte),
		fmt.Sprintf("(%d tokens): mean %.5f  p99 %.5f nats  top-1 agreement %.2f%%", r.KL.Tokens, r.KL.Mean, r.KL.P99, 100*r.KL.Top1),
	}
	for _, w := range want {
		if !strings.Contains(plain, w) {
			t.Errorf("printed text lacks %q:\n%s", w, plain)
		}
	}
	if math.Abs(math.Exp(*r.Loss)-r.Perplexity) > 1e-9*r.Perplexity || r.KL.Top1 <= 0 || r.KL.Top1 > 1 || r.KL.Mean <= 0 {
		t.Errorf("inconsistent: loss %v perplexity %v, KL %+v", *r.Loss, r.Perplexity, *r.KL)
	}
	n := 0
	for name, v := range r.Kurtosis {
		if !strings.Contains(plain, fmt.Sprintf("kurtosis %-40s %8.2f", name, v)) {
			t.Errorf("kurtosis %s %v not as printed", name, v)
		}
		n++
	}
	if n == 0 || n != strings.Count(plain, "kurtosis ") {
		t.Errorf("%d kurtosis values in the JSON, %d printed", n, strings.Count(plain, "kurtosis "))
	}

	msg, code := qat(t, "eval", "--model", fp, "--data", data, "--seq", "32", "--json", filepath.Join(tmp, "nowhere", "e.json"))
	if code != 2 || !strings.Contains(msg, "--json") || strings.Contains(msg, "validation (") {
		t.Errorf("--json in a missing directory: %d\n%s", code, msg)
	}
}
