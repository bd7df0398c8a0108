#!/usr/bin/env bash
# Regenerates one seeded table of docs/results.md from nothing and writes it
# between its markers (the other sections stay as they are):
#
#   tools/results/table.sh TABLE MODEL [--seeds 1,2,3] [--rows a,b] [--prune]
#   tools/results/table.sh TABLE MODEL --smoke   # two steps, two batches: proves the pipeline
#
# TABLE is a module of tools/results (w4a4, qat, ptq, lrqat, states; each
# has a TABLE.sh that calls this). Builds bin/qat from the working tree,
# prepares the data with it (once per commit, shared by the tables under the root),
# runs every unit that has no result at this commit and config
# (tools/results/TABLE.py run: progress on stderr, one result file per row
# and seed under runs/results/TABLE-MODEL/; a killed run resumes where it
# was), then renders the section (TABLE.py render), every row of it whatever
# --rows ran (the others as missing). A failed row is shown as missing; the
# exit status is then 1. --smoke keeps everything in runs/results-smoke
# (RESULTS_SMOKE_DIR), its section in a copy of docs/results.md there (made
# once), never in docs/. QAT_BIN builds and runs the binary at another path
# than bin/qat.
set -euo pipefail
cd "$(dirname "$0")/../.."
usage="usage: tools/results/$( [ -n "${TABLE_SH:-}" ] && echo "$TABLE_SH" || echo "table.sh TABLE") MODEL [--smoke] [--seeds 1,2,3] [--rows a,b] [--prune]"
[ $# -ge 2 ] && [ "${1#-}" = "$1" ] && [ "${2#-}" = "$2" ] || { echo "$usage" >&2; exit 2; }
table=$1 model=$2
shift 2
case $table in */* | .* | units | stats | section | test_results | test_tables) echo "tools/results/table.sh: $table is no table" >&2; exit 2 ;; esac
[ -f "tools/results/$table.py" ] || { echo "tools/results/table.sh: no tools/results/$table.py" >&2; exit 2; }
# render gets the arguments but --rows and --prune
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
  [ -f "$root/results.md" ] || cp docs/results.md "$root/results.md"
  doc=$root/results.md
fi
export QAT_BIN=${QAT_BIN:-bin/qat}
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE go build -o "$QAT_BIN" ./cmd/qat
status=0
/usr/bin/python3 "tools/results/$table.py" run "$model" --root "$root" "$@" || status=$?
[ $status != 2 ] || exit 2
cmd="tools/results/$table.sh $model"
[ $smoke = 0 ] || cmd="$cmd --smoke"
/usr/bin/python3 "tools/results/$table.py" render "$model" --root "$root" "${render[@]}" >"$root/$table-$model.md"
/usr/bin/python3 tools/results/section.py "$doc" "$table-$model" --command "$cmd" <"$root/$table-$model.md"
echo "wrote the $table-$model section of $doc (status $status)" >&2
exit $status
