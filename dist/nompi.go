//go:build !mpi

package dist

func openMPI() (Comm, error) { return nil, ErrNoMPI }

// Available says whether this binary can join an MPI job.
const Available = false
