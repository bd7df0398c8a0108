package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"qat/cmd/internal/train"
	"qat/data"
	"qat/data/bpe"
	"qat/kernels"
	"qat/layers"
)

func loadModel(path string) (*layers.Model, *bpe.Tokenizer, error) {
	dir, err := train.ModelDir(path)
	if err != nil {
		return nil, nil, inputf("--model: %v", err)
	}
	m, err := train.LoadModel(dir)
	if err != nil {
		return nil, nil, inputf("--model: %v", err)
	}
	tok, err := bpe.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, nil, inputf("--model: %v", err)
	}
	if tok.VocabSize() != m.Vocab {
		return nil, nil, inputf("--model %s: tokenizer has %d tokens, model %d", dir, tok.VocabSize(), m.Vocab)
	}
	return m, tok, nil
}

func evalCmd() *cobra.Command {
	var model, dataDir, split string
	var batch, seq, batches, threads int
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Validation loss, perplexity and bits per byte of a model on a prepared dataset",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kernels.SetThreads(threads)
			m, tok, err := loadModel(model)
			if err != nil {
				return err
			}
			ds, err := data.LoadSplit(dataDir, split, m.Vocab)
			if err != nil {
				return err
			}
			if seq <= 0 || seq > m.MaxSeq || batch <= 0 {
				return inputf("--seq %d must be in [1, %d] and --batch %d positive", seq, m.MaxSeq, batch)
			}
			r := train.Evaluate(m, tok, ds, batch, seq, batches)
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%d tokens): loss %.4f  perplexity %.2f  bits per byte %.4f\n", split, r.Tokens, r.Loss, r.PPL, r.BPB)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "checkpoint directory or run out_dir")
	cmd.Flags().StringVar(&dataDir, "data", "", "prepared data directory")
	cmd.Flags().StringVar(&split, "split", "validation", "split to evaluate")
	cmd.Flags().IntVar(&batch, "batch", 8, "windows per batch")
	cmd.Flags().IntVar(&seq, "seq", 128, "window length")
	cmd.Flags().IntVar(&batches, "batches", 0, "at most this many batches (0: all)")
	cmd.Flags().IntVar(&threads, "threads", 2, "threads")
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("data")
	return cmd
}

func generateCmd() *cobra.Command {
	var model, prompt string
	var temp float64
	var topK, maxTokens int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Sample text from a model with a key/value cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kernels.SetThreads(1)
			m, tok, err := loadModel(model)
			if err != nil {
				return err
			}
			if temp < 0 || topK < 0 || maxTokens < 0 {
				return inputf("--temperature, --top-k and --max-tokens must not be negative")
			}
			ids := append([]int32{tok.ID(bpe.BOS)}, tok.Encode(nil, prompt)...)
			if len(ids) >= m.MaxSeq {
				return inputf("--prompt is %d tokens; the model's context is %d", len(ids), m.MaxSeq)
			}
			d := layers.NewDecoder(m)
			s := layers.NewSampler(temp, topK, seed)
			var logits []float32
			for _, id := range ids {
				if logits, err = d.Step(id); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprint(out, prompt)
			eos := tok.ID(bpe.EOS)
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
	cmd.MarkFlagRequired("model")
	return cmd
}
