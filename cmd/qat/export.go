package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"qat/data/gguf"
	"qat/export"
)

func exportCmd() *cobra.Command {
	var model, format, quant, out, name, dtype, shard string
	var force bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write a checkpoint for inference: transformers, vLLM (compressed-tensors), llama.cpp (GGUF)",
		Long: `Write a checkpoint for an inference engine.

--format hf --out DIR [--dtype bf16|f16|f32] [--max-shard-size 5GB] writes a
directory transformers loads as is (AutoModelForCausalLM.from_pretrained):
config.json, generation_config.json, the tokenizer and the weights, split
into model-00001-of-0000N.safetensors shards with
model.safetensors.index.json past --max-shard-size. Quantized linears are
written as their fake-quant weights, so transformers computes with the
weights the model trained with (bf16 and f16 round them to nearest even).
Activation quantizers have no Hugging Face form: the linears that had them
are listed; --format compressed-tensors keeps them.

--format compressed-tensors --out DIR [--dtype bf16|f16|f32] [--max-shard-size 5GB]
writes what vLLM runs as trained (quantization_config in config.json, the
codes and float32 scales of the trained quantizers): int4/int8 weight-only
models (w4a16-g32, int channels or groups of 32/64/128) as pack-quantized
(vLLM's WNA16); int weights per channel with dynamic per-token int8
activations (w8a8, and w4a8, w4a8-qqq, w4a8-qqq-g128 as their exact int8
codes) as int-quantized (W8A8 int8); fp8 as float-quantized (float8_e4m3fn
weights, dynamic per-token fp8 activations or none). --dtype is that of the
other tensors. A model vLLM has no kernel for (w4a4, GWQ outliers, int2,
other group sizes, a quantized KV cache) is refused, naming the nearest
preset it runs. An untied quantized lm_head is written as its fake-quant
weight (vLLM computes the head unquantized).

--format gguf --quant q4_0|q8_0|f16|f32 writes a GGUF v3 file that llama.cpp
and ollama load. Block matrices take --quant; embeddings, an untied output
matrix and norms stay f32 (f16 with --quant f16). A model trained on the
Q4_0 or Q8_0 grid (preset w4a16-g32, or q8_0 rules) exports without loss:
the file's weights are the fake-quant weights bit for bit. Other models are
quantized with llama.cpp's reference rule (the post-training baseline).

--format safetensors-packed --out DIR writes the int weight quantizers'
codes packed into int32 words with their scales (compressed-tensors'
pack-quantized layout, with qat's extensions: restricted grids, GWQ's
outliers), which qat eval --packed runs: unpacking gives the fake-quant
weights bit for bit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// every flag checked before the model is read
			var maxShard int64
			switch format {
			case "hf", "compressed-tensors":
				if _, err := export.ParseDType(dtype); err != nil {
					return inputf("--dtype: %v", err)
				}
				var err error
				if maxShard, err = export.ParseShardSize(shard); err != nil {
					return inputf("--max-shard-size: %v", err)
				}
			case "gguf", "safetensors-packed":
				if cmd.Flags().Changed("dtype") || cmd.Flags().Changed("max-shard-size") {
					return inputf("--dtype and --max-shard-size are for --format hf and compressed-tensors")
				}
			default:
				return inputf("--format %q: want hf, compressed-tensors, gguf or safetensors-packed", format)
			}
			if cmd.Flags().Changed("quant") && format != "gguf" {
				return inputf("--quant is for --format gguf (--format %s keeps the trained quantizers)", format)
			}
			if format == "gguf" {
				// refused before the model is read: --out must not be the
				// input, nor, without --force, anything qat did not write
				if err := checkOutFile(out, force, model); err != nil {
					return err
				}
				m, tok, err := loadModel(model)
				if err != nil {
					return err
				}
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
				st, _ := os.Stat(out)
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (gguf, %s, %.1f MB)\n", out, quant, float64(st.Size())/1e6)
				return nil
			}
			// a directory: claimed before the model is read (the input, a
			// directory qat did not write, one being written: exit 2)
			res, err := reserveOut(out, force, model)
			if err != nil {
				return err
			}
			defer res.Abort()
			m, tok, err := loadModel(model)
			if err != nil {
				return err
			}
			switch format {
			case "hf":
				var r *export.HFResult
				err = res.Fill(func(tmp string) error {
					var err error
					r, err = export.HFInto(m, tok, tmp, export.HFOptions{DType: dtype, MaxShardSize: maxShard})
					return err
				})
				if err != nil {
					return exportErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (hf, %s, %d weight file(s), %.1f MB)\n", out, dtype, len(r.Files), float64(r.Bytes)/1e6)
				if len(r.ActQuant) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "note: %d layers quantized their inputs or KV cache in training (%s, ...): transformers runs them on full-precision activations; --format compressed-tensors keeps the linears' for vLLM\n",
						len(r.ActQuant), r.ActQuant[0])
				}
			case "compressed-tensors":
				var r *export.CTResult
				err = res.Fill(func(tmp string) error {
					var err error
					r, err = export.CompressedTensorsInto(m, tok, tmp, export.CTOptions{DType: dtype, MaxShardSize: maxShard})
					return err
				})
				if err != nil {
					return exportErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (compressed-tensors, %s, %d weight file(s), %.1f MB)\n", out, strings.Join(r.Formats, ", "), len(r.Files), float64(r.Bytes)/1e6)
				if r.RoundedScales > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "note: %d of %d weight-only scales are not %s values: vLLM's WNA16 kernels compute with them rounded to it (Q4_0/Q8_0 scales are exact with --dtype f16)\n",
						r.RoundedScales, r.Scales, dtype)
				}
				if len(r.Dequantized) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "note: %s written as its fake-quant weights: vLLM computes the head unquantized\n", strings.Join(r.Dequantized, ", "))
				}
			case "safetensors-packed":
				if err := res.Fill(func(tmp string) error { return export.PackedSafetensorsInto(m, tok, tmp) }); err != nil {
					return exportErr(err)
				}
				st, _ := os.Stat(filepath.Join(out, "model.safetensors"))
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (safetensors-packed, %.1f MB)\n", filepath.Join(out, "model.safetensors"), float64(st.Size())/1e6)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "checkpoint directory or run out_dir")
	cmd.Flags().StringVar(&format, "format", "gguf", "hf, compressed-tensors, gguf or safetensors-packed")
	cmd.Flags().StringVar(&quant, "quant", "q4_0", "gguf only: q4_0, q8_0, f16 or f32")
	cmd.Flags().StringVar(&dtype, "dtype", "bf16", "hf and compressed-tensors: bf16, f16 or f32 (compressed-tensors: the unquantized tensors and vLLM's compute dtype; scales are float32)")
	cmd.Flags().StringVar(&shard, "max-shard-size", "5GB", "hf and compressed-tensors: the largest weight file (5GB = 5*10^9 bytes, 2GiB = 2*2^30)")
	cmd.Flags().StringVar(&out, "out", "", "output file (gguf) or directory (the others)")
	cmd.Flags().StringVar(&name, "name", "", "gguf only: general.name (default: the model directory's name)")
	forceFlag(cmd, &force)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("out")
	return cmd
}

// exportErr is an export's error: the model's (a quantizer the format
// cannot hold, adapters not merged) are the user's to fix (exit 2), an
// I/O failure is not.
func exportErr(err error) error {
	var bad interface{ BadInput() }
	var pe *os.PathError
	switch {
	case errors.As(err, &bad):
		return err
	case errors.As(err, &pe):
		return fmt.Errorf("--out: %w", err)
	}
	return inputf("%v", err)
}
