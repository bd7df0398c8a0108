package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"qat/checkpoint"
	"qat/data"
	"qat/eval"
	"qat/kernels"
	qatpkg "qat/qat"
	"qat/qat/ptq"
)

func ptqCmd() *cobra.Command {
	var method, preset, rulesPath, scale, model, out, dataDir string
	var calibBatches, batch, seq, evalBatches, threads int
	var seed uint64
	var actOrder bool
	var outliers float64
	var gwqBase string
	var force, keepActs bool
	var rotateKind string
	var rotateSeed uint64
	cmd := &cobra.Command{
		Use:   "ptq",
		Short: "Post-training quantization of a checkpoint (the baseline QAT has to beat)",
		Long: `Post-training quantization of a checkpoint: attaches the quantizers of a
preset (or of a rules file in quant.json's format), sets their steps and
writes a checkpoint that qat eval, qat generate and qat train (init_from)
read like any other.

--method rtn rounds to nearest. --method gptq (arXiv 2210.17323) quantizes
symmetric int weights per channel or group column by column, compensating
each column's rounding error on the others through the inverse Hessian of
the layer's inputs (collected on --calib-batches batches, decoder block by
decoder block); its scales are kept as fixed steps. --method qqq (arXiv
2406.09904, with --preset w4a8-qqq) first smooths the inputs of each group
of linears that share one (per-channel scales searched to minimise the
quantized product's error on calibration rows, folded into the RMSNorm or
the producing linear so the full-precision function is unchanged), then
runs GPTQ. --method gwq (arXiv 2411.00850) keeps the --outliers fraction of
each weight with the largest loss gradients (|dL/dW| on the calibration
batches) in fp16 and rounds the rest to nearest (--gwq-base rtn) or with
GPTQ (--gwq-base gptq), the kept values left out of its ranges. --scale minmax keeps the preset's ranges;
--scale mse replaces min/max steps of int weights (and of per-tensor int
activations) with steps found by a search over clipping ratios that
minimises the squared error. Activation steps are calibrated on
--calib-batches batches of the training split of --data; with --data the
result is also evaluated on the validation split.

A checkpoint trained with quantizers (a QAT run) is quantized from its
full-precision weights: its own quantizers are replaced by the preset's,
or with --keep-activations its trained input quantizers (learned clip
values, arXiv 2404.03605; LSQ steps) are kept as trained and only the
weights (and linears it had no input quantizer on) take the preset's.

--rotate hadamard (QuaRot, arXiv 2404.00456) rotates the full-precision
model before anything else, so RTN and GPTQ quantize the rotated weights
and calibrate on the rotated activations: RMSNorm weights are folded into
the linears that read them, a tied head is untied, the residual stream
is rotated by a Hadamard matrix with random signs (--rotate-seed), and
down_proj's input gets an online Hadamard transform that the checkpoint
records (qat_down_hadamard in config.json) and every runner applies. The
logits in full precision are unchanged; outlier channels are spread
before quantization.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kernels.SetThreads(threads)
			if method != ptq.RTN && method != ptq.GPTQ && method != ptq.QQQ && method != ptq.GWQ {
				return inputf("--method %q: want %s", method, ptq.Methods)
			}
			if gwqBase != "rtn" && gwqBase != "gptq" {
				return inputf("--gwq-base %q: want rtn or gptq", gwqBase)
			}
			if !(outliers > 0 && outliers < 0.5) {
				return inputf("--outliers %g: want a fraction in (0, 0.5)", outliers)
			}
			if rotateKind != "" && rotateKind != ptq.Hadamard {
				return inputf("--rotate %q: want %s (or leave it out)", rotateKind, ptq.Hadamard)
			}
			if rotateKind != "" && keepActs {
				return inputf("--rotate with --keep-activations: the trained input quantizers saw the unrotated inputs")
			}
			if rotateKind != "" && method == ptq.QQQ {
				return inputf("--rotate with --method qqq: QQQ's smoothing of down_proj's input folds into up_proj, which the online Hadamard transform separates from it; use rtn or gptq")
			}
			if cmd.Flags().Changed("rotate-seed") && rotateKind == "" {
				return inputf("--rotate-seed without --rotate hadamard")
			}
			if scale != "minmax" && scale != "mse" {
				return inputf("--scale %q: want minmax or mse", scale)
			}
			var rules []qatpkg.Rule
			switch {
			case (preset == "") == (rulesPath == ""):
				return inputf("give one of --preset or --rules")
			case preset != "":
				r, ok := qatpkg.Presets[preset]
				if !ok {
					return inputf("--preset %q: want one of %s", preset, qatpkg.PresetNames())
				}
				rules = append(rules, r...)
			default:
				b, err := os.ReadFile(rulesPath)
				if err != nil {
					return inputf("--rules: %v", err)
				}
				if err := json.Unmarshal(b, &rules); err != nil {
					return inputf("--rules %s: %v", rulesPath, err)
				}
			}
			if scale == "mse" {
				rules = withMSE(rules)
			}
			res, err := reserveOut(out, force, model)
			if err != nil {
				return err
			}
			defer res.Abort()
			m, tok, err := loadModel(model)
			if err != nil {
				return err
			}
			if seq == 0 {
				seq = m.MaxSeq
			}
			if seq < 0 || seq > m.MaxSeq || batch <= 0 || calibBatches <= 0 {
				return inputf("--seq %d must be in [1, %d]; --batch %d and --calib-batches %d positive", seq, m.MaxSeq, batch, calibBatches)
			}
			if method == ptq.GWQ {
				rules = qatpkg.WithOutliers(rules, outliers)
			}
			// calibration runs on the training split, evaluation on the
			// validation split
			calib := ptq.Calibration{Batch: batch, Seq: seq, Batches: calibBatches, Seed: seed, Progress: cmd.ErrOrStderr()}
			var ds *data.Dataset
			if dataDir != "" {
				if calib.Data, err = data.LoadSplit(dataDir, "train", m.Vocab); err != nil {
					return err
				}
				if ds, err = data.LoadSplit(dataDir, "validation", m.Vocab); err != nil {
					return err
				}
			} else if method != ptq.RTN {
				return inputf("--data is required: calibration runs on its training split")
			}
			g := qatpkg.DefaultGPTQ
			g.ActOrder = actOrder
			trained := len(qatpkg.TrainedInputs(m))
			if keepActs && trained == 0 {
				return inputf("--keep-activations: %s has no trained input quantizers (learned clip values or steps)", model)
			}
			if rotateKind != "" && m.DownHadamard != "" {
				return inputf("--rotate: %s is rotated already (qat_down_hadamard %q in its config.json)", model, m.DownHadamard)
			}
			rules, rep, err := ptq.Quantize(m, rules, ptq.Options{Method: method, GWQBase: gwqBase, GPTQ: g, KeepInputs: keepActs,
				Rotate: rotateKind, RotateSeed: rotateSeed}, calib)
			if err != nil {
				return inputf("--method %s: %v", method, err)
			}
			if r := rep.Rotation; r != nil {
				untied := ""
				if r.Untied {
					untied = "; the tied head was untied"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rotated: residual stream by %s, down_proj input by the %s Hadamard transform of size %d%s\n",
					r.Residual, r.Online, m.FFNHidden, untied)
			}
			switch {
			case rep.Inputs > 0:
				fmt.Fprintf(cmd.OutOrStdout(), "kept the trained input quantizers of %d linear layers\n", rep.Inputs)
			case trained > 0:
				fmt.Fprintf(cmd.ErrOrStderr(), "note: the trained input quantizers of %d linear layers were replaced by the preset's (--keep-activations keeps them)\n", trained)
			}
			if rep.Outliers > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "gwq: kept %d weights of %d linear layers in fp16 (the largest |dL/dW| on %d batches)\n", rep.Kept, rep.Outliers, calibBatches)
			}
			if method == ptq.QQQ {
				fmt.Fprintf(cmd.OutOrStdout(), "qqq: smoothed the inputs of %d linear groups\n", rep.Smoothed)
			}
			if rep.Quantized > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "gptq: quantized %d linear layers on %d batches of %d x %d tokens\n", rep.Quantized, calibBatches, batch, seq)
			}
			if qatpkg.NeedsCalibration(m) {
				if calib.Data == nil {
					return inputf("--data is required: calibration runs on its training split")
				}
				n, err := ptq.Calibrate(m, calib)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "calibrated %d activation quantizers on %d batches\n", n, calibBatches)
			}
			err = res.Fill(func(tmp string) error { return checkpoint.Write(tmp, m, tok, rules) })
			if err != nil {
				return fmt.Errorf("--out %s: %w", out, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", out)
			if ds != nil {
				r := eval.Evaluate(m, tok, ds, batch, seq, evalBatches)
				fmt.Fprintf(cmd.OutOrStdout(), "validation (%d tokens): loss %.4f  perplexity %.2f  bits per byte %.4f\n", r.Tokens, r.Loss, r.PPL, r.BPB)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&method, "method", "rtn", "rtn (round to nearest), gptq (Hessian-compensated rounding), qqq (smoothing + gptq) or gwq (gradient-located fp16 outliers + rtn)")
	cmd.Flags().Float64Var(&outliers, "outliers", 0.01, "gwq: the fraction of each weight kept in fp16")
	cmd.Flags().StringVar(&gwqBase, "gwq-base", "rtn", "gwq: how the rest is quantized, rtn or gptq (its compensation spreads over the kept weights too)")
	cmd.Flags().BoolVar(&actOrder, "act-order", true, "gptq: quantize inputs in order of decreasing Hessian diagonal (groups then keep static scales)")
	cmd.Flags().StringVar(&preset, "preset", "", "quantization preset")
	cmd.Flags().StringVar(&rulesPath, "rules", "", "rules file (JSON, quant.json's format) instead of a preset")
	cmd.Flags().StringVar(&scale, "scale", "minmax", "minmax, or mse (clipping search) for int weights and per-tensor activations")
	cmd.Flags().StringVar(&model, "model", "", "full-precision checkpoint directory or run out_dir")
	cmd.Flags().StringVar(&out, "out", "", "output checkpoint directory")
	cmd.Flags().StringVar(&dataDir, "data", "", "prepared data: calibration (train split) and evaluation (validation)")
	cmd.Flags().IntVar(&calibBatches, "calib-batches", 8, "calibration batches")
	cmd.Flags().IntVar(&batch, "batch", 8, "windows per batch")
	cmd.Flags().IntVar(&seq, "seq", 0, "window length (0: the model's context)")
	cmd.Flags().IntVar(&evalBatches, "batches", 0, "evaluate on at most this many batches (0: all)")
	cmd.Flags().IntVar(&threads, "threads", 2, "threads")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the calibration batches")
	cmd.Flags().StringVar(&rotateKind, "rotate", "", "hadamard: rotate the model before quantizing it (QuaRot: residual stream and down_proj input)")
	cmd.Flags().Uint64Var(&rotateSeed, "rotate-seed", 1, "--rotate: seed of the residual rotation's random signs")
	cmd.Flags().BoolVar(&keepActs, "keep-activations", false, "keep the checkpoint's trained input quantizers (learned clip values, LSQ steps) instead of the preset's activations")
	forceFlag(cmd, &force)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("out")
	return cmd
}

// withMSE returns rules whose int min/max steps, of weights and of
// per-tensor activations, become mse steps (per-token ones stay dynamic).
func withMSE(rules []qatpkg.Rule) []qatpkg.Rule {
	out := make([]qatpkg.Rule, len(rules))
	for i, r := range rules {
		for _, s := range []**qatpkg.Spec{&r.Weights, &r.Activations, &r.KVCache} {
			if *s != nil && (*s).Format == kernels.Int && (*s).Scale == "minmax" && ((*s).Granularity == "tensor" || s == &r.Weights) {
				c := **s
				c.Scale = "mse"
				*s = &c
			}
		}
		out[i] = r
	}
	return out
}
