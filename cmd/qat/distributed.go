package main

import (
	"errors"
	"fmt"
	"os"

	"qat/cmd/internal/train"
	"qat/dist"
)

// joinJob opens the MPI job this process belongs to for --distributed
// (nil without it). A process started by a launcher as one of several
// without --distributed is refused: each would train the whole run into
// the same directory. end, deferred with the command's error, ends the
// process's part: a failed process aborts the job, since the others would
// wait for it in their next collective.
func joinJob(distributed bool) (comm dist.Comm, end func(error), err error) {
	if !distributed {
		if n := dist.LaunchedSize(os.Getenv); dist.Launched(os.Getenv) && n > 1 {
			return nil, func(error) {}, inputf("this process is one of %d an MPI launcher started: pass --distributed (to bin/qat-mpi, built by make mpi), or they would train %d runs into one out_dir", n, n)
		}
		return nil, func(error) {}, nil
	}
	comm, err = dist.Open()
	if errors.Is(err, dist.ErrNoMPI) {
		return nil, nil, inputf("--distributed: %v", err)
	}
	if err != nil {
		return nil, nil, err
	}
	return comm, func(err error) {
		if errors.Is(err, train.ErrInterrupted) {
			// every process stopped at the same step; the lead may still
			// be writing the checkpoint
			comm.Barrier()
		} else if err != nil && comm.Size() > 1 {
			fmt.Fprintf(os.Stderr, "qat: process %d of %d: %v\n", comm.Rank(), comm.Size(), err)
			comm.Abort(exitCode(err))
		}
		comm.Close()
	}, nil
}
