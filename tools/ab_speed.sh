#!/usr/bin/env bash
# Interleaved A/B of two qat binaries on this machine (speed checks of a
# refactor, README "Performance notes"): OLD=path NEW=path tools/ab_speed.sh.
# Each round runs both sides one after the other: qat train's median
# tokens/s on configs/tiny.yaml (2 threads, steps 21-120, no evaluation or
# checkpoints: the loop and its engine) and qat bench packed's products on
# one thread. REPEAT rounds (default 3); compare the sides round by round.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD:?OLD=path to the old qat}" "${NEW:?NEW=path to the new qat}"
W=${W:-.cache/ab}
mkdir -p "$W"
[ -f "$W/data/manifest.json" ] || env -u OPENBLAS_CORETYPE "$NEW" data prepare --input ../shared/data/sotu --out "$W/data" >/dev/null
for rep in $(seq "${REPEAT:-3}"); do
  for side in old new; do
    bin=$OLD; [ $side = new ] && bin=$NEW
    run="$W/run-$side-$rep"
    rm -rf "$run"
    env -u OPENBLAS_CORETYPE "$bin" train --config configs/tiny.yaml --set data.dir="$W/data" --set out_dir="$run" \
      --set train.steps=120 --set train.eval_every=0 --set train.ckpt_every=0 --set train.no_final_eval=true >/dev/null 2>&1
    python3 - "$run/metrics.jsonl" "$side" "$rep" <<'PY'
import json, statistics, sys
t = [json.loads(l).get("tokens_per_s") for l in open(sys.argv[1])]
t = [x for x in t if x][20:]
print(f"round {sys.argv[3]} {sys.argv[2]:3s} train tiny x2: median {statistics.median(t):.0f} tokens/s over {len(t)} steps")
PY
    env -u OPENBLAS_CORETYPE "$bin" bench packed --synth "" --threads 1 2>/dev/null | grep -E '^q[48]_0' | sed "s/^/round $rep $side  packed: /"
  done
done
