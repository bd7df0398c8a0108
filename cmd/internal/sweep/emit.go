package sweep

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"

	"qat/cmd/internal/config"
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
	// CPUs and Memory ("8Gi") override the resources the plan's entries
	// are estimated to need (Needs); 0 and "" keep the estimate.
	CPUs   int
	Memory string
	// Grace is the seconds between SIGTERM and SIGKILL (Kubernetes'
	// terminationGracePeriodSeconds, Slurm's --signal lead): time for a
	// step and a checkpoint. 0: 120.
	Grace int
	// Image is the container image holding the qat binary (Kubernetes);
	// Claim the persistent volume claim holding Workdir.
	Image, Claim string
	// Ranks > 1 runs every entry as a data-parallel job of that many
	// processes (bin/qat-mpi, qat train --distributed): Slurm tasks
	// started by srun --mpi=pmix, or one MPIJob per entry (Kubeflow MPI
	// Operator, kubeflow.org/v2beta1). CPUs and memory are per process.
	Ranks int
}

// DefaultGrace is Cluster.Grace's default, in seconds.
const DefaultGrace = 120

// Needs is what one task asks of a machine.
type Needs struct {
	CPUs int
	// MemoryGiB is the memory limit, whole GiB.
	MemoryGiB int64
	// GPU: the entry trains on the GPU (train.device cuda).
	GPU bool
}

// EntryNeeds estimates what a run of config c needs: train.threads CPUs,
// a GPU for train.device cuda, and generously its peak resident memory.
// With P the model's parameters (embeddings included), B x T the tokens
// of a micro-batch, L layers, d dim, f ffn_hidden, H heads, V vocab:
//
//	weights        4P (+4P for QAT's fake-quantized copies and scales)
//	gradients      4P, and 4P more per thread replica (threads > 1 on the CPU)
//	AdamW moments  8P for fp32 states, 3P for int8 or fp8 (1 byte per
//	               moment, block scales and the tensors kept in fp32)
//	activations    8 B T (L (16d + 8f + 2HT) + 4V) bytes: what the tape
//	               keeps for backward, attention scores and logits, twice
//	               for the backward pass's temporaries
//
// times 1.25, plus 1 GiB for the Go runtime, the tokenizer and the data
// shards (tokens are held in memory: a corpus of more than about 100M
// tokens needs more, given with --memory), rounded up to a GiB.
func EntryNeeds(c config.Config) Needs {
	m, t := c.Model, c.Train
	total, _ := m.Params()
	P := float64(total)
	bytes := 4 * P
	if len(c.QuantRules()) > 0 {
		bytes += 4 * P
	}
	replicas := 0
	if t.Threads > 1 && t.Engine != "gorgonia" && t.Device != "cuda" {
		replicas = t.Threads
	}
	bytes += 4 * P * float64(1+replicas)
	if c.Optimizer.Kind == "int8" || c.Optimizer.Kind == "fp8" {
		bytes += 3 * P
	} else {
		bytes += 8 * P
	}
	perToken := float64(m.Layers)*(16*float64(m.Dim)+8*float64(m.FFNHidden)+2*float64(m.Heads)*float64(t.Seq)) + 4*float64(m.Vocab)
	bytes += 8 * float64(t.Batch) * float64(t.Seq) * perToken
	gib := math.Ceil((1.25*bytes)/(1<<30) + 1)
	return Needs{CPUs: max(t.Threads, 1), MemoryGiB: int64(gib), GPU: t.Device == "cuda"}
}

// Needs is what every task of the plan must be given: one pod template
// (one sbatch header) serves all entries, so the largest of each
// resource over the entries, then c's overrides. It is an error when
// c.Memory is not a whole number of Ki, Mi, Gi or Ti, and when entries on
// the GPU would run as a data-parallel job (c.Ranks > 1).
func (p *Plan) Needs(c Cluster) (cpus int, memory string, gpu bool, err error) {
	var gib int64
	for _, e := range p.Entries {
		n := EntryNeeds(e.Config)
		cpus, gib, gpu = max(cpus, n.CPUs), max(gib, n.MemoryGiB), gpu || n.GPU
	}
	memory = fmt.Sprintf("%dGi", max(gib, 1))
	if gpu && c.Ranks > 1 {
		return 0, "", false, &config.InputError{Err: errors.New("--ranks: entries on the GPU (train.device cuda) run on one process")}
	}
	if c.CPUs > 0 {
		cpus = c.CPUs
	}
	if c.Memory != "" {
		if !memRE.MatchString(c.Memory) {
			return 0, "", false, &config.InputError{Err: fmt.Errorf("memory %q: want a whole number of Ki, Mi, Gi or Ti (8Gi)", c.Memory)}
		}
		memory = c.Memory
	}
	return max(cpus, 1), memory, gpu, nil
}

var memRE = regexp.MustCompile(`^[1-9][0-9]{0,8}[KMGT]i$`)

var dnsRE = regexp.MustCompile(`[^a-z0-9-]+`)

// jobName makes a DNS-1123 name of the sweep's.
func jobName(name string) string {
	n := strings.Trim(dnsRE.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if n == "" {
		n = "sweep"
	}
	return "qat-" + strings.TrimRight(n[:min(len(n), 50)], "-")
}

// shellQuote quotes s as one word for a POSIX shell: single quotes, each
// ' written '\”.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// The Kubernetes objects the manifest holds, as far as it sets them.
type (
	k8sMeta struct {
		Name   string            `yaml:"name,omitempty"`
		Labels map[string]string `yaml:"labels"`
	}
	k8sJob struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   k8sMeta    `yaml:"metadata"`
		Spec       k8sJobSpec `yaml:"spec"`
	}
	k8sJobSpec struct {
		CompletionMode       string         `yaml:"completionMode"`
		Completions          int            `yaml:"completions"`
		Parallelism          int            `yaml:"parallelism"`
		BackoffLimitPerIndex int            `yaml:"backoffLimitPerIndex"`
		MaxFailedIndexes     int            `yaml:"maxFailedIndexes"`
		PodFailurePolicy     k8sFailPolicy  `yaml:"podFailurePolicy"`
		Template             k8sPodTemplate `yaml:"template"`
	}
	k8sFailPolicy struct {
		Rules []k8sFailRule `yaml:"rules"`
	}
	k8sFailRule struct {
		Action          string         `yaml:"action"`
		OnExitCodes     *k8sExitCodes  `yaml:"onExitCodes,omitempty"`
		OnPodConditions []k8sCondition `yaml:"onPodConditions,omitempty"`
	}
	k8sExitCodes struct {
		ContainerName string `yaml:"containerName"`
		Operator      string `yaml:"operator"`
		Values        []int  `yaml:"values"`
	}
	k8sCondition struct {
		Type   string `yaml:"type"`
		Status string `yaml:"status"`
	}
	k8sPodTemplate struct {
		Metadata k8sMeta    `yaml:"metadata"`
		Spec     k8sPodSpec `yaml:"spec"`
	}
	k8sPodSpec struct {
		RestartPolicy                 string         `yaml:"restartPolicy"`
		TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
		Containers                    []k8sContainer `yaml:"containers"`
		Volumes                       []k8sVolume    `yaml:"volumes"`
	}
	k8sContainer struct {
		Name         string       `yaml:"name"`
		Image        string       `yaml:"image"`
		WorkingDir   string       `yaml:"workingDir"`
		Command      []string     `yaml:"command"`
		Resources    k8sResources `yaml:"resources"`
		VolumeMounts []k8sMount   `yaml:"volumeMounts"`
	}
	k8sResources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	}
	k8sMount struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	}
	k8sVolume struct {
		Name                  string      `yaml:"name"`
		PersistentVolumeClaim k8sClaimRef `yaml:"persistentVolumeClaim"`
	}
	k8sClaimRef struct {
		ClaimName string `yaml:"claimName"`
	}
)

// Kubernetes writes an Indexed Job: one completion index per entry (the
// pod reads it from JOB_COMPLETION_INDEX, which `qat sweep run` picks
// up), a volume holding the plan, data and results shared by all pods,
// and:
//   - terminationGracePeriodSeconds c.Grace: qat gets SIGTERM, finishes
//     its step, checkpoints and exits 143; the retry resumes;
//   - backoffLimitPerIndex c.Retries: a failed entry (exit 1, a failure
//     record) is retried that often, the other indexes going on;
//   - a podFailurePolicy: a pod disrupted (preempted, evicted, drained:
//     condition DisruptionTarget) is not counted against the retries,
//     and exit status 2 (bad input, or the entry held by another
//     process) fails the index at once, as a retry cannot help;
//   - requests and limits of cpu and memory from the entries (Needs; equal,
//     so pods get the Guaranteed class, the last to be evicted) and
//     nvidia.com/gpu 1 for entries on the GPU.
func (p *Plan) Kubernetes(c Cluster) (string, error) {
	cpus, memory, gpu, err := p.Needs(c)
	if err != nil {
		return "", err
	}
	if c.Ranks > 1 {
		return p.mpiJobs(c, cpus, memory)
	}
	res := map[string]string{"cpu": strconv.Itoa(cpus), "memory": memory}
	if gpu {
		res["nvidia.com/gpu"] = "1"
	}
	labels := map[string]string{"app": "qat-sweep"}
	job := k8sJob{APIVersion: "batch/v1", Kind: "Job", Metadata: k8sMeta{Name: jobName(p.Name), Labels: labels},
		Spec: k8sJobSpec{
			CompletionMode: "Indexed", Completions: len(p.Entries), Parallelism: max(c.Parallelism, 1),
			BackoffLimitPerIndex: max(c.Retries, 0), MaxFailedIndexes: len(p.Entries),
			PodFailurePolicy: k8sFailPolicy{Rules: []k8sFailRule{
				{Action: "Ignore", OnPodConditions: []k8sCondition{{Type: "DisruptionTarget", Status: "True"}}},
				{Action: "FailIndex", OnExitCodes: &k8sExitCodes{ContainerName: "qat", Operator: "In", Values: []int{2}}},
			}},
			Template: k8sPodTemplate{Metadata: k8sMeta{Labels: labels}, Spec: k8sPodSpec{
				RestartPolicy: "Never", TerminationGracePeriodSeconds: grace(c),
				Containers: []k8sContainer{{Name: "qat", Image: c.Image, WorkingDir: c.Workdir,
					Command:      []string{"qat", "sweep", "run", c.Plan},
					Resources:    k8sResources{Requests: res, Limits: res},
					VolumeMounts: []k8sMount{{Name: "work", MountPath: c.Workdir}}}},
				Volumes: []k8sVolume{{Name: "work", PersistentVolumeClaim: k8sClaimRef{ClaimName: c.Claim}}},
			}},
		}}
	b, err := yaml.MarshalWithOptions(job, yaml.IndentSequence(true))
	if err != nil {
		return "", err
	}
	head := fmt.Sprintf(`# qat sweep %s: %d entries as a Kubernetes Indexed Job.
# Apply with: kubectl apply -f THIS_FILE. Every pod runs one entry (its
# completion index) of %s; results go to the plan's results directory on
# the shared volume, and a finished entry is skipped when a pod is retried.
# A pod stopped by SIGTERM checkpoints within %d s and its retry resumes.
# Exit status: 0 done, 1 failed (retried), 2 bad input (not retried), 143
# stopped by SIGTERM.
`, strconv.Quote(p.Name), len(p.Entries), strconv.Quote(c.Plan), grace(c))
	return head + string(b), nil
}

func grace(c Cluster) int {
	if c.Grace > 0 {
		return c.Grace
	}
	return DefaultGrace
}

// Slurm writes an sbatch job-array script: array task i runs entry i
// (SLURM_ARRAY_TASK_ID, which `qat sweep run` picks up), at most
// Parallelism at once, with --cpus-per-task, --mem and, for entries on
// the GPU, --gres=gpu:1 from the entries (Needs). Slurm sends the batch
// shell SIGTERM c.Grace seconds before the time limit (--signal=B:TERM);
// the shell passes it, or a preemption's SIGTERM, to qat, which
// checkpoints and exits 143, and the task is requeued (--requeue, and
// scontrol requeue for the time limit) to resume. A failed entry (exit
// 1) is retried c.Retries times in the task; bad input (exit 2) is not.
func (p *Plan) Slurm(c Cluster) (string, error) {
	cpus, memory, gpu, err := p.Needs(c)
	if err != nil {
		return "", err
	}
	gres := ""
	if gpu {
		gres = "#SBATCH --gres=gpu:1\n"
	}
	// one process, or a data-parallel job: srun starts the processes of
	// the task (PMIx gives them their ranks), passes SIGTERM on to all of
	// them and, with --kill-on-bad-exit, ends them all when one fails
	run, tasks, mem := "qat sweep run \"$plan\"", "", "#SBATCH --mem="+slurmMem(memory)
	if c.Ranks > 1 {
		run = "srun --mpi=pmix --kill-on-bad-exit=1 qat-mpi sweep run \"$plan\" --distributed"
		tasks = fmt.Sprintf("#SBATCH --ntasks=%d\n", c.Ranks)
		mem = "#SBATCH --mem-per-cpu=" + perCPU(memory, cpus)
	}
	return fmt.Sprintf(`#!/bin/bash
# qat sweep %[1]s: %[2]d entries as a Slurm job array. Submit with:
# sbatch THIS_FILE. Array task i runs entry i of %[3]s; results go to the
# plan's results directory, and a finished entry is skipped when re-run.
#SBATCH --job-name=%[4]s
#SBATCH --array=0-%[5]d%%%[6]d
%[14]s#SBATCH --cpus-per-task=%[7]d
%[8]s
%[9]s#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:TERM@%[10]d
#SBATCH --output=slurm-%%A_%%a.out
set -uo pipefail
cd -- %[11]s || exit 2
plan=%[12]s
qat_pid=0
# SIGTERM (the time limit is near, a preemption, scancel) goes to qat,
# which finishes its step, writes a checkpoint and exits 143.
trap 'if [ "$qat_pid" -ne 0 ]; then kill -TERM "$qat_pid" 2>/dev/null; fi' TERM INT
for attempt in $(seq 0 %[13]d); do
  %[15]s &
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
`, strconv.Quote(p.Name), len(p.Entries), strconv.Quote(c.Plan), jobName(p.Name), len(p.Entries)-1, max(c.Parallelism, 1),
		cpus, mem, gres, grace(c), shellQuote(c.Workdir), shellQuote(c.Plan), max(c.Retries, 0), tasks, run), nil
}

// perCPU is a process's memory q (a Kubernetes quantity) shared over its
// cpus, as Slurm's --mem-per-cpu in MiB, rounded up.
func perCPU(q string, cpus int) string {
	n, _ := strconv.ParseInt(q[:len(q)-2], 10, 64)
	mib := n << (10 * strings.Index("KMGT", q[len(q)-2:len(q)-1])) >> 10
	return fmt.Sprintf("%dM", (max(mib, 1)+int64(cpus)-1)/int64(cpus))
}

// slurmMem writes a Kubernetes quantity (8Gi) as Slurm's --mem (8G: Slurm's
// units are binary).
func slurmMem(q string) string { return strings.TrimSuffix(q, "i") }
