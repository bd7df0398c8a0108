package sweep

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// job is the part of an Indexed Job the tests check.
type job struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		CompletionMode       string `yaml:"completionMode"`
		Completions          int    `yaml:"completions"`
		Parallelism          int    `yaml:"parallelism"`
		BackoffLimitPerIndex int    `yaml:"backoffLimitPerIndex"`
		MaxFailedIndexes     int    `yaml:"maxFailedIndexes"`
		PodFailurePolicy     struct {
			Rules []struct {
				Action      string `yaml:"action"`
				OnExitCodes *struct {
					ContainerName string `yaml:"containerName"`
					Operator      string `yaml:"operator"`
					Values        []int  `yaml:"values"`
				} `yaml:"onExitCodes"`
				OnPodConditions []struct {
					Type   string `yaml:"type"`
					Status string `yaml:"status"`
				} `yaml:"onPodConditions"`
			} `yaml:"rules"`
		} `yaml:"podFailurePolicy"`
		Template struct {
			Spec struct {
				RestartPolicy                 string `yaml:"restartPolicy"`
				TerminationGracePeriodSeconds int    `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Name       string   `yaml:"name"`
					Image      string   `yaml:"image"`
					WorkingDir string   `yaml:"workingDir"`
					Command    []string `yaml:"command"`
					Resources  struct {
						Requests map[string]string `yaml:"requests"`
						Limits   map[string]string `yaml:"limits"`
					} `yaml:"resources"`
					VolumeMounts []struct {
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					PersistentVolumeClaim struct {
						ClaimName string `yaml:"claimName"`
					} `yaml:"persistentVolumeClaim"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// checkJob parses a manifest and checks what every manifest must set:
// an Indexed Job over the plan, grace period, per-index retries, a
// failure policy that ignores disruptions and fails an index on exit 2,
// and equal requests and limits of cpu and memory.
func checkJob(t *testing.T, p *Plan, c Cluster, text string) job {
	t.Helper()
	var j job
	if err := yaml.Unmarshal([]byte(text), &j); err != nil {
		t.Fatalf("manifest does not parse: %v\n%s", err, text)
	}
	s := j.Spec
	if j.Kind != "Job" || j.APIVersion != "batch/v1" || s.CompletionMode != "Indexed" || s.Completions != len(p.Entries) ||
		s.Parallelism != c.Parallelism || s.BackoffLimitPerIndex != c.Retries || s.MaxFailedIndexes != len(p.Entries) {
		t.Errorf("job spec %+v", s)
	}
	ps := s.Template.Spec
	if ps.RestartPolicy != "Never" || ps.TerminationGracePeriodSeconds != grace(c) || len(ps.Containers) != 1 {
		t.Fatalf("pod spec %+v", ps)
	}
	r := s.PodFailurePolicy.Rules
	if len(r) != 2 || r[0].Action != "Ignore" || len(r[0].OnPodConditions) != 1 || r[0].OnPodConditions[0].Type != "DisruptionTarget" ||
		r[1].Action != "FailIndex" || r[1].OnExitCodes == nil || r[1].OnExitCodes.ContainerName != ps.Containers[0].Name ||
		r[1].OnExitCodes.Operator != "In" || len(r[1].OnExitCodes.Values) != 1 || r[1].OnExitCodes.Values[0] != 2 {
		t.Errorf("podFailurePolicy %+v", r)
	}
	k := ps.Containers[0]
	if k.Image != c.Image || k.WorkingDir != c.Workdir || len(k.Command) != 4 || k.Command[3] != c.Plan ||
		strings.Join(k.Command[:3], " ") != "qat sweep run" || len(k.VolumeMounts) != 1 || k.VolumeMounts[0].MountPath != c.Workdir ||
		len(ps.Volumes) != 1 || ps.Volumes[0].PersistentVolumeClaim.ClaimName != c.Claim {
		t.Errorf("container %+v, volumes %+v", k, ps.Volumes)
	}
	for _, r := range []string{"cpu", "memory"} {
		if k.Resources.Requests[r] == "" || k.Resources.Requests[r] != k.Resources.Limits[r] {
			t.Errorf("%s: request %q, limit %q", r, k.Resources.Requests[r], k.Resources.Limits[r])
		}
	}
	return j
}

// checkScript runs bash -n on an sbatch script and checks its headers.
func checkScript(t *testing.T, p *Plan, text string, want ...string) {
	t.Helper()
	sh := filepath.Join(t.TempDir(), "s.sh")
	os.WriteFile(sh, []byte(text), 0o755)
	if out, err := exec.Command("bash", "-n", sh).CombinedOutput(); err != nil {
		t.Errorf("bash -n: %v\n%s\n%s", err, out, text)
	}
	for _, w := range append([]string{"#SBATCH --requeue\n", "#SBATCH --open-mode=append\n", "#SBATCH --signal=B:TERM@",
		"#SBATCH --cpus-per-task=", "#SBATCH --mem", `scontrol requeue "$SLURM_JOB_ID"`}, want...) {
		if !strings.Contains(text, w) {
			t.Errorf("the script lacks %q", w)
		}
	}
}

// TestEmitGolden: the Kubernetes manifest and Slurm script match their
// golden files (go test -update rewrites them), the manifest parses as an
// Indexed Job with one completion per entry, grace period, retries,
// failure policy and the entries' resources, and the script passes bash
// -n with the signal, requeue and resource headers.
func TestEmitGolden(t *testing.T) {
	p := testPlan(t)
	c := Cluster{Plan: "sweeps/plan.json", Workdir: "/work", Parallelism: 3, Retries: 2, Image: "registry.example/qat:1", Claim: "qat-work"}
	k8s, err := p.Kubernetes(c)
	if err != nil {
		t.Fatal(err)
	}
	sbatch, err := p.Slurm(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct{ file, text string }{{"kubernetes.yaml", k8s}, {"slurm.sh", sbatch}} {
		path := filepath.Join("testdata", "golden", g.file)
		if *update {
			os.MkdirAll(filepath.Dir(path), 0o755)
			os.WriteFile(path, []byte(g.text), 0o644)
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(want) != g.text {
			t.Errorf("%s differs from its golden file:\n%s", g.file, g.text)
		}
	}
	j := checkJob(t, p, c, k8s)
	// the test entries: threads 1, a model of 0.1M parameters: the 1 GiB
	// floor plus a fraction
	res := j.Spec.Template.Spec.Containers[0].Resources.Requests
	if res["cpu"] != "1" || res["memory"] != "2Gi" || res["nvidia.com/gpu"] != "" || j.Metadata.Name != "qat-test-sweep" {
		t.Errorf("resources %v, name %q", res, j.Metadata.Name)
	}
	checkScript(t, p, sbatch, "#SBATCH --array=0-11%3\n", "#SBATCH --cpus-per-task=1\n", "#SBATCH --mem=2G\n", "#SBATCH --signal=B:TERM@120\n")
	if strings.Contains(sbatch, "--gres") {
		t.Error("a GPU for CPU entries")
	}
}

// TestEmitResources: threads, device cuda and a larger model and batch
// raise what the emitted job asks for; --cpus and --memory override it,
// and a malformed --memory is refused.
func TestEmitResources(t *testing.T) {
	p := testPlan(t)
	e := &p.Entries[5]
	e.Config.Train.Threads = 6
	e.Config.Train.Device = "cuda"
	e.Config.Model.Dim, e.Config.Model.FFNHidden, e.Config.Model.Layers = 1024, 4096, 8
	e.Config.Train.Batch, e.Config.Model.Vocab = 32, 32000
	n := EntryNeeds(e.Config)
	total, _ := e.Config.Model.Params()
	// at least weights, gradients, 6 replicas' gradients and fp32 moments
	if n.CPUs != 6 || !n.GPU || float64(n.MemoryGiB)*(1<<30) < float64(4+4+4+4*6+8)*float64(total) {
		t.Errorf("needs %+v for %d parameters", n, total)
	}
	c := Cluster{Plan: "p.json", Workdir: "/w", Parallelism: 1, Retries: 0, Image: "i", Claim: "c", Grace: 300}
	k8s, err := p.Kubernetes(c)
	if err != nil {
		t.Fatal(err)
	}
	j := checkJob(t, p, c, k8s)
	res := j.Spec.Template.Spec.Containers[0].Resources
	if res.Limits["cpu"] != "6" || res.Limits["memory"] != itoa(n.MemoryGiB)+"Gi" ||
		res.Limits["nvidia.com/gpu"] != "1" || res.Requests["nvidia.com/gpu"] != "1" {
		t.Errorf("resources %+v, want 6 cpus, %d Gi and a GPU", res, n.MemoryGiB)
	}
	sbatch, err := p.Slurm(c)
	if err != nil {
		t.Fatal(err)
	}
	checkScript(t, p, sbatch, "#SBATCH --gres=gpu:1\n", "#SBATCH --cpus-per-task=6\n", "#SBATCH --mem="+itoa(n.MemoryGiB)+"G\n", "#SBATCH --signal=B:TERM@300\n")
	c.CPUs, c.Memory = 3, "500Mi"
	sbatch, _ = p.Slurm(c)
	k8s, _ = p.Kubernetes(c)
	if !strings.Contains(sbatch, "--cpus-per-task=3\n") || !strings.Contains(sbatch, "--mem=500M\n") || !strings.Contains(k8s, "500Mi") {
		t.Errorf("--cpus 3 --memory 500Mi not applied:\n%s\n%s", sbatch, k8s)
	}
	for _, bad := range []string{"8GB", "8", "0Gi", "1Gi\n#SBATCH --x"} {
		c.Memory = bad
		if _, err := p.Slurm(c); err == nil || !strings.Contains(err.Error(), "memory") {
			t.Errorf("--memory %q: %v", bad, err)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestEmitQuoting: a sweep name, plan path and working directory holding
// quotes, $(...), newlines and YAML syntax reach the manifest and the
// script as data: the manifest reads back the same strings, the script
// passes bash -n, and bash expands its quoted words to the same strings
// without running anything.
func TestEmitQuoting(t *testing.T) {
	p := testPlan(t)
	p.Name = "x\ny: $(touch PWNED) 'q' \"d\""
	dir := t.TempDir()
	hostile := filepath.Join(dir, "w'$(touch PWNED)`touch PWNED`\"\n#: {a: [b]} ")
	if err := os.MkdirAll(hostile, 0o755); err != nil {
		t.Fatal(err)
	}
	c := Cluster{Plan: "plan 'x' $(touch PWNED).json\n- y", Workdir: hostile, Parallelism: 2, Retries: 1,
		Image: "img: {x}", Claim: "c'\"laim"}
	k8s, err := p.Kubernetes(c)
	if err != nil {
		t.Fatal(err)
	}
	checkJob(t, p, c, k8s)
	sbatch, err := p.Slurm(c)
	if err != nil {
		t.Fatal(err)
	}
	checkScript(t, p, sbatch)
	// Run the script's cd and plan lines with a stub qat that prints
	// where it runs and its plan argument.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "qat"), []byte("#!/bin/bash\nprintf '%s\\0%s' \"$PWD\" \"$3\" > \"$OUT\"\n"), 0o755)
	os.WriteFile(filepath.Join(bin, "scontrol"), []byte("#!/bin/sh\n"), 0o755)
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command("bash", "-c", sbatch)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "OUT="+out, "SLURM_ARRAY_TASK_ID=0", "SLURM_JOB_ID=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(out)
	if want := hostile + "\x00" + c.Plan; string(got) != want {
		t.Errorf("qat ran in and with %q, want %q", got, want)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "PWNED"))
	if _, err := os.Stat(filepath.Join(cmd.Dir, "PWNED")); err == nil || len(matches) > 0 {
		t.Error("the script ran a command from a name")
	}
}

// TestSlurmScriptStatuses: the script exits 0 when qat does, retries a
// failure (exit 1) Retries times, does not retry bad input (exit 2), and
// on SIGTERM passes it to qat, waits for it and requeues the task.
func TestSlurmScriptStatuses(t *testing.T) {
	p := testPlan(t)
	c := Cluster{Plan: "plan.json", Workdir: t.TempDir(), Parallelism: 1, Retries: 2}
	sbatch, err := p.Slurm(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		qat  string // the stub's body
		term bool   // SIGTERM the script once qat runs
		code int
		runs int
		log  string
	}{
		{"exit 0", false, 0, 1, ""},
		{"exit 1", false, 1, 3, ""},
		{"exit 2", false, 2, 1, ""},
		{`trap 'sleep 0.3; echo checkpoint >> "$LOG"; exit 143' TERM; sleep 20 & wait`, true, 143, 1, "checkpoint\nrequeue 7\n"},
	} {
		bin := t.TempDir()
		log := filepath.Join(bin, "log")
		runs := filepath.Join(bin, "runs")
		os.WriteFile(filepath.Join(bin, "qat"), []byte("#!/bin/bash\necho >> \"$RUNS\"\ntouch \"$RUNS.started\"\n"+tc.qat+"\n"), 0o755)
		os.WriteFile(filepath.Join(bin, "scontrol"), []byte("#!/bin/sh\necho \"$1 $2\" >> \"$LOG\"\n"), 0o755)
		cmd := exec.Command("bash", "-c", sbatch)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "LOG="+log, "RUNS="+runs, "SLURM_ARRAY_TASK_ID=0", "SLURM_JOB_ID=7")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if tc.term {
			for i := 0; i < 500; i++ {
				if _, err := os.Stat(runs + ".started"); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			cmd.Process.Signal(syscall.SIGTERM)
		}
		cmd.Wait()
		b, _ := os.ReadFile(runs)
		l, _ := os.ReadFile(log)
		if got := cmd.ProcessState.ExitCode(); got != tc.code || len(b) != tc.runs || string(l) != tc.log {
			t.Errorf("qat %q: exit %d, %d runs, log %q; want %d, %d, %q", tc.qat, got, len(b), l, tc.code, tc.runs, tc.log)
		}
	}
}

// mpiJobDoc is the part of an MPIJob the tests check: the fields the
// v2beta1 schema requires (spec.mpiReplicaSpecs; a template's containers,
// each with a name) and those qat sets.
type mpiJobDoc struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		SlotsPerWorker    int    `yaml:"slotsPerWorker"`
		MPIImplementation string `yaml:"mpiImplementation"`
		RunPolicy         struct {
			CleanPodPolicy string `yaml:"cleanPodPolicy"`
			BackoffLimit   int    `yaml:"backoffLimit"`
		} `yaml:"runPolicy"`
		MPIReplicaSpecs map[string]*struct {
			Replicas      int    `yaml:"replicas"`
			RestartPolicy string `yaml:"restartPolicy"`
			Template      struct {
				Spec struct {
					TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
					Containers                    []struct {
						Name      string   `yaml:"name"`
						Image     string   `yaml:"image"`
						Command   []string `yaml:"command"`
						Resources struct {
							Requests map[string]string `yaml:"requests"`
							Limits   map[string]string `yaml:"limits"`
						} `yaml:"resources"`
						VolumeMounts []struct {
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"mpiReplicaSpecs"`
	} `yaml:"spec"`
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// TestEmitRanks: with --ranks 3 the Slurm script asks for 3 tasks and
// starts the entry with srun --mpi=pmix on qat-mpi --distributed (bash -n
// passes); the Kubernetes manifest is one MPIJob per entry (golden files),
// each parsing with the schema's required fields, a launcher running
// mpirun -np 3 on that entry's index, 3 workers with the entry's resources
// each, the shared volume in both; GPU entries are refused.
func TestEmitRanks(t *testing.T) {
	p := testPlan(t)
	c := Cluster{Plan: "sweeps/plan.json", Workdir: "/work", Parallelism: 3, Retries: 2, Image: "registry.example/qat:1", Claim: "qat-work", Ranks: 3}
	k8s, err := p.Kubernetes(c)
	if err != nil {
		t.Fatal(err)
	}
	sbatch, err := p.Slurm(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct{ file, text string }{{"mpijobs.yaml", k8s}, {"slurm-ranks.sh", sbatch}} {
		path := filepath.Join("testdata", "golden", g.file)
		if *update {
			os.WriteFile(path, []byte(g.text), 0o644)
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(want) != g.text {
			t.Errorf("%s differs from its golden file:\n%s", g.file, g.text)
		}
	}
	checkScript(t, p, sbatch, "#SBATCH --ntasks=3\n", "#SBATCH --mem-per-cpu=2048M\n",
		`srun --mpi=pmix --kill-on-bad-exit=1 qat-mpi sweep run "$plan" --distributed &`)
	docs := strings.Split(k8s, "\n---\n")[1:]
	if len(docs) != len(p.Entries) {
		t.Fatalf("%d MPIJobs for %d entries", len(docs), len(p.Entries))
	}
	for i, d := range docs {
		var j mpiJobDoc
		if err := yaml.Unmarshal([]byte(d), &j); err != nil {
			t.Fatalf("MPIJob %d does not parse: %v\n%s", i, err, d)
		}
		s := j.Spec
		if j.APIVersion != "kubeflow.org/v2beta1" || j.Kind != "MPIJob" || !dns1123.MatchString(j.Metadata.Name) ||
			s.SlotsPerWorker != 1 || s.MPIImplementation != "OpenMPI" || s.RunPolicy.BackoffLimit != 2 || len(s.MPIReplicaSpecs) != 2 {
			t.Fatalf("MPIJob %d: %+v", i, j)
		}
		l, w := s.MPIReplicaSpecs["Launcher"], s.MPIReplicaSpecs["Worker"]
		if l == nil || w == nil || l.Replicas != 1 || w.Replicas != 3 || l.RestartPolicy != "ExitCode" {
			t.Fatalf("MPIJob %d: replica specs %+v %+v", i, l, w)
		}
		for _, r := range []string{"Launcher", "Worker"} {
			ps := s.MPIReplicaSpecs[r].Template.Spec
			if len(ps.Containers) != 1 || ps.Containers[0].Name == "" || ps.Containers[0].Image != c.Image ||
				len(ps.Containers[0].VolumeMounts) != 1 || ps.TerminationGracePeriodSeconds != grace(c) {
				t.Errorf("MPIJob %d %s: %+v", i, r, ps)
			}
		}
		want := "mpirun --allow-run-as-root -np 3 --bind-to none qat-mpi sweep run sweeps/plan.json --index " + strconv.Itoa(i) + " --distributed"
		if got := strings.Join(l.Template.Spec.Containers[0].Command, " "); got != want {
			t.Errorf("MPIJob %d launcher: %s", i, got)
		}
		if res := w.Template.Spec.Containers[0].Resources; res.Limits["cpu"] != "1" || res.Limits["memory"] != "2Gi" || res.Requests["memory"] != "2Gi" {
			t.Errorf("MPIJob %d worker resources %+v", i, res)
		}
	}
	p.Entries[0].Config.Train.Device = "cuda"
	if _, err := p.Kubernetes(c); err == nil {
		t.Error("an MPIJob of GPU entries")
	}
	if _, err := p.Slurm(c); err == nil {
		t.Error("srun tasks of GPU entries")
	}
}
