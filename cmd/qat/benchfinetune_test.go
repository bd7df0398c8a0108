package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qat/checkpoint"
	"qat/layers"
)

// TestBenchFinetune runs qat bench finetune on a small synthetic
// checkpoint (every configuration, two steps each) and checks its
// figures: the trainable parameters counted by hand from the shapes, the
// estimate's exact parts (trainable, moments, int8 base) equal to what
// the run allocated, tokens/s from the step times, a peak RSS at least
// the float32 weights, and the table's rows.
func TestBenchFinetune(t *testing.T) {
	data := smallData(t) // a 512-token tokenizer
	c := layers.Config{Vocab: 512, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNHidden: 128, RopeTheta: 1e4, NormEps: 1e-5, MaxSeq: 32}
	tmp := t.TempDir()
	model := filepath.Join(tmp, "model")
	if err := checkpoint.WriteSynthetic(model, c, 2, 1); err != nil {
		t.Fatal(err)
	}
	js := filepath.Join(tmp, "out.jsonl")
	out, code := qat(t, "bench", "finetune", "--model", model, "--data", data, "--seq", "16", "--steps", "2",
		"--configs", "qat,lrqat,fp32", "--rank", "16", "--dir", filepath.Join(tmp, "work"), "--json", js)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// by hand: per layer q, o 64x64; k, v 32x64 (2 kv heads of 16);
	// gate, up 128x64; down 64x128
	type lin struct{ rows, cols int }
	block := []lin{{64, 64}, {32, 64}, {32, 64}, {64, 64}, {128, 64}, {128, 64}, {64, 128}}
	var linW, adapters int
	for _, l := range block {
		linW += l.rows * l.cols
		adapters += 16*(l.rows+l.cols) + l.rows*l.cols/32 // A, B, a scale per 32 inputs
	}
	all := 2*512*64 + 2*(linW+2*64) + 64 // embeddings and head, blocks with norms, final norm
	want := map[string]int{"qat": all, "fp32": all, "lrqat": 2 * adapters}
	f, err := os.Open(js)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	seen := 0
	for sc.Scan() {
		var rec struct {
			Config   string      `json:"config"`
			Label    string      `json:"label"`
			Params   int         `json:"params"`
			Estimate memEstimate `json:"estimate"`
			Result   ftResult    `json:"result"`
			Peak     int64       `json:"peak_rss_bytes"`
			Median   float64     `json:"step_seconds_median"`
			TokensS  float64     `json:"tokens_per_s"`
			Skipped  string      `json:"skipped"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		seen++
		r, e := rec.Result, rec.Estimate
		switch {
		case rec.Skipped != "":
			t.Fatalf("%s skipped: %s", rec.Config, rec.Skipped)
		case rec.Params != all:
			t.Fatalf("%s: %d parameters, by hand %d", rec.Config, rec.Params, all)
		case r.Trainable != want[rec.Config] || e.Trainable != int64(r.Trainable):
			t.Fatalf("%s: %d trainable in the run, %d estimated, by hand %d", rec.Config, r.Trainable, e.Trainable, want[rec.Config])
		case e.States != int64(r.StateBytes) || e.Int8Base != int64(r.FrozenInt8) || e.Grads != 4*int64(r.Trainable):
			t.Fatalf("%s: estimate %+v, run %+v", rec.Config, e, r)
		case rec.Config == "lrqat" && (r.FrozenInt8 != 2*linW || r.FrozenF32 != all-2*linW):
			t.Fatalf("lrqat: %d int8 base bytes, %d frozen float32 (by hand %d, %d)", r.FrozenInt8, r.FrozenF32, 2*linW, all-2*linW)
		case len(r.Steps) != 2 || rec.Median != r.Steps[1] || rec.TokensS != 16/r.Steps[1]:
			t.Fatalf("%s: steps %v, median %g, tokens/s %g", rec.Config, r.Steps, rec.Median, rec.TokensS)
		case rec.Peak < 4*int64(all):
			t.Fatalf("%s: peak RSS %d below the float32 weights", rec.Config, rec.Peak)
		case !strings.Contains(out, "\n"+rec.Label+" "):
			t.Fatalf("no table row %q:\n%s", rec.Label, out)
		}
	}
	if seen != 3 || strings.Contains(out, "out of date") {
		t.Fatalf("%d JSON lines\n%s", seen, out)
	}
	// a second run with the same --dir reuses what it can (data given:
	// nothing to prepare); a configuration can be measured alone
	if out, code := qat(t, "bench", "finetune", "--model", model, "--data", data, "--seq", "16", "--steps", "2",
		"--configs", "lrqat"); code != 0 || strings.Contains(out, "full QAT") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// TestBenchFinetuneFlags: bad flags exit 2 naming the flag before
// anything is written.
func TestBenchFinetuneFlags(t *testing.T) {
	tmp := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--steps", "1"}, "--steps"},
		{[]string{"--configs", "qat,dora"}, `--configs "dora"`},
		{[]string{"--configs", "qat,qat"}, "given twice"},
		{[]string{"--rank", "0"}, "--rank"},
		{[]string{"--shape", "huge"}, "--shape"},
		{[]string{"--min-free", "-1"}, "--min-free"},
		{[]string{"--model", tmp}, "--model"}, // no config.json
	} {
		args := append([]string{"bench", "finetune", "--dir", filepath.Join(tmp, "work")}, tc.args...)
		out, code := qat(t, args...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Fatalf("%v: exit %d, want 2 naming %q:\n%s", tc.args, code, tc.want, out)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(tmp, "work")); len(ents) > 0 {
		t.Fatalf("bad flags left %d entries in --dir", len(ents))
	}
}

// TestStepMedian: the first step is left out; even counts average the
// middle two.
func TestStepMedian(t *testing.T) {
	for _, tc := range []struct {
		s    []float64
		want float64
	}{{[]float64{9, 3, 1, 2}, 2}, {[]float64{9, 4, 2}, 3}, {[]float64{9, 5}, 5}, {[]float64{9}, 0}} {
		if got := stepMedian(tc.s); got != tc.want {
			t.Fatalf("stepMedian(%v) = %g, want %g", tc.s, got, tc.want)
		}
	}
}

// TestMeminfoField parses /proc's "Key: value kB" lines.
func TestMeminfoField(t *testing.T) {
	b := []byte("MemTotal:       26484000 kB\nMemAvailable:    1000 kB\nHugePages_Total:       3\n")
	for key, want := range map[string]int64{"MemTotal": 26484000 << 10, "MemAvailable": 1000 << 10, "HugePages_Total": 3, "Mem": 0} {
		if got := meminfoField(b, key); got != want {
			t.Fatalf("%s: %d, want %d", key, got, want)
		}
	}
}
