#!/usr/bin/env bash
# The optimizer-states table (fp32/int8/fp8 moments; peak RSS measured once): tools/results/states.py.
#
#   tools/results/states.sh MODEL [--seeds 1,2,3] [--rows a,b] [--prune]
#   tools/results/states.sh MODEL --smoke
#
# Runs then renders its section of docs/results.md: tools/results/table.sh.
TABLE_SH=states.sh exec "$(dirname "$0")/table.sh" states "$@"
