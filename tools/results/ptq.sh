#!/usr/bin/env bash
# The post-training table (RTN, GPTQ, QQQ, GWQ per grid; QAT from each start): tools/results/ptq.py; MODEL tiny or small.
#
#   tools/results/ptq.sh MODEL [--seeds 1,2,3] [--rows a,b] [--prune]
#   tools/results/ptq.sh MODEL --smoke
#
# Runs then renders its section of docs/results.md: tools/results/table.sh.
TABLE_SH=ptq.sh exec "$(dirname "$0")/table.sh" ptq "$@"
