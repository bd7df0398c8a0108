#!/bin/bash
# qat sweep Test Sweep: 12 entries as a SLURM job array. Submit with:
# sbatch THIS_FILE. Array task i runs entry i of sweeps/plan.json; results go to the
# plan's results directory, and a finished entry is skipped when re-run.
#SBATCH --job-name=qat-test-sweep
#SBATCH --array=0-11%3
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --requeue
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
cd "/work"
for attempt in $(seq 0 2); do
  if qat sweep run "sweeps/plan.json"; then exit 0; fi
  echo "entry $SLURM_ARRAY_TASK_ID: attempt $attempt failed" >&2
done
exit 1
