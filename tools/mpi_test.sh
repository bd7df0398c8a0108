#!/usr/bin/env bash
# The data-parallel checks (make mpi-test, part of make test): tiny trained
# for 20 steps by 2 MPI processes of one thread each gives, after every
# step, the loss, gradient norm, weights, optimizer states and run state of
# one process with 2 tape replicas, to the bit: with fp32 and int8 moments,
# ZeRO-1 (optimizer.shard) and LR-QAT adapters; a run resumed from 2
# processes on 1 and from 1 on 2 continues exactly; a kill -9 of rank 1
# ends the job within 10 s with mpirun's message, and --resume continues
# exactly. One line per case; exit 1 on any difference.
#
#   tools/mpi_test.sh [--sotu DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
sotu=../shared/data/sotu
[ "${1:-}" != --sotu ] || sotu=$2
command -v mpirun >/dev/null || { echo "mpi_test: mpirun not found: make mpi-deps installs Open MPI" >&2; exit 1; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none # containers forbid CMA
env -u OPENBLAS_CORETYPE go build -tags mpi -o bin/qat-mpi ./cmd/qat
T=$(mktemp -d /tmp/qat-mpi-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
qat() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bin/qat-mpi "$@"; }
mpi() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE mpirun --allow-run-as-root --oversubscribe -np 2 bin/qat-mpi "$@"; }
# the collectives themselves, on MPI_COMM_WORLD
env -u OPENBLAS_CORETYPE go test -c -tags mpi -o "$T/dist.test" ./dist
if QAT_MPI_NP=2 mpirun --allow-run-as-root --oversubscribe -np 2 "$T/dist.test" -test.run TestMPI >"$T/dist.log" 2>&1; then
  echo "ok   every collective of dist on 2 MPI processes"
else
  echo "FAIL dist's collectives on 2 MPI processes"; tail -20 "$T/dist.log"; exit 1
fi
qat data prepare --input "$sotu" --out "$T/data" >"$T/prepare.log" 2>&1 || { cat "$T/prepare.log"; exit 1; }
S=(--set "data.dir=$T/data" --set train.steps=20 --set train.ckpt_every=1 --set train.keep_ckpts=25 --set train.eval_every=1000
  --set train.eval_batches=2 --set train.no_final_eval=true --set train.log_every=10)
fail=0
# sums DIR: one line per checkpoint file (step, file, sha256; state.json
# without the overrides a resume adds), then one per
# logged step (its loss and gradient norm as written)
sums() {
  for c in "$1"/ckpt-*; do
    for f in model.safetensors optimizer.safetensors; do
      echo "$(basename "$c") $f $(sha256sum <"$c/$f" | cut -c1-16)"
    done
    # the state but the --set overrides a resume records
    echo "$(basename "$c") state.json $(/usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); s.pop("overrides",None); print(json.dumps(s,sort_keys=True))' "$c/state.json" | sha256sum | cut -c1-16)"
  done
  grep -o '"step":[0-9]*,"loss":[^,]*,"lr":[^,]*,"grad_norm":[^,]*' "$1/metrics.jsonl" || true
}
# same NAME WANT GOT [FROM]: the sums of GOT equal WANT's (from checkpoint
# FROM on, for a resumed run)
same() {
  local from=${4:-0} want got
  want=$(sums "$2" | awk -v f="$from" '{s=$1; sub("ckpt-0*","",s); if ($1 ~ /^ckpt/ && s+0 < f) next; if ($0 ~ /^"step"/) {split($0,a,/[:,]/); if (a[2]+0 < f) next}; print}')
  got=$(sums "$3" | awk -v f="$from" '{s=$1; sub("ckpt-0*","",s); if ($1 ~ /^ckpt/ && s+0 < f) next; if ($0 ~ /^"step"/) {split($0,a,/[:,]/); if (a[2]+0 < f) next}; print}')
  local n
  n=$(grep -c '^ckpt' <<<"$want" || true)
  if [ "$want" = "$got" ] && [ "$n" -ge 3 ]; then
    echo "ok   $1: $((n / 3)) checkpoints and every logged step identical"
  else
    echo "FAIL $1:"; diff <(echo "$want") <(echo "$got") | head -8 || true; fail=1
  fi
}
run() { # run LOG CMD...: a failed command fails the suite with its log
  local log=$1; shift
  "$@" >"$log" 2>&1 || { echo "FAIL: $* (exit $?)"; tail -20 "$log"; exit 1; }
}
tiny=configs/tiny.yaml
run "$T/one.log" qat train --config $tiny "${S[@]}" --set train.threads=2 --set out_dir="$T/one"
run "$T/two.log" mpi train --distributed --config $tiny "${S[@]}" --set train.threads=1 --set out_dir="$T/two"
same "2 processes = 1 process x 2 replicas (fp32 moments)" "$T/one" "$T/two"

run "$T/one8.log" qat train --config $tiny "${S[@]}" --set train.threads=2 --set optimizer.state=int8 --set out_dir="$T/one8"
run "$T/two8.log" mpi train --distributed --config $tiny "${S[@]}" --set train.threads=1 --set optimizer.state=int8 --set out_dir="$T/two8"
same "int8 moments" "$T/one8" "$T/two8"
run "$T/zero.log" mpi train --distributed --config $tiny "${S[@]}" --set train.threads=1 --set optimizer.state=int8 --set optimizer.shard=true --set out_dir="$T/zero"
same "ZeRO-1 (int8 moments sharded over 2 processes)" "$T/one8" "$T/zero"
grep -q "optimizer states .* (this process's share, 1 of 2)" "$T/zero.log" || { echo "FAIL ZeRO-1: no per-process state memory in the log"; fail=1; }
rm -rf "$T/two8" "$T/zero"

lr=(--config configs/llama-w4-lrqat.yaml --set init_from="$T/one" "${S[@]}" --set train.eval_batches=2)
run "$T/onelr.log" qat train "${lr[@]}" --set train.threads=2 --set out_dir="$T/onelr"
run "$T/twolr.log" mpi train --distributed "${lr[@]}" --set train.threads=1 --set out_dir="$T/twolr"
same "LR-QAT adapters" "$T/onelr" "$T/twolr"
rm -rf "$T/onelr" "$T/twolr" "$T/one8"

# rewind DIR STEP: the run as a kill after STEP left it
rewind() {
  for c in "$1"/ckpt-*; do
    s=$(basename "$c"); s=$((10#${s#ckpt-}))
    [ "$s" -le "$2" ] || rm -rf "$c"
  done
  printf 'ckpt-%07d\n' "$2" >"$1/latest"
}
cp -r "$T/two" "$T/r21" && rewind "$T/r21" 10
run "$T/r21.log" qat train --resume "$T/r21" --set train.threads=2
same "resumed on 1 process from 2 at step 10" "$T/one" "$T/r21" 10
cp -r "$T/one" "$T/r12" && rewind "$T/r12" 10
run "$T/r12.log" mpi train --distributed --resume "$T/r12" --set train.threads=1
same "resumed on 2 processes from 1 at step 10" "$T/one" "$T/r12" 10
rm -rf "$T/r21" "$T/r12" "$T/two"

# kill -9 of rank 1 once 3 steps are checkpointed
(set +e; mpi train --distributed --config $tiny "${S[@]}" --set train.threads=1 --set out_dir="$T/kill" >"$T/kill.log" 2>&1; echo $? >"$T/kill.rc") &
for _ in $(seq 600); do [ -e "$T/kill/ckpt-0000003" ] && break; sleep 0.05; done
victim=
for p in $(pgrep -f "qat-mpi train --distributed" || true); do
  if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then victim=$p; fi
done
[ -n "$victim" ] || { echo "FAIL kill -9: no rank 1 to kill"; cat "$T/kill.log"; exit 1; }
kill -9 "$victim"
t0=$(date +%s%N)
for _ in $(seq 200); do [ -e "$T/kill.rc" ] && break; sleep 0.05; done
ms=$((($(date +%s%N) - t0) / 1000000))
if [ ! -e "$T/kill.rc" ] || [ "$(cat "$T/kill.rc")" = 0 ] || ! grep -q "rank 1 .* exited on signal 9" "$T/kill.log"; then
  echo "FAIL kill -9 of rank 1: the job did not end within 10 s with mpirun's message"; tail -20 "$T/kill.log"; fail=1
else
  echo "ok   kill -9 of rank 1 at step $(cat "$T/kill/latest" | tr -d '\n'): the job ended in $ms ms ($(grep -o 'process rank 1 .* exited on signal 9[^.]*' "$T/kill.log"))"
fi
wait
at=$(sed 's/ckpt-0*//' "$T/kill/latest")
[ "$at" -lt 20 ] || { echo "FAIL kill -9: the run had finished before the kill"; fail=1; }
run "$T/resume.log" mpi train --distributed --resume "$T/kill" --set train.threads=1
same "resumed on 2 processes after kill -9 at step $at" "$T/one" "$T/kill" "$at"
# a sweep entry as a data-parallel job: the lead records it, a rerun skips it
mkdir -p "$T/sweep"
sed "s|DATA|$T/data|; s|OUT|$T/sweep/out|; s|vocab: 512|vocab: 4096|" cmd/internal/sweep/testdata/base.yaml >"$T/sweep/base.yaml"
printf 'name: mpi\nbase: base.yaml\nresults: res\nmodels:\n  - {name: a, dim: 64, layers: 1, heads: 2, ffn_hidden: 128}\ntokens: [4096]\ngroups: [channel]\nbits: [4]\nseeds: [1]\n' >"$T/sweep/sweep.yaml"
qat sweep plan "$T/sweep/sweep.yaml" >"$T/sweep/plan.json" 2>"$T/sweep/plan.log"
run "$T/sweep1.log" mpi sweep run "$T/sweep/plan.json" --index 0 --distributed
run "$T/sweep2.log" mpi sweep run "$T/sweep/plan.json" --index 0 --distributed
if grep -q "done, .*result.json" "$T/sweep1.log" && grep -q "has a result, skipped" "$T/sweep2.log" && [ "$(grep -c "^entry 0" "$T/sweep1.log")" = 1 ]; then
  echo "ok   sweep run --distributed: the lead recorded the entry once; the rerun skipped it"
else
  echo "FAIL sweep run --distributed"; tail -5 "$T/sweep1.log" "$T/sweep2.log"; fail=1
fi
[ $fail = 0 ] && echo "== mpi: all cases identical" || echo "== mpi: FAILED"
exit $fail
