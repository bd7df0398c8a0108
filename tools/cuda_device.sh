#!/usr/bin/env bash
# The CUDA checks and benchmarks on a lent GPU machine, from the bundle
# `make cuda-test` writes (carry .cache/cuda-bundle.tar.xz with the working
# tree). Every output goes under $OUT (./cuda-out without it), one file per
# step, and a step that fails does not stop the next:
#
#   tools/cuda_device.sh [BUNDLE]
#
# nvidia-smi; the kernel tests against the host build (kernels/cuda); the
# step against the tape (engine/device); qat bench --device cuda; and
# tools/cuda_peers.py (PyTorch on the same GPU) where torch imports.
#
#   tools/cuda_device.sh --check BUNDLE MAX_BYTES LIBDIR
#
# is make cuda-test's check on a machine without a GPU: the bundle is at
# most MAX_BYTES, holds the three binaries and the commit, they need no
# shared library beyond libcuda.so.1 and the C library, and qat-gpu,
# loaded with LIBDIR's libcuda.so.1, starts and stops with CUDA's own
# error instead of a loader's.
set -uo pipefail
cd "$(dirname "$0")/.."

unpack() { # bundle dir
  [ -f "$1" ] || { echo "cuda_device: no bundle $1: run make cuda-test" >&2; exit 2; }
  tar -C "$2" -xJf "$1" || { echo "cuda_device: $1 does not unpack" >&2; exit 2; }
  for f in cuda.test step.test qat-gpu COMMIT; do
    [ -e "$2/$f" ] || { echo "cuda_device: $1 lacks $f" >&2; exit 2; }
  done
}

if [ "${1:-}" = --check ]; then
  bundle=$2 max=$3 lib=$4
  size=$(stat -c %s "$bundle") || exit 2
  [ "$size" -le "$max" ] || { echo "cuda_device: $bundle is $size bytes, over $max" >&2; exit 1; }
  dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
  unpack "$bundle" "$dir"
  for f in cuda.test step.test qat-gpu; do
    extra=$(readelf -d "$dir/$f" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' |
      grep -vxE 'libcuda\.so\.1|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|libresolv\.so\.2' || true)
    [ -z "$extra" ] || { echo "cuda_device: $f needs $extra beyond libcuda.so.1 and the C library" >&2; exit 1; }
  done
  # no GPU here: the binary must load and fail in CUDA's initialisation
  msg=$(LD_LIBRARY_PATH=$lib timeout 60 "$dir/qat-gpu" version 2>&1); rc=$?
  if [ $rc -eq 0 ] || ! grep -qiE 'cuda|cuInit|driver|device' <<<"$msg" || grep -qiE 'error while loading shared libraries' <<<"$msg"; then
    echo "cuda_device: qat-gpu without a GPU exited $rc: $msg" >&2; exit 1
  fi
  echo "cuda bundle: $bundle, $size bytes (limit $max), commit $(cat "$dir/COMMIT"); without a GPU qat-gpu stops with: $(head -c 200 <<<"$msg" | tr '\n' ' ')"
  exit 0
fi

bundle=${1:-.cache/cuda-bundle.tar.xz}
out=${OUT:-cuda-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
unpack "$bundle" "$dir"
status=0
step() { # name command...: output to $out/name.txt
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$out/$name.txt" 2>&1; then
    echo "ok   $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL $name (exit $?, $((SECONDS - t0)) s):"; tail -15 "$out/$name.txt"; status=1
  fi
}
echo "bundle of commit $(cat "$dir/COMMIT"), working tree at $(git rev-parse HEAD 2>/dev/null || echo unknown)" | tee "$out/commit.txt"
step nvidia-smi nvidia-smi
step kernels bash -c "cd kernels/cuda && '$dir/cuda.test' -test.v -test.count=1"
step step bash -c "cd engine/device && '$dir/step.test' -test.v -test.count=1"
step bench "$dir/qat-gpu" bench --device cuda
if /usr/bin/env python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  step peers python3 tools/cuda_peers.py
else
  echo "skip peers: python3 has no torch with CUDA on this machine" | tee "$out/peers.txt"
fi
exit $status
