package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"qat/data/gguf"
	"qat/export"
)

func exportCmd() *cobra.Command {
	var model, format, quant, out, name string
	var force bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write a checkpoint as a packed model: GGUF for llama.cpp, or packed safetensors",
		Long: `Write a checkpoint as a packed model.

--format gguf --quant q4_0|q8_0|f16|f32 writes a GGUF v3 file that llama.cpp
and ollama load. Block matrices take --quant; embeddings, an untied output
matrix and norms stay f32 (f16 with --quant f16). A model trained on the
Q4_0 or Q8_0 grid (preset w4a16-g32, or q8_0 rules) exports without loss:
the file's weights are the fake-quant weights bit for bit. Other models are
quantized with llama.cpp's reference rule (the post-training baseline).

--format safetensors-packed --out DIR writes the int weight quantizers'
codes packed into int32 words with their scales (compressed-tensors'
pack-quantized layout, scheme in config.json's quantization_config): the
codes and scales of the trained quantizers (LSQ steps, mse steps or min/max),
so unpacking gives the fake-quant weights bit for bit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// refused before the model is read: --out must not be the input,
			// nor, without --force, anything qat did not write
			if err := checkOutFile(out, force, model); err != nil {
				return err
			}
			m, tok, err := loadModel(model)
			if err != nil {
				return err
			}
			switch format {
			case "gguf":
				if name == "" {
					name = filepath.Base(strings.TrimSuffix(model, "/"))
				}
				f, err := export.GGUF(m, tok, quant, name)
				if err != nil {
					return inputf("%v", err)
				}
				if err := gguf.Write(out, f); err != nil {
					return fmt.Errorf("--out: %w", err)
				}
			case "safetensors-packed":
				if err := export.PackedSafetensors(m, tok, out, force); err != nil {
					return inputf("%v", err)
				}
				out = filepath.Join(out, "model.safetensors")
			default:
				return inputf("--format %q: want gguf or safetensors-packed", format)
			}
			st, _ := os.Stat(out)
			if format == "gguf" {
				format += ", " + quant
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %.1f MB)\n", out, format, float64(st.Size())/1e6)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "checkpoint directory or run out_dir")
	cmd.Flags().StringVar(&format, "format", "gguf", "gguf or safetensors-packed")
	cmd.Flags().StringVar(&quant, "quant", "q4_0", "q4_0, q8_0, f16 or f32")
	cmd.Flags().StringVar(&out, "out", "", "output file (gguf) or directory (safetensors-packed)")
	cmd.Flags().StringVar(&name, "name", "", "general.name (default: the model directory's name)")
	forceFlag(cmd, &force)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("out")
	return cmd
}
