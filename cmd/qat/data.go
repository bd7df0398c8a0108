package main

import (
	"fmt"
	"regexp"
	"time"

	"github.com/spf13/cobra"

	"qat/data"
	"qat/data/bpe"
)

func dataCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Prepare datasets"}
	var inputs []string
	var tokPath, out, valRule string
	var vocab, shardTokens int
	prep := &cobra.Command{
		Use:   "prepare",
		Short: "Tokenize text files into Parquet shards with a train/validation split",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return inputf("--out is required")
			}
			rule, err := regexp.Compile(valRule)
			if err != nil {
				return inputf("--validation %q: %v", valRule, err)
			}
			if shardTokens < 1 {
				return inputf("--shard-tokens %d: must be positive", shardTokens)
			}
			files, err := data.Sources(inputs)
			if err != nil {
				return err
			}
			texts, err := data.ReadTexts(files)
			if err != nil {
				return err
			}
			var tok *bpe.Tokenizer
			t0 := time.Now()
			if tokPath != "" {
				if tok, err = bpe.Load(tokPath); err != nil {
					return inputf("--tokenizer: %v", err)
				}
			} else {
				if tok, err = bpe.Train(texts, vocab); err != nil {
					return inputf("--vocab: %v", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "trained a %d-token BPE tokenizer on %d files in %s\n", vocab, len(files), time.Since(t0).Round(time.Millisecond))
			}
			m, err := data.Prepare(files, texts, tok, out, rule, shardTokens)
			if err != nil {
				return err
			}
			for _, s := range []string{"train", "validation"} {
				sp := m.Splits[s]
				fmt.Fprintf(cmd.OutOrStdout(), "%-10s %4d documents, %9d tokens, %9d bytes (%.2f bytes/token), %d shard(s)\n",
					s, sp.Docs, sp.Tokens, sp.Bytes, float64(sp.Bytes)/float64(max(sp.Tokens, 1)), len(sp.Shards))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (manifest.json, tokenizer.json, shards) in %s\n", out, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
	prep.Flags().StringSliceVar(&inputs, "input", []string{"../shared/data/sotu"}, "text files or directories of *.txt")
	prep.Flags().StringVar(&tokPath, "tokenizer", "", "tokenizer.json to use (default: train one on the input)")
	prep.Flags().IntVar(&vocab, "vocab", 4096, "vocabulary size of a trained tokenizer")
	prep.Flags().StringVar(&out, "out", "", "output directory")
	prep.Flags().StringVar(&valRule, "validation", data.ValidationYear7.String(), "file names matching this go regexp are validation")
	prep.Flags().IntVar(&shardTokens, "shard-tokens", 1<<20, "tokens per Parquet shard")
	cmd.AddCommand(prep)
	return cmd
}
