package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDistributedNeedsMPI: the default binary answers --distributed with
// exit 2 and says how to get the MPI one; a process an MPI launcher
// started as one of several, without --distributed, is refused before it
// touches out_dir (the processes would all train into it); optimizer.shard
// in a one-process run names the field. tools/mpi_test.sh runs the MPI
// binary itself under mpirun.
func TestDistributedNeedsMPI(t *testing.T) {
	data := smallData(t)
	out := filepath.Join(t.TempDir(), "run")
	cfg := writeConfig(t, tinyRun, data, out)
	msg, code := qat(t, "train", "--distributed", "--config", cfg)
	if code != 2 || !strings.Contains(msg, "make mpi") || !strings.Contains(msg, "bin/qat-mpi") {
		t.Errorf("--distributed in the default binary: exit %d\n%s", code, msg)
	}
	cmd := exec.Command(qatBin, "train", "--config", cfg)
	cmd.Env = append(os.Environ(), "OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=4")
	b, err := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(b), "pass --distributed") {
		t.Errorf("a launched process without --distributed: %v\n%s", err, b)
	}
	msg, code = qat(t, "train", "--config", cfg, "--set", "optimizer.shard=true")
	if code != 2 || !strings.Contains(msg, "optimizer.shard") {
		t.Errorf("optimizer.shard in one process: exit %d\n%s", code, msg)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused run left %s: %v", out, err)
	}
}
