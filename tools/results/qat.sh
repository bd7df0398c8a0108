#!/usr/bin/env bash
# The QAT presets table (FP32, control, RTN and QAT per preset, input kurtosis): tools/results/qat.py.
#
#   tools/results/qat.sh MODEL [--seeds 1,2,3] [--rows a,b] [--prune]
#   tools/results/qat.sh MODEL --smoke
#
# Runs then renders its section of docs/results.md: tools/results/table.sh.
TABLE_SH=qat.sh exec "$(dirname "$0")/table.sh" qat "$@"
