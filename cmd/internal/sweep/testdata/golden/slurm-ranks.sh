#!/bin/bash
# qat sweep "Test Sweep": 12 entries as a Slurm job array. Submit with:
# sbatch THIS_FILE. Array task i runs entry i of "sweeps/plan.json"; results go to the
# plan's results directory, and a finished entry is skipped when re-run.
#SBATCH --job-name=qat-test-sweep
#SBATCH --array=0-11%3
#SBATCH --ntasks=3
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=2048M
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:TERM@120
#SBATCH --output=slurm-%A_%a.out
set -uo pipefail
cd -- '/work' || exit 2
plan='sweeps/plan.json'
qat_pid=0
# SIGTERM (the time limit is near, a preemption, scancel) goes to qat,
# which finishes its step, writes a checkpoint and exits 143.
trap 'if [ "$qat_pid" -ne 0 ]; then kill -TERM "$qat_pid" 2>/dev/null; fi' TERM INT
for attempt in $(seq 0 2); do
  srun --mpi=pmix --kill-on-bad-exit=1 qat-mpi sweep run "$plan" --distributed &
  qat_pid=$!
  # a trapped signal ends wait early: wait until qat has exited, then
  # once more for its status
  while kill -0 "$qat_pid" 2>/dev/null; do wait "$qat_pid"; done
  wait "$qat_pid"
  status=$?
  qat_pid=0
  case $status in
  0) exit 0 ;;
  2) echo "entry $SLURM_ARRAY_TASK_ID: bad input or held by another process (exit 2), not retried" >&2; exit 2 ;;
  130 | 143)
    echo "entry $SLURM_ARRAY_TASK_ID: stopped with a checkpoint (exit $status); requeued to resume" >&2
    scontrol requeue "$SLURM_JOB_ID" || true
    exit "$status" ;;
  esac
  echo "entry $SLURM_ARRAY_TASK_ID: attempt $attempt failed (exit $status)" >&2
done
exit 1
