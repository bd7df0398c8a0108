//go:build mpi

package dist

import (
	"os"
	"strconv"
	"testing"
)

// TestMPI runs every collective on MPI_COMM_WORLD (tools/mpi_test.sh
// starts this test binary under mpirun -np 2 with QAT_MPI_NP=2; alone, it
// is a job of one process).
func TestMPI(t *testing.T) {
	c, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := 1
	if s := os.Getenv("QAT_MPI_NP"); s != "" {
		want, _ = strconv.Atoi(s)
	}
	if c.Size() != want {
		t.Fatalf("a job of %d processes, QAT_MPI_NP says %d", c.Size(), want)
	}
	if err := Exercise(c); err != nil {
		t.Fatal(err)
	}
	// v-collectives whose counts do not fit the buffer are refused
	// before MPI sees them, on every process alike
	past := make([]int, c.Size())
	for p := range past {
		past[p] = 5
	}
	if err := c.AllgathervF32(nil, make([]float32, 1), make([]int, c.Size()), past); err == nil {
		t.Error("displacements past the buffer were accepted")
	}
}
