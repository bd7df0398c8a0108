//go:build !mpi

package dist

func openMPI() (Comm, error) { return nil, ErrNoMPI }
