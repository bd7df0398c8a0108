#!/usr/bin/env bash
# The W4A4 table (FP, RTN, GPTQ, Hadamard, QAT, activation regularization; tiny or nano): tools/results/w4a4.py.
#
#   tools/results/w4a4.sh MODEL [--seeds 1,2,3] [--rows a,b] [--prune]
#   tools/results/w4a4.sh MODEL --smoke
#
# Runs then renders its section of docs/results.md: tools/results/table.sh.
TABLE_SH=w4a4.sh exec "$(dirname "$0")/table.sh" w4a4 "$@"
