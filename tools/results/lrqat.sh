#!/usr/bin/env bash
# The LR-QAT table (full QAT, LoRA-QAT, LR-QAT at W4; memory and step time measured once): tools/results/lrqat.py.
#
#   tools/results/lrqat.sh MODEL [--seeds 1,2,3] [--rows a,b] [--prune]
#   tools/results/lrqat.sh MODEL --smoke
#
# Runs then renders its section of docs/results.md: tools/results/table.sh.
TABLE_SH=lrqat.sh exec "$(dirname "$0")/table.sh" lrqat "$@"
