package sweep

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
)

// An MPIJob of the Kubeflow MPI Operator (kubeflow.org/v2beta1), as far
// as the manifest sets it.
type (
	mpiJob struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   k8sMeta    `yaml:"metadata"`
		Spec       mpiJobSpec `yaml:"spec"`
	}
	mpiJobSpec struct {
		SlotsPerWorker    int                       `yaml:"slotsPerWorker"`
		MPIImplementation string                    `yaml:"mpiImplementation"`
		RunPolicy         mpiRunPolicy              `yaml:"runPolicy"`
		MPIReplicaSpecs   map[string]mpiReplicaSpec `yaml:"mpiReplicaSpecs"`
	}
	mpiRunPolicy struct {
		CleanPodPolicy string `yaml:"cleanPodPolicy"`
		BackoffLimit   int    `yaml:"backoffLimit"`
	}
	mpiReplicaSpec struct {
		Replicas      int            `yaml:"replicas"`
		RestartPolicy string         `yaml:"restartPolicy"`
		Template      k8sPodTemplate `yaml:"template"`
	}
)

// mpiJobs writes one MPIJob per entry: a launcher pod runs mpirun with
// Ranks processes of `qat-mpi sweep run PLAN --index I --distributed` on
// Ranks worker pods (one slot each, cpus and memory each, the shared
// volume mounted in all). The launcher restarts on exit codes 128 and
// above (SIGTERM's 143: the job checkpointed, its retry resumes), up to
// c.Retries times, and gives up on 1-127 (a failure, recorded; bad
// input). The MPI Operator runs the jobs as the cluster has room: there
// is no parallelism cap as an Indexed Job has.
func (p *Plan) mpiJobs(c Cluster, cpus int, memory string) (string, error) {
	res := map[string]string{"cpu": strconv.Itoa(cpus), "memory": memory}
	mount := []k8sMount{{Name: "work", MountPath: c.Workdir}}
	vols := []k8sVolume{{Name: "work", PersistentVolumeClaim: k8sClaimRef{ClaimName: c.Claim}}}
	var b strings.Builder
	fmt.Fprintf(&b, `# qat sweep %s: %d entries, each an MPIJob of %d processes (Kubeflow MPI
# Operator v2beta1). Apply with: kubectl apply -f THIS_FILE. The image must
# hold bin/qat-mpi (make mpi) as qat-mpi, Open MPI and sshd (the launcher
# reaches the workers by ssh, as the operator sets up); the volume holds the
# plan, data and results, and every process reads the run directory the
# launcher's rank 0 writes. A stopped job checkpoints within %d s and its
# restart resumes; a finished entry is skipped.
`, strconv.Quote(p.Name), len(p.Entries), c.Ranks, grace(c))
	for i := range p.Entries {
		labels := map[string]string{"app": "qat-sweep", "qat-entry": strconv.Itoa(i)}
		name := fmt.Sprintf("%s-%d", jobName(p.Name), i)
		cmd := []string{"mpirun", "--allow-run-as-root", "-np", strconv.Itoa(c.Ranks), "--bind-to", "none", "qat-mpi", "sweep", "run", c.Plan,
			"--index", strconv.Itoa(i), "--distributed"}
		job := mpiJob{APIVersion: "kubeflow.org/v2beta1", Kind: "MPIJob", Metadata: k8sMeta{Name: name, Labels: labels},
			Spec: mpiJobSpec{SlotsPerWorker: 1, MPIImplementation: "OpenMPI",
				RunPolicy: mpiRunPolicy{CleanPodPolicy: "Running", BackoffLimit: max(c.Retries, 0)},
				MPIReplicaSpecs: map[string]mpiReplicaSpec{
					"Launcher": {Replicas: 1, RestartPolicy: "ExitCode", Template: k8sPodTemplate{Metadata: k8sMeta{Labels: labels},
						Spec: k8sPodSpec{RestartPolicy: "Never", TerminationGracePeriodSeconds: grace(c),
							Containers: []k8sContainer{{Name: "launcher", Image: c.Image, WorkingDir: c.Workdir, Command: cmd,
								Resources:    k8sResources{Requests: map[string]string{"cpu": "1", "memory": "1Gi"}, Limits: map[string]string{"cpu": "1", "memory": "1Gi"}},
								VolumeMounts: mount}},
							Volumes: vols}}},
					"Worker": {Replicas: c.Ranks, RestartPolicy: "Never", Template: k8sPodTemplate{Metadata: k8sMeta{Labels: labels},
						Spec: k8sPodSpec{RestartPolicy: "Never", TerminationGracePeriodSeconds: grace(c),
							// the launcher's mpirun reaches the workers by ssh
							Containers: []k8sContainer{{Name: "worker", Image: c.Image, WorkingDir: c.Workdir, Command: []string{"/usr/sbin/sshd", "-De"},
								Resources: k8sResources{Requests: res, Limits: res}, VolumeMounts: mount}},
							Volumes: vols}}},
				}}}
		y, err := yaml.MarshalWithOptions(job, yaml.IndentSequence(true))
		if err != nil {
			return "", err
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.String(), nil
}
