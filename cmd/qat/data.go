package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"qat/data"
	"qat/data/bpe"
	"qat/data/chat"
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
			docs, err := data.ReadInputs(files)
			if err != nil {
				return err
			}
			t0 := time.Now()
			var v *data.Vocab
			if tokPath != "" {
				if v, err = loadVocab(tokPath); err != nil {
					return err
				}
			} else {
				for _, d := range docs {
					if d.Messages != nil {
						return inputf("%s: a conversation needs the model's chat template: give --tokenizer a model directory (tokenizer.json, tokenizer_config.json with chat_template)", d.Name)
					}
				}
				var texts []string
				for _, d := range docs {
					texts = append(texts, d.Text)
				}
				tok, err := bpe.Train(texts, vocab)
				if err != nil {
					return inputf("--vocab: %v", err)
				}
				if v, err = data.OwnVocab(tok); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "trained a %d-token BPE tokenizer on %d files in %s\n", vocab, len(files), time.Since(t0).Round(time.Millisecond))
			}
			m, err := data.PrepareInputs(docs, v, out, rule, shardTokens)
			if err != nil {
				return err
			}
			for _, s := range []string{"train", "validation"} {
				sp := m.Splits[s]
				fmt.Fprintf(cmd.OutOrStdout(), "%-10s %4d documents, %9d tokens, %9d bytes (%.2f bytes/token), %d shard(s)\n",
					s, sp.Docs, sp.Tokens, sp.Bytes, float64(sp.Bytes)/float64(max(sp.Tokens, 1)), len(sp.Shards))
				if m.LossMask {
					fmt.Fprintf(cmd.OutOrStdout(), "%-10s %9d of the tokens are the assistant's (the loss counts only these)\n", "", sp.Targets)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (manifest.json, tokenizer.json, shards) in %s\n", out, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
	prep.Flags().StringSliceVar(&inputs, "input", []string{"../shared/data/sotu"}, "files or directories of *.txt, *.jsonl (text or messages per line), *.parquet (a text column)")
	prep.Flags().StringVar(&tokPath, "tokenizer", "", "tokenizer.json to use, or a Hugging Face model directory (tokenizer.json, tokenizer_config.json with its chat template) (default: train one on the input)")
	prep.Flags().IntVar(&vocab, "vocab", 4096, "vocabulary size of a trained tokenizer")
	prep.Flags().StringVar(&out, "out", "", "output directory")
	prep.Flags().StringVar(&valRule, "validation", data.ValidationYear7.String(), "file names matching this go regexp are validation")
	prep.Flags().IntVar(&shardTokens, "shard-tokens", 1<<20, "tokens per Parquet shard")
	cmd.AddCommand(prep, tokenizeCmd())
	return cmd
}

// tokenizeCmd prints the ids qat gives a text file as a model's input
// (BOS when the tokenizer has one, then the text, as qat eval --text and
// qat generate do), in llama-tokenize --ids's form, so that another
// tokenizer (llama.cpp's of an exported GGUF) can be compared with ours.
func tokenizeCmd() *cobra.Command {
	var tokPath, textPath string
	var noBOS bool
	cmd := &cobra.Command{
		Use:   "tokenize",
		Short: "Print the ids of a text file as a Python list",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tokPath == "" || textPath == "" {
				return inputf("--tokenizer and --text are required")
			}
			v, err := loadVocab(tokPath)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(textPath)
			if err != nil {
				return inputf("--text: %v", err)
			}
			if !utf8.Valid(b) {
				return inputf("--text: %s is not UTF-8", textPath)
			}
			var ids []int32
			if v.BOS >= 0 && !noBOS {
				ids = append(ids, v.BOS)
			}
			ids = v.Encode(ids, string(b))
			w := bufio.NewWriter(cmd.OutOrStdout())
			w.WriteByte('[')
			for i, id := range ids {
				if i > 0 {
					w.WriteString(", ")
				}
				w.WriteString(strconv.Itoa(int(id)))
			}
			w.WriteString("]\n")
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&tokPath, "tokenizer", "", "tokenizer.json, or a Hugging Face model or data directory (tokenizer.json, tokenizer_config.json)")
	cmd.Flags().StringVar(&textPath, "text", "", "text file to tokenize (as one document)")
	cmd.Flags().BoolVar(&noBOS, "no-bos", false, "leave out the BOS that starts a document")
	return cmd
}

// loadVocab opens --tokenizer: a tokenizer.json (documents framed by its
// <|bos|> and <|eos|>, no chat template), or a model directory whose
// tokenizer_config.json gives the bos/eos tokens and the chat template.
func loadVocab(path string) (*data.Vocab, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, inputf("--tokenizer: %v", err)
	}
	if !st.IsDir() {
		tok, err := bpe.Load(path)
		if err != nil {
			return nil, inputf("--tokenizer: %v", err)
		}
		return data.OwnVocab(tok)
	}
	// a Hugging Face tokenizer, or one of ours saved beside a
	// tokenizer_config.json; the config is read here for both (bpe reads
	// an imported one's too), so chat data works with either
	tok, err := bpe.LoadDir(path)
	if err != nil {
		return nil, inputf("--tokenizer: %v", err)
	}
	tj, err := os.ReadFile(filepath.Join(path, "tokenizer.json"))
	if err != nil {
		return nil, inputf("--tokenizer: %v", err)
	}
	cfg, err := data.ReadTokenizerConfig(path)
	if err != nil {
		return nil, err
	}
	var tmpl *chat.Template
	if cfg.ChatTemplate != "" {
		if tmpl, err = chat.Compile(cfg.ChatTemplate, cfg.BOS, cfg.EOS); err != nil {
			return nil, inputf("--tokenizer: %s: %v", filepath.Join(path, "tokenizer_config.json"), err)
		}
	}
	v, err := data.NewVocab(tok, cfg.BOS, cfg.EOS, tmpl, tj, cfg.Raw)
	if err != nil {
		return nil, err
	}
	// the data directory is a tokenizer directory too: what generation
	// and the template need comes along
	for _, name := range []string{"generation_config.json", "chat_template.jinja"} {
		p := filepath.Join(path, name)
		if st, err := os.Stat(p); err != nil || st.Size() > data.MaxConfigBytes {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			v.Files[name] = b
		}
	}
	return v, nil
}
