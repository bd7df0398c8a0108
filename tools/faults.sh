#!/usr/bin/env bash
# The fault suite (make faults): kill -9 and SIGTERM at random steps, a
# second trainer on a live run, a full disk (tmpfs: run as root) during
# checkpoints, exports and sweep tables, and hostile files of every format.
# One line per case, one summary line (== ...) per kind; exit 1 on any fault.
# Arguments go to tools/faults (e.g. --kills 4 --hostile 5 for a short run).
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/qat ./cmd/qat
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE go run ./tools/faults --qat bin/qat "$@"
