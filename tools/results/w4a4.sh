#!/usr/bin/env bash
# Regenerates the W4A4 table of one model from nothing and writes it into
# docs/results.md between its markers (the other sections stay as they are):
#
#   tools/results/w4a4.sh MODEL [--seeds 1,2,3] [--rows a,b] [--prune]
#   tools/results/w4a4.sh MODEL --smoke    # 30 steps, 4 batches: proves the pipeline
#
# Builds bin/qat from the working tree, prepares the data with it (once per
# commit, in the table's directory), runs every unit that has no result at
# this commit and config
# (tools/results/w4a4.py run: progress on stderr, one result file per row and
# seed under runs/results/w4a4-MODEL/; a killed run resumes where it was),
# then renders the section (tools/results/w4a4.py render). A failed row is
# shown as missing; the exit status is then 1. --smoke keeps everything in
# runs/results-smoke (RESULTS_SMOKE_DIR), its section in a copy of
# docs/results.md there, never in docs/. QAT_BIN builds and runs the binary
# at another path than bin/qat.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || { echo "usage: tools/results/w4a4.sh MODEL [--smoke] [--seeds 1,2,3] [--rows a,b] [--prune]" >&2; exit 2; }
model=$1
shift
# the section always shows every row (those not run as missing): render
# gets the arguments but --rows and --prune
smoke=0 render=() skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case $a in
    --smoke) smoke=1; render+=("$a") ;;
    --prune | --rows=*) ;;
    --rows) skip=1 ;;
    *) render+=("$a") ;;
  esac
done
root=runs/results doc=docs/results.md
if [ $smoke = 1 ]; then
  root=${RESULTS_SMOKE_DIR:-runs/results-smoke}
  mkdir -p "$root"
  cp docs/results.md "$root/results.md"
  doc=$root/results.md
fi
export QAT_BIN=${QAT_BIN:-bin/qat}
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE go build -o "$QAT_BIN" ./cmd/qat
status=0
/usr/bin/python3 tools/results/w4a4.py run "$model" --root "$root" "$@" || status=$?
[ $status != 2 ] || exit 2
cmd="tools/results/w4a4.sh $model"
[ $smoke = 0 ] || cmd="$cmd --smoke"
/usr/bin/python3 tools/results/w4a4.py render "$model" --root "$root" "${render[@]}" >"$root/w4a4-$model.md"
/usr/bin/python3 tools/results/section.py "$doc" "w4a4-$model" --command "$cmd" --before "<!-- BEGIN generated: results.sh" <"$root/w4a4-$model.md"
echo "wrote the w4a4-$model section of $doc (status $status)" >&2
exit $status
