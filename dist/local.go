package dist

import (
	"errors"
	"fmt"
	"sync"
)

// Local returns n Comms of one job inside this process, one per goroutine
// that plays a rank: each collective waits until all n have called it, as
// MPI's do. Tests of what is built on a Comm run on them without mpirun.
func Local(n int) []Comm {
	h := &hub{n: n, slots: make([]any, n)}
	h.cond = sync.NewCond(&h.mu)
	cs := make([]Comm, n)
	for r := range cs {
		cs[r] = &local{h: h, rank: r}
	}
	return cs
}

// ErrAborted is what a Local collective returns once a rank has aborted.
var ErrAborted = errors.New("dist: the job was aborted")

type hub struct {
	n       int
	mu      sync.Mutex
	cond    *sync.Cond
	arrived int
	gen     int
	slots   []any
	aborted int // 1 + the code, 0 while running
}

// barrier waits for all n ranks.
func (h *hub) barrier() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.aborted != 0 {
		return ErrAborted
	}
	g := h.gen
	h.arrived++
	if h.arrived == h.n {
		h.arrived = 0
		h.gen++
		h.cond.Broadcast()
		return nil
	}
	for g == h.gen && h.aborted == 0 {
		h.cond.Wait()
	}
	if h.aborted != 0 {
		return ErrAborted
	}
	return nil
}

// round deposits v, lets every rank read all deposits with f, and returns
// when all have read (the deposits' buffers are then free to change).
func (h *hub) round(rank int, v any, f func(all []any)) error {
	h.mu.Lock()
	h.slots[rank] = v
	h.mu.Unlock()
	if err := h.barrier(); err != nil {
		return err
	}
	f(h.slots)
	return h.barrier()
}

type local struct {
	h    *hub
	rank int
}

func (c *local) Rank() int { return c.rank }
func (c *local) Size() int { return c.h.n }

func (c *local) Bcast(buf []byte, root int) error {
	if root < 0 || root >= c.h.n {
		return fmt.Errorf("Bcast: root %d of %d processes", root, c.h.n)
	}
	return c.h.round(c.rank, buf, func(all []any) {
		src := all[root].([]byte)
		if c.rank != root {
			copy(buf, src)
		}
	})
}

func (c *local) BcastF32(buf []float32, root int) error {
	if root < 0 || root >= c.h.n {
		return fmt.Errorf("BcastF32: root %d of %d processes", root, c.h.n)
	}
	return c.h.round(c.rank, buf, func(all []any) {
		if c.rank != root {
			copy(buf, all[root].([]float32))
		}
	})
}

func (c *local) AllgathervF32(send, recv []float32, counts, displs []int) error {
	if err := checkCounts("AllgathervF32", c.h.n, counts, displs, len(recv)); err != nil {
		return err
	}
	if len(send) != counts[c.rank] {
		return fmt.Errorf("AllgathervF32: %d values sent, counts[%d] is %d", len(send), c.rank, counts[c.rank])
	}
	self, err := inPlace("AllgathervF32", send, recv, displs[c.rank])
	if err != nil {
		return err
	}
	return c.h.round(c.rank, send, func(all []any) {
		for p := range all {
			if p == c.rank && self {
				continue // the others read these values now: no write, even of the same bits
			}
			copy(recv[displs[p]:displs[p]+counts[p]], all[p].([]float32))
		}
	})
}

type a2a struct {
	send             []float32
	scounts, sdispls []int
}

func (c *local) AlltoallvF32(send []float32, scounts, sdispls []int, recv []float32, rcounts, rdispls []int) error {
	if err := checkCounts("AlltoallvF32 (send)", c.h.n, scounts, sdispls, len(send)); err != nil {
		return err
	}
	if err := checkCounts("AlltoallvF32 (receive)", c.h.n, rcounts, rdispls, len(recv)); err != nil {
		return err
	}
	var bad error
	err := c.h.round(c.rank, a2a{send, scounts, sdispls}, func(all []any) {
		for p := range all {
			o := all[p].(a2a)
			part := o.send[o.sdispls[c.rank] : o.sdispls[c.rank]+o.scounts[c.rank]]
			if len(part) != rcounts[p] {
				bad = fmt.Errorf("AlltoallvF32: process %d sends %d values to %d, which expects %d", p, len(part), c.rank, rcounts[p])
				continue
			}
			copy(recv[rdispls[p]:], part)
		}
	})
	return errors.Join(err, bad)
}

func (c *local) GatherBytes(send []byte, root int) ([][]byte, error) {
	if root < 0 || root >= c.h.n {
		return nil, fmt.Errorf("GatherBytes: root %d of %d processes", root, c.h.n)
	}
	var out [][]byte
	err := c.h.round(c.rank, send, func(all []any) {
		if c.rank == root {
			for _, a := range all {
				out = append(out, append([]byte(nil), a.([]byte)...))
			}
		}
	})
	return out, err
}

func (c *local) AllreduceSumF32(buf []float32) error {
	sum := make([]float32, len(buf))
	err := c.h.round(c.rank, buf, func(all []any) {
		for _, a := range all {
			for i, v := range a.([]float32) {
				sum[i] += v
			}
		}
	})
	copy(buf, sum)
	return err
}

func (c *local) Barrier() error { return c.h.barrier() }

// Abort wakes every rank waiting in a collective with ErrAborted (a
// process cannot be ended for a goroutine).
func (c *local) Abort(code int) {
	c.h.mu.Lock()
	c.h.aborted = 1 + code
	c.h.cond.Broadcast()
	c.h.mu.Unlock()
}

func (c *local) Close() error { return nil }
