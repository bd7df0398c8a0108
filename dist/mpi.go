//go:build mpi

package dist

/*
#cgo pkg-config: ompi-c
#include <stdlib.h>
#include <mpi.h>

// Open MPI's handles are macros over its predefined objects: cgo cannot
// take their addresses, so the calls are wrapped here.
static int q_init(int *provided) {
	int err = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, provided);
	if (err != MPI_SUCCESS) return err;
	// errors come back as codes, named by the Go side, instead of
	// ending the process inside the library
	return MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}
static int q_rank(int *r) { return MPI_Comm_rank(MPI_COMM_WORLD, r); }
static int q_size(int *s) { return MPI_Comm_size(MPI_COMM_WORLD, s); }
static int q_bcast(void *buf, int n, int root) { return MPI_Bcast(buf, n, MPI_BYTE, root, MPI_COMM_WORLD); }
static int q_bcast_f32(void *buf, int n, int root) { return MPI_Bcast(buf, n, MPI_FLOAT, root, MPI_COMM_WORLD); }
static int q_allgatherv_f32(void *send, int n, void *recv, int *counts, int *displs) {
	return MPI_Allgatherv(send, n, MPI_FLOAT, recv, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
}
static int q_allgatherv_f32_in_place(void *recv, int *counts, int *displs) {
	return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
}
static int q_alltoallv_f32(void *send, int *sc, int *sd, void *recv, int *rc, int *rd) {
	return MPI_Alltoallv(send, sc, sd, MPI_FLOAT, recv, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
}
static int q_gather_int(int v, int *all, int root) { return MPI_Gather(&v, 1, MPI_INT, all, 1, MPI_INT, root, MPI_COMM_WORLD); }
static int q_gatherv(void *send, int n, void *recv, int *counts, int *displs, int root) {
	return MPI_Gatherv(send, n, MPI_BYTE, recv, counts, displs, MPI_BYTE, root, MPI_COMM_WORLD);
}
static int q_allreduce_f32(void *buf, int n) { return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); }
static int q_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }
static void q_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }
static int q_finalize(void) { return MPI_Finalize(); }
static void q_error_string(int code, char *buf) { int n = 0; MPI_Error_string(code, buf, &n); buf[n] = 0; }
*/
import "C"

import (
	"fmt"
	"math"
	"sync"
	"unsafe"
)

// mpiComm is MPI_COMM_WORLD. Go runs a goroutine on whichever thread is
// free, so MPI is initialised with MPI_THREAD_SERIALIZED and every call
// holds mu: one call at a time, from any thread.
type mpiComm struct {
	mu         sync.Mutex
	rank, size int
	closed     bool
}

func openMPI() (Comm, error) {
	var provided C.int
	if err := check("MPI_Init_thread", C.q_init(&provided)); err != nil {
		return nil, err
	}
	if provided < C.MPI_THREAD_SERIALIZED {
		C.q_finalize()
		return nil, fmt.Errorf("MPI_Init_thread: the MPI library gives thread level %d, qat needs MPI_THREAD_SERIALIZED", int(provided))
	}
	var r, s C.int
	if err := check("MPI_Comm_rank", C.q_rank(&r)); err != nil {
		return nil, err
	}
	if err := check("MPI_Comm_size", C.q_size(&s)); err != nil {
		return nil, err
	}
	return &mpiComm{rank: int(r), size: int(s)}, nil
}

func check(call string, code C.int) error {
	if code == C.MPI_SUCCESS {
		return nil
	}
	buf := (*C.char)(C.malloc(C.MPI_MAX_ERROR_STRING + 1))
	defer C.free(unsafe.Pointer(buf))
	C.q_error_string(code, buf)
	return fmt.Errorf("%s: %s (MPI error %d)", call, C.GoString(buf), int(code))
}

// ints copies Go ints into C memory (MPI reads the counts during the call
// only, but cgo forbids passing Go memory that holds Go pointers; these
// hold none, the copy is for the int width).
func ints(v []int) *C.int {
	p := (*C.int)(C.malloc(C.size_t(len(v)+1) * C.sizeof_int))
	s := unsafe.Slice(p, len(v)+1)
	for i, x := range v {
		s[i] = C.int(x)
	}
	return p
}

func ptrF32(b []float32) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func (c *mpiComm) Rank() int { return c.rank }
func (c *mpiComm) Size() int { return c.size }

func (c *mpiComm) Bcast(buf []byte, root int) error {
	if len(buf) > math.MaxInt32 {
		return fmt.Errorf("MPI_Bcast: %d bytes, past 2^31", len(buf))
	}
	if len(buf) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return check("MPI_Bcast", C.q_bcast(unsafe.Pointer(&buf[0]), C.int(len(buf)), C.int(root)))
}

func (c *mpiComm) BcastF32(buf []float32, root int) error {
	if len(buf) > math.MaxInt32 {
		return fmt.Errorf("MPI_Bcast: %d values, past 2^31", len(buf))
	}
	if len(buf) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return check("MPI_Bcast", C.q_bcast_f32(ptrF32(buf), C.int(len(buf)), C.int(root)))
}

func (c *mpiComm) AllgathervF32(send, recv []float32, counts, displs []int) error {
	if err := checkCounts("MPI_Allgatherv", c.size, counts, displs, len(recv)); err != nil {
		return err
	}
	if len(send) != counts[c.rank] {
		return fmt.Errorf("MPI_Allgatherv: %d values sent, counts[%d] is %d", len(send), c.rank, counts[c.rank])
	}
	self, err := inPlace("MPI_Allgatherv", send, recv, displs[c.rank])
	if err != nil {
		return err
	}
	cc, cd := ints(counts), ints(displs)
	defer C.free(unsafe.Pointer(cc))
	defer C.free(unsafe.Pointer(cd))
	c.mu.Lock()
	defer c.mu.Unlock()
	if self {
		return check("MPI_Allgatherv", C.q_allgatherv_f32_in_place(ptrF32(recv), cc, cd))
	}
	return check("MPI_Allgatherv", C.q_allgatherv_f32(ptrF32(send), C.int(len(send)), ptrF32(recv), cc, cd))
}

func (c *mpiComm) AlltoallvF32(send []float32, scounts, sdispls []int, recv []float32, rcounts, rdispls []int) error {
	if err := checkCounts("MPI_Alltoallv (send)", c.size, scounts, sdispls, len(send)); err != nil {
		return err
	}
	if err := checkCounts("MPI_Alltoallv (receive)", c.size, rcounts, rdispls, len(recv)); err != nil {
		return err
	}
	sc, sd, rc, rd := ints(scounts), ints(sdispls), ints(rcounts), ints(rdispls)
	for _, p := range []*C.int{sc, sd, rc, rd} {
		defer C.free(unsafe.Pointer(p))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return check("MPI_Alltoallv", C.q_alltoallv_f32(ptrF32(send), sc, sd, ptrF32(recv), rc, rd))
}

func (c *mpiComm) GatherBytes(send []byte, root int) ([][]byte, error) {
	if len(send) > math.MaxInt32 {
		return nil, fmt.Errorf("MPI_Gatherv: %d bytes, past 2^31", len(send))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	lens := make([]C.int, c.size)
	if err := check("MPI_Gather", C.q_gather_int(C.int(len(send)), &lens[0], C.int(root))); err != nil {
		return nil, err
	}
	var counts, displs []int
	total := 0
	if c.rank == root {
		for _, n := range lens {
			counts, displs = append(counts, int(n)), append(displs, total)
			total += int(n)
		}
		if total > math.MaxInt32 {
			return nil, fmt.Errorf("MPI_Gatherv: %d bytes in all, past 2^31", total)
		}
	} else {
		counts, displs = make([]int, c.size), make([]int, c.size)
	}
	recv := make([]byte, total+1)
	cc, cd := ints(counts), ints(displs)
	defer C.free(unsafe.Pointer(cc))
	defer C.free(unsafe.Pointer(cd))
	sp := unsafe.Pointer(&recv[0]) // any valid address when nothing is sent
	if len(send) > 0 {
		sp = unsafe.Pointer(&send[0])
	}
	if err := check("MPI_Gatherv", C.q_gatherv(sp, C.int(len(send)), unsafe.Pointer(&recv[0]), cc, cd, C.int(root))); err != nil {
		return nil, err
	}
	if c.rank != root {
		return nil, nil
	}
	out := make([][]byte, c.size)
	for p := range out {
		out[p] = recv[displs[p] : displs[p]+counts[p]]
	}
	return out, nil
}

func (c *mpiComm) AllreduceSumF32(buf []float32) error {
	if len(buf) > math.MaxInt32 {
		return fmt.Errorf("MPI_Allreduce: %d values, past 2^31", len(buf))
	}
	if len(buf) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return check("MPI_Allreduce", C.q_allreduce_f32(ptrF32(buf), C.int(len(buf))))
}

func (c *mpiComm) Barrier() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return check("MPI_Barrier", C.q_barrier())
}

// Abort does not take mu: another goroutine may be blocked in a
// collective that will never finish, which is why we abort.
func (c *mpiComm) Abort(code int) { C.q_abort(C.int(code)) }

func (c *mpiComm) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return check("MPI_Finalize", C.q_finalize())
}

// Available says whether this binary can join an MPI job.
const Available = true
