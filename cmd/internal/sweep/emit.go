package sweep

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster holds what the emitted job needs to know of the cluster.
type Cluster struct {
	// Plan is the plan file's path as the tasks see it.
	Plan string
	// Workdir is the tasks' working directory: the base config's data
	// directory and relative paths resolve from it.
	Workdir string
	// Parallelism is how many entries run at once; Retries how often a
	// failed entry is retried.
	Parallelism, Retries int
	// CPUs and Memory request resources per entry ("2", "8Gi").
	CPUs   int
	Memory string
	// Image is the container image holding the qat binary (Kubernetes);
	// Claim the persistent volume claim holding Workdir.
	Image, Claim string
}

var nameRE = regexp.MustCompile(`[^a-z0-9-]+`)

// jobName makes a DNS-1123 name of the sweep's.
func jobName(name string) string {
	n := strings.Trim(nameRE.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if n == "" {
		n = "sweep"
	}
	return "qat-" + n[:min(len(n), 50)]
}

// Kubernetes writes an Indexed Job: one completion index per entry (the
// pod reads it from JOB_COMPLETION_INDEX, which `qat sweep run` picks
// up), per-index retries (backoffLimitPerIndex), and a volume holding the
// plan, data and results shared by all pods.
func (p *Plan) Kubernetes(c Cluster) string {
	return fmt.Sprintf(`# qat sweep %[1]s: %[2]d entries as a Kubernetes Indexed Job.
# Apply with: kubectl apply -f THIS_FILE. Every pod runs one entry (its
# completion index) of %[3]s; results go to the plan's results directory on
# the shared volume, and a finished entry is skipped when a pod is retried.
apiVersion: batch/v1
kind: Job
metadata:
  name: %[4]s
  labels:
    app: qat-sweep
spec:
  completionMode: Indexed
  completions: %[2]d
  parallelism: %[5]d
  backoffLimitPerIndex: %[6]d
  maxFailedIndexes: %[2]d
  template:
    metadata:
      labels:
        app: qat-sweep
    spec:
      restartPolicy: Never
      containers:
        - name: qat
          image: %[7]q
          workingDir: %[8]q
          command: ["qat", "sweep", "run", %[3]q]
          resources:
            requests:
              cpu: "%[9]d"
              memory: %[10]q
            limits:
              memory: %[10]q
          volumeMounts:
            - name: work
              mountPath: %[8]q
      volumes:
        - name: work
          persistentVolumeClaim:
            claimName: %[11]q
`, p.Name, len(p.Entries), c.Plan, jobName(p.Name), max(c.Parallelism, 1), c.Retries, c.Image, c.Workdir,
		max(c.CPUs, 1), c.Memory, c.Claim)
}

// Slurm writes an sbatch job-array script: array task i runs entry i
// (SLURM_ARRAY_TASK_ID, which `qat sweep run` picks up), at most
// Parallelism at once; a requeued task resumes from its checkpoints.
func (p *Plan) Slurm(c Cluster) string {
	return fmt.Sprintf(`#!/bin/bash
# qat sweep %[1]s: %[2]d entries as a SLURM job array. Submit with:
# sbatch THIS_FILE. Array task i runs entry i of %[3]s; results go to the
# plan's results directory, and a finished entry is skipped when re-run.
#SBATCH --job-name=%[4]s
#SBATCH --array=0-%[5]d%%%[6]d
#SBATCH --cpus-per-task=%[7]d
#SBATCH --mem=%[8]s
#SBATCH --requeue
#SBATCH --output=slurm-%%A_%%a.out
set -euo pipefail
cd %[9]q
for attempt in $(seq 0 %[10]d); do
  if qat sweep run %[3]q; then exit 0; fi
  echo "entry $SLURM_ARRAY_TASK_ID: attempt $attempt failed" >&2
done
exit 1
`, p.Name, len(p.Entries), c.Plan, jobName(p.Name), len(p.Entries)-1, max(c.Parallelism, 1), max(c.CPUs, 1),
		strings.TrimSuffix(c.Memory, "i"), c.Workdir, c.Retries)
}
