package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"qat/checkpoint"
	"qat/lora"
)

func mergeCmd() *cobra.Command {
	var model, out string
	var force bool
	cmd := &cobra.Command{
		Use:   "merge",
		Short: "Fold a checkpoint's adapters (LR-QAT, LoRA-QAT) into plain weights",
		Long: `Fold the low-rank adapters of a checkpoint trained with a lora section into
plain weights and write a checkpoint without adapters. LR-QAT layers become
their integer weights times their trained scales under fixed-step int
quantizers, so the merged model's logits equal the adapted model's bit for
bit and qat export packs it like any QAT checkpoint; LoRA-QAT layers become
W0 + (alpha/r) A B under their weight quantizer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || out == "" {
				return inputf("--model and --out are required")
			}
			res, err := reserveOut(out, force, model)
			if err != nil {
				return err
			}
			defer res.Abort()
			cm, err := checkpoint.Load(model)
			if err != nil {
				return inputf("--model: %v", err)
			}
			if !cm.Adapters {
				return inputf("--model %s: no lora.json: the checkpoint has no adapters", cm.Path)
			}
			m, tok, rules := cm.Model, cm.Tok, cm.Rules
			merged, n, err := lora.Merge(m, rules)
			if err != nil {
				return err
			}
			if err := res.Fill(func(tmp string) error { return checkpoint.Write(tmp, m, tok, merged) }); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "merged the adapters of %d linear layers into %s\n", n, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "checkpoint directory or run out_dir with adapters")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the merged checkpoint to")
	forceFlag(cmd, &force)
	return cmd
}
