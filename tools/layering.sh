#!/usr/bin/env bash
# The package order (docs/architecture.md): each package of ours imports
# only packages of a lower level, so arrows point down. A package missing
# from the table fails too: a new package takes its place here.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A level=(
  [qat/kernels]=0 [qat/data/atomic]=0 [qat/data/internal/hostile]=0 [qat/qat/scaling]=0 [qat/dist]=0 [qat/autograd/ref]=0 [qat/tools/faults]=0
  [qat/kernels/cuda]=1 [qat/autograd]=1 [qat/data/bpe]=1 [qat/data/chat]=1 [qat/data/gguf]=1 [qat/data/safetensors]=1
  [qat/data]=2 [qat/layers]=2 [qat/optim]=2
  [qat/qat]=3 [qat/qat/rotate]=3 [qat/engine]=3 [qat/eval]=3
  [qat/lora]=4 [qat/qat/ptq]=4 [qat/export]=4 [qat/engine/tape]=4 [qat/engine/gorgonia]=4 [qat/engine/device]=4 [qat/engine/dp]=4
  [qat/checkpoint]=5 [qat/cmd/internal/bench]=5
  [qat/cmd/internal/config]=6
  [qat/cmd/internal/train]=7
  [qat/cmd/internal/sweep]=8
  [qat/cmd/qat]=9
)
status=0
while read -r pkg imports; do
  if [[ -z "${level[$pkg]+x}" ]]; then
    echo "layering: $pkg has no level in tools/layering.sh"; status=1; continue
  fi
  for imp in $imports; do
    [[ $imp == qat/* ]] || continue
    if [[ -z "${level[$imp]+x}" ]]; then
      echo "layering: $pkg imports $imp, which has no level"; status=1
    elif (( level[$imp] >= level[$pkg] )); then
      echo "layering: $pkg (level ${level[$pkg]}) imports $imp (level ${level[$imp]}): arrows point down only"; status=1
    fi
  done
done < <(go list -tags "${LAYERING_TAGS:-}" -f '{{.ImportPath}} {{join .Imports " "}}' ./...)
exit $status
