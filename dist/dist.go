// Package dist is how the processes of one data-parallel job talk: a Comm
// with the few collectives training needs (broadcast, all-gather,
// all-to-all, gather, barrier, abort). Between processes the Comm is MPI
// (Open MPI through cgo, in binaries built with the `mpi` tag: `make mpi`
// writes bin/qat-mpi); Local gives n Comms inside one process, so the
// reductions built on them are tested without a launcher.
//
// Nothing here adds floating-point numbers: a reduction whose result must
// not depend on the number of processes (or on an MPI library's choice of
// algorithm) moves the operands with these calls and adds them itself in
// a fixed order (engine/dp). AllreduceSum is MPI's own, for benchmarks.
package dist

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"
)

// Comm is one process's view of a job of Size processes.
type Comm interface {
	Rank() int
	Size() int
	// Bcast copies root's buf into every process's buf (same length).
	Bcast(buf []byte, root int) error
	// BcastF32 is Bcast of float32 values.
	BcastF32(buf []float32, root int) error
	// AllgathervF32 gathers every process's send into recv on every
	// process: process p's values land at recv[displs[p]:][:counts[p]],
	// and len(send) must be counts[Rank()]. send may be this process's
	// own part of recv (the same memory): the gather is then in place
	// (MPI_IN_PLACE), without a copy; any other overlap is an error.
	AllgathervF32(send, recv []float32, counts, displs []int) error
	// AlltoallvF32 sends send[sdispls[p]:][:scounts[p]] to process p and
	// receives process p's part for this one at recv[rdispls[p]:][:rcounts[p]].
	AlltoallvF32(send []float32, scounts, sdispls []int, recv []float32, rcounts, rdispls []int) error
	// GatherBytes collects every process's send at root, in rank order
	// (nil on the other processes).
	GatherBytes(send []byte, root int) ([][]byte, error)
	// AllreduceSumF32 sums buf over the processes in place, in the order
	// the library picks (not bit-reproducible across process counts).
	AllreduceSumF32(buf []float32) error
	Barrier() error
	// Abort ends every process of the job with code (MPI_Abort): a process
	// that cannot go on must not leave the others waiting in a collective.
	Abort(code int)
	// Close ends this process's part (MPI_Finalize).
	Close() error
}

// ErrNoMPI is Open's error in a binary built without MPI.
var ErrNoMPI = errors.New("this qat binary is built without MPI: `make mpi` builds bin/qat-mpi, run it under mpirun, srun --mpi=pmix or an MPIJob")

// Open joins the job this process was launched in (mpirun, srun, an
// MPIJob). It returns ErrNoMPI in a binary built without the mpi tag.
func Open() (Comm, error) { return openMPI() }

// Launched says whether this process was started by an MPI launcher (its
// environment names a rank), whatever the binary was built with.
func Launched(getenv func(string) string) bool {
	for _, k := range []string{"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"} {
		if getenv(k) != "" {
			return true
		}
	}
	return false
}

// LaunchedSize is the number of processes an MPI launcher says it started
// (0 when none says).
func LaunchedSize(getenv func(string) string) int {
	for _, k := range []string{"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"} {
		if n, err := strconv.Atoi(getenv(k)); err == nil {
			return n
		}
	}
	return 0
}

// AllgatherOne gives every process each one's v, in rank order.
func AllgatherOne(c Comm, v float32) ([]float32, error) {
	n := c.Size()
	all, one, at := make([]float32, n), make([]int, n), make([]int, n)
	for p := range one {
		one[p], at[p] = 1, p
	}
	return all, c.AllgathervF32([]float32{v}, all, one, at)
}

// Partition splits n items of the given sizes into parts contiguous runs
// of about equal total size (a run may be empty), and returns the first
// item of each run and, last, n: run p is items [first[p], first[p+1]).
// Items are never split, so a tensor, and every quantization block in it,
// belongs to one process.
func Partition(sizes []int, parts int) []int {
	if parts < 1 {
		panic(fmt.Sprintf("dist: Partition into %d parts", parts))
	}
	total := 0
	for _, s := range sizes {
		total += s
	}
	first := make([]int, parts+1)
	first[parts] = len(sizes)
	// run p ends at the first item whose running total reaches (p+1)/parts
	// of the whole
	i, acc := 0, 0
	for p := 1; p < parts; p++ {
		target := int(math.Round(float64(total) * float64(p) / float64(parts)))
		for i < len(sizes) && acc+sizes[i]/2 < target {
			acc += sizes[i]
			i++
		}
		first[p] = i
	}
	return first
}

// inPlace says whether send is exactly recv[at:][:len(send)] (the same
// memory), and fails when the two overlap any other way, which MPI
// forbids.
func inPlace(call string, send, recv []float32, at int) (bool, error) {
	if len(send) == 0 || len(recv) == 0 {
		return false, nil
	}
	s0 := uintptr(unsafe.Pointer(&send[0]))
	r0 := uintptr(unsafe.Pointer(&recv[0]))
	if at < len(recv) && s0 == uintptr(unsafe.Pointer(&recv[at])) {
		return true, nil
	}
	if s0 < r0+4*uintptr(len(recv)) && r0 < s0+4*uintptr(len(send)) {
		return false, fmt.Errorf("%s: the values sent overlap the receive buffer elsewhere than at this process's part", call)
	}
	return false, nil
}

// checkCounts validates a v-collective's counts and displacements
// against the buffer they index; call names the collective in the error.
func checkCounts(call string, n int, counts, displs []int, buf int) error {
	if len(counts) != n || len(displs) != n {
		return fmt.Errorf("%s: %d counts and %d displacements for %d processes", call, len(counts), len(displs), n)
	}
	for p := range counts {
		if counts[p] < 0 || displs[p] < 0 || displs[p]+counts[p] > buf || counts[p] > math.MaxInt32 || displs[p] > math.MaxInt32 {
			return fmt.Errorf("%s: process %d's part [%d, %d+%d) outside a buffer of %d values (or past 2^31)", call, p, displs[p], displs[p], counts[p], buf)
		}
	}
	return nil
}
