package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"qat/checkpoint"
	"qat/data"
	"qat/data/atomic"
	"qat/data/bpe"
	"qat/eval"
	"qat/kernels"
	"qat/layers"
	qatpkg "qat/qat"
)

// loadModel opens a --model argument (checkpoint.Load); any failure is
// bad input.
func loadModel(path string) (*layers.Model, *bpe.Tokenizer, error) {
	m, err := checkpoint.Load(path)
	if err != nil {
		return nil, nil, inputf("--model: %v", err)
	}
	return m.Model, m.Tok, nil
}

func evalCmd() *cobra.Command {
	var model, dataDir, split, preset, klRef, textPath, jsonPath string
	var batch, seq, batches, threads, ctx int
	var kurt, packed bool
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Validation loss, perplexity and bits per byte of a model on a prepared dataset",
		Long: `Validation loss, perplexity and bits per byte of a model on a prepared dataset.
--preset P evaluates the model fake-quantized by a qat preset (round to
nearest: the post-training baseline); --kl-divergence REF also compares its
next-token distributions with a reference model's (mean and 99th-percentile
KL divergence, top-1 agreement), the statistics llama.cpp users compare
quantizations by. --json FILE also writes what it printed, unrounded, as
one JSON object (written whole or not at all), for scripts that tabulate
results (tools/results).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kernels.SetThreads(threads)
			// a --json that cannot be written fails now, not after the
			// evaluation
			if jsonPath != "" {
				if st, err := os.Stat(filepath.Dir(jsonPath)); err != nil || !st.IsDir() {
					return inputf("--json %s: its directory does not exist", jsonPath)
				}
			}
			// --packed --text decodes through the packed kernels: the model
			// is read once, packed
			var pm *checkpoint.Model
			var m *layers.Model
			var tok *bpe.Tokenizer
			var err error
			if packed && textPath != "" {
				if pm, err = checkpoint.LoadPacked(model); err != nil {
					return inputf("--model: %v", err)
				}
				m, tok = pm.Model, pm.Tok
			} else if m, tok, err = loadModel(model); err != nil {
				return err
			}
			if preset != "" {
				rules, ok := qatpkg.Presets[preset]
				if !ok {
					return inputf("--preset %q: want one of %s", preset, qatpkg.PresetNames())
				}
				if err := qatpkg.Prepare(m, rules); err != nil {
					return inputf("--preset %s: %v", preset, err)
				}
			}
			if textPath != "" {
				b, err := os.ReadFile(textPath)
				if err != nil {
					return inputf("--text: %v", err)
				}
				if ctx < 4 || ctx > m.MaxSeq {
					return inputf("--ctx %d must be in [4, %d]", ctx, m.MaxSeq)
				}
				var stepper func() layers.Stepper
				how := "unpacked weights"
				if pm != nil {
					stepper = func() layers.Stepper { return layers.NewPackedDecoder(pm.Model, pm.PackedWeights) }
					how = kernels.PackedKernel() + " packed kernels, each chunk as one prompt"
					kernels.SetBLASThreads(1) // the products run on our threads
				}
				ppl, n := eval.ChunkPerplexity(m, tok, string(b), ctx, stepper)
				fmt.Fprintf(cmd.OutOrStdout(), "%s: perplexity %.4f over %d tokens (chunks of %d, second halves scored, as llama-perplexity; %s)\n",
					textPath, ppl, n, ctx, how)
				return writeEvalJSON(jsonPath, evalJSON{Model: model, Preset: preset, Text: textPath, Ctx: ctx, Packed: pm != nil,
					Tokens: n, PPL: ppl})
			}
			if dataDir == "" {
				return inputf("--data is required (or --text FILE)")
			}
			ds, err := data.LoadSplit(dataDir, split, m.Vocab)
			if err != nil {
				return err
			}
			if seq <= 0 || seq > m.MaxSeq || batch <= 0 {
				return inputf("--seq %d must be in [1, %d] and --batch %d positive", seq, m.MaxSeq, batch)
			}
			var taps map[string]*qatpkg.Kurtosis
			if kurt {
				if taps, err = qatpkg.Taps(m, qatpkg.KurtosisConfig{}); err != nil {
					return err
				}
			}
			r := eval.Evaluate(m, tok, ds, batch, seq, batches)
			js := evalJSON{Model: model, Preset: preset, Data: dataDir, Split: split, Batch: batch, Seq: seq, Batches: batches,
				Tokens: r.Tokens, Loss: &r.Loss, PPL: r.PPL, BPB: &r.BPB}
			if kurt {
				names := make([]string, 0, len(taps))
				js.Kurtosis = map[string]float64{}
				for n := range taps {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					fmt.Fprintf(cmd.OutOrStdout(), "kurtosis %-40s %8.2f\n", n, taps[n].Mean())
					js.Kurtosis[n] = taps[n].Mean()
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%d tokens): loss %.4f  perplexity %.2f  bits per byte %.4f\n", split, r.Tokens, r.Loss, r.PPL, r.BPB)
			if klRef != "" {
				ref, _, err := loadModel(klRef)
				if err != nil {
					return inputf("--kl-divergence: %v", err)
				}
				if ref.Vocab != m.Vocab {
					return inputf("--kl-divergence: reference vocabulary %d, model %d", ref.Vocab, m.Vocab)
				}
				k := eval.CompareKL(m, ref, ds, batch, seq, batches)
				fmt.Fprintf(cmd.OutOrStdout(), "KL divergence from %s (%d tokens): mean %.5f  p99 %.5f nats  top-1 agreement %.2f%%\n",
					klRef, k.Tokens, k.MeanKL, k.P99KL, 100*k.Top1)
				js.KL = &evalKLJSON{Reference: klRef, Tokens: k.Tokens, Mean: k.MeanKL, P99: k.P99KL, Top1: k.Top1}
			}
			return writeEvalJSON(jsonPath, js)
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "checkpoint directory or run out_dir")
	cmd.Flags().StringVar(&dataDir, "data", "", "prepared data directory")
	cmd.Flags().StringVar(&split, "split", "validation", "split to evaluate")
	cmd.Flags().IntVar(&batch, "batch", 8, "windows per batch")
	cmd.Flags().IntVar(&seq, "seq", 128, "window length")
	cmd.Flags().IntVar(&batches, "batches", 0, "at most this many batches (0: all)")
	cmd.Flags().IntVar(&threads, "threads", 2, "threads")
	cmd.Flags().StringVar(&preset, "preset", "", "fake-quantize the model with this preset first (RTN)")
	cmd.Flags().StringVar(&klRef, "kl-divergence", "", "reference model to compare next-token distributions with")
	cmd.Flags().BoolVar(&kurt, "kurtosis", false, "print the mean input kurtosis of every linear layer")
	cmd.Flags().StringVar(&textPath, "text", "", "score a text file as llama-perplexity does (with --ctx) instead of --data")
	cmd.Flags().IntVar(&ctx, "ctx", 128, "chunk length for --text")
	cmd.Flags().StringVar(&jsonPath, "json", "", "also write the results as one JSON object to this file")
	cmd.Flags().BoolVar(&packed, "packed", false, "with --text and a .gguf model: run the packed kernels (Q8_0 activations, as llama.cpp)")
	cmd.MarkFlagRequired("model")
	deviceFlag(cmd, "evaluation", false)
	return cmd
}

// evalJSON is what qat eval --json writes: the printed results unrounded,
// with what was evaluated, so a table can be built without parsing text.
// Fields of the other mode (--text or --data) are left out.
type evalJSON struct {
	Model    string             `json:"model"`
	Preset   string             `json:"preset,omitempty"`
	Data     string             `json:"data,omitempty"`
	Split    string             `json:"split,omitempty"`
	Batch    int                `json:"batch,omitempty"`
	Seq      int                `json:"seq,omitempty"`
	Batches  int                `json:"batches,omitempty"` // 0: the whole split
	Text     string             `json:"text,omitempty"`
	Ctx      int                `json:"ctx,omitempty"`
	Packed   bool               `json:"packed,omitempty"`
	Tokens   int                `json:"tokens"`
	Loss     *float64           `json:"loss,omitempty"`
	PPL      float64            `json:"perplexity"`
	BPB      *float64           `json:"bits_per_byte,omitempty"`
	KL       *evalKLJSON        `json:"kl,omitempty"`
	Kurtosis map[string]float64 `json:"kurtosis,omitempty"`
}

type evalKLJSON struct {
	Reference string  `json:"reference"`
	Tokens    int     `json:"tokens"`
	Mean      float64 `json:"mean"`
	P99       float64 `json:"p99"`
	Top1      float64 `json:"top1"` // a fraction, not a percentage
}

// writeEvalJSON writes --json's file whole (temporary file and rename): a
// killed eval leaves no half-written result for a script to read.
func writeEvalJSON(path string, js evalJSON) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(js, "", "  ")
	if err != nil {
		return err
	}
	if err := atomic.WriteFile(path, append(b, '\n')); err != nil {
		return inputf("--json: %v", err)
	}
	return nil
}

func generateCmd() *cobra.Command {
	var model, prompt string
	var temp float64
	var topK, maxTokens, threads int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Sample text from a model with a key/value cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kernels.SetThreads(threads)
			// packed weights (GGUF; w4a8/w8a8 packed safetensors) run through
			// the packed kernels with a key/value cache, as llama.cpp does
			var d layers.Stepper
			var cm *checkpoint.Model
			var err error
			packed := checkpoint.IsPacked(model)
			if packed {
				if cm, err = checkpoint.LoadPacked(model); err != nil && strings.HasSuffix(model, ".gguf") {
					return inputf("--model: %v", err)
				}
				packed = err == nil
			}
			if packed {
				d = layers.NewPackedDecoder(cm.Model, cm.PackedWeights)
				kernels.SetBLASThreads(1) // the products run on our goroutines
			} else {
				if cm, err = checkpoint.Load(model); err != nil {
					return inputf("--model: %v", err)
				}
				d = layers.NewStepper(cm.Model)
			}
			m, tok := cm.Model, cm.Tok
			if temp < 0 || topK < 0 || maxTokens < 0 {
				return inputf("--temperature, --top-k and --max-tokens must not be negative")
			}
			ids := append([]int32{tok.ID(bpe.BOS)}, tok.Encode(nil, prompt)...)
			if len(ids) >= m.MaxSeq {
				return inputf("--prompt is %d tokens; the model's context is %d", len(ids), m.MaxSeq)
			}
			s := layers.NewSampler(temp, topK, seed)
			var logits []float32
			if pf, ok := d.(layers.Prefiller); ok {
				// the prompt as one batch through the batched kernels
				if logits, err = pf.Prefill(ids, false); err != nil {
					return err
				}
			} else {
				for _, id := range ids {
					if logits, err = d.Step(id); err != nil {
						return err
					}
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprint(out, prompt)
			eos := tok.ID(bpe.EOS)
			t0, decoded := time.Now(), 0
			defer func() {
				if decoded > 0 {
					how := "float32 weights"
					if packed {
						how = kernels.PackedKernel() + " packed kernels"
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "decode: %d tokens in %.3f s, %.1f tokens/s (%d threads, %s)\n",
						decoded, time.Since(t0).Seconds(), float64(decoded)/time.Since(t0).Seconds(), threads, how)
				}
			}()
			for i := 0; i < maxTokens && d.Pos() < m.MaxSeq; i++ {
				next := s.Sample(logits)
				if next == eos {
					break
				}
				text, _ := tok.Decode([]int32{next})
				fmt.Fprint(out, text)
				if d.Pos() == m.MaxSeq {
					break
				}
				if logits, err = d.Step(next); err != nil {
					return err
				}
				decoded++
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "checkpoint directory or run out_dir")
	cmd.Flags().StringVar(&prompt, "prompt", "", "text to continue")
	cmd.Flags().Float64Var(&temp, "temperature", 0.8, "sampling temperature (0: greedy)")
	cmd.Flags().IntVar(&topK, "top-k", 40, "sample among the k most likely tokens (0: all)")
	cmd.Flags().IntVar(&maxTokens, "max-tokens", 100, "tokens to generate at most")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "sampling seed")
	cmd.Flags().IntVar(&threads, "threads", 1, "threads")
	cmd.MarkFlagRequired("model")
	deviceFlag(cmd, "generation", false)
	return cmd
}
