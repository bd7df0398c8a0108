package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"qat/checkpoint"
	"qat/data/safetensors"
	"qat/layers"
)

// importShapes are the synthetic checkpoints qat bench import writes.
var importShapes = map[string]layers.Config{
	// TinyLlama-1.1B (its published config.json)
	"tinyllama": {Vocab: 32000, Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, FFNHidden: 5632, RopeTheta: 10000, NormEps: 1e-5, MaxSeq: 2048},
	// a 55M-parameter model (checkpoint's TestImportRSS): seconds
	"mid": {Vocab: 8192, Dim: 1024, Layers: 4, Heads: 8, KVHeads: 4, FFNHidden: 2816, RopeTheta: 1e4, NormEps: 1e-5, Tied: true, MaxSeq: 64},
}

// importResult is what the loading child reports.
type importResult struct {
	Params  int     `json:"params"`
	Seconds float64 `json:"load_seconds"`
}

func benchImportCmd() *cobra.Command {
	var model, dir, shape, load, jsonOut string
	var shards int
	var keep bool
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Measure importing a Hugging Face checkpoint: wall time and peak memory against its float32 weights",
		Long: `Measure importing a Hugging Face checkpoint: a child process loads it as
every command does (checkpoint.LoadHFModel: config.json, the shards
mapped, checked, converted to float32) and the figures are its wall time
and peak resident memory (getrusage's ru_maxrss) against the float32
weights' bytes.

Without --model, a synthetic BF16 checkpoint of --shape (tinyllama:
TinyLlama-1.1B's shapes, 2.2 GB of BF16; mid: 55M parameters) in --shards
shards under model.safetensors.index.json, deterministic random values, is
written to a new directory under --dir first (removed after unless
--keep).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if load != "" { // the child
				start := time.Now()
				m, err := checkpoint.LoadHFModel(load)
				if err != nil {
					return inputf("--load: %v", err)
				}
				n, _ := m.Config.Params()
				return json.NewEncoder(cmd.OutOrStdout()).Encode(importResult{n, time.Since(start).Seconds()})
			}
			w := cmd.OutOrStdout()
			if model == "" {
				c, ok := importShapes[shape]
				if !ok {
					return inputf("--shape %q: want tinyllama or mid", shape)
				}
				if shards < 1 {
					return inputf("--shards must be at least 1")
				}
				tmp, err := os.MkdirTemp(dir, "qat-import-")
				if err != nil {
					return err
				}
				if keep {
					fmt.Fprintf(w, "checkpoint kept in %s\n", tmp)
				} else {
					defer os.RemoveAll(tmp)
				}
				start := time.Now()
				if err := checkpoint.WriteSynthetic(tmp, c, shards, 1); err != nil {
					return err
				}
				fmt.Fprintf(w, "wrote a synthetic %s checkpoint (BF16, %d shards) in %.1f s\n", shape, shards, time.Since(start).Seconds())
				model = tmp
			}
			return benchImport(w, model, jsonOut)
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "a Hugging Face model directory to import (default: a synthetic one)")
	cmd.Flags().StringVar(&shape, "shape", "tinyllama", "synthetic checkpoint shape: tinyllama or mid")
	cmd.Flags().IntVar(&shards, "shards", 2, "synthetic checkpoint shards")
	cmd.Flags().StringVar(&dir, "dir", "", "where the synthetic checkpoint is written (default: the temporary directory)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the synthetic checkpoint")
	cmd.Flags().StringVar(&jsonOut, "json", "", "also write the result as a JSON line to this file")
	cmd.Flags().StringVar(&load, "load", "", "load this directory and report (the measured child)")
	cmd.Flags().MarkHidden("load")
	return cmd
}

// benchImport loads dir in a child process and reports its wall time and
// peak memory. The child is started from this process, which has held
// little (the synthetic writer streams): ru_maxrss of a child started by
// vfork begins at its parent's high-water mark, printed beside it.
func benchImport(w io.Writer, dir, jsonOut string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	c, err := checkpoint.HFConfig(dir)
	if err != nil {
		return err
	}
	var fileBytes int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".safetensors") {
			if fi, err := e.Info(); err == nil {
				fileBytes += fi.Size()
			}
		}
	}
	cmd := exec.Command(self, "bench", "import", "--load", dir)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("loading %s: %v\n%s", dir, err, errb.String())
	}
	wall := time.Since(start).Seconds()
	var r importResult
	if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
		return fmt.Errorf("the loading child printed %q: %v", out.String(), err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	peak := ru.Maxrss << 10 // kilobytes on Linux
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	var self0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
	f32 := 4 * int64(r.Params)
	ratio := float64(peak) / float64(f32)
	_, sharded := os.Stat(filepath.Join(dir, safetensors.IndexName))
	fmt.Fprintf(w, "model: %s, %d parameters (dim %d, %d layers, vocab %d); files %.2f GB (sharded: %v); float32 weights %.2f GB\n",
		dir, r.Params, c.Dim, c.Layers, c.Vocab, float64(fileBytes)/1e9, sharded == nil, float64(f32)/1e9)
	fmt.Fprintf(w, "import: %.2f s loading (%.2f s the whole child process, %.2f s CPU), peak RSS %.2f GB = %.3fx the float32 weights (goal <= 1.2x; this parent's own peak %.0f MB bounds the child's from below)\n",
		r.Seconds, wall, cpu, float64(peak)/1e9, ratio, float64(self0.Maxrss<<10)/1e6)
	if jsonOut != "" {
		b, _ := json.Marshal(map[string]any{"kind": "import", "model": dir, "params": r.Params, "file_bytes": fileBytes,
			"load_seconds": r.Seconds, "process_seconds": wall, "cpu_seconds": cpu, "peak_rss_bytes": peak, "f32_bytes": f32, "ratio": ratio})
		f, err := os.OpenFile(jsonOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}
