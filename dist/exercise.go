package dist

import (
	"bytes"
	"fmt"
)

// Exercise runs every collective of c once and checks each result against
// what the ranks sent (rank r sends values made from r), returning the
// first mismatch. Its test runs it on Local; `qat distributed check`
// runs it under mpirun on MPI.
func Exercise(c Comm) error {
	n, r := c.Size(), c.Rank()
	val := func(p, i int) float32 { return float32(1000*p + i) }
	// Bcast from the last rank
	b := []byte{byte(r), byte(r), byte(r)}
	if err := c.Bcast(b, n-1); err != nil {
		return err
	}
	if !bytes.Equal(b, []byte{byte(n - 1), byte(n - 1), byte(n - 1)}) {
		return fmt.Errorf("rank %d: Bcast gave %v", r, b)
	}
	f := []float32{val(r, 0), val(r, 1)}
	if err := c.BcastF32(f, 0); err != nil {
		return err
	}
	if f[0] != val(0, 0) || f[1] != val(0, 1) {
		return fmt.Errorf("rank %d: BcastF32 gave %v", r, f)
	}
	// Allgatherv: rank p sends p+1 values
	counts, displs := make([]int, n), make([]int, n)
	total := 0
	for p := range counts {
		counts[p], displs[p] = p+1, total
		total += p + 1
	}
	send := make([]float32, r+1)
	for i := range send {
		send[i] = val(r, i)
	}
	all := make([]float32, total)
	if err := c.AllgathervF32(send, all, counts, displs); err != nil {
		return err
	}
	for p := range counts {
		for i := 0; i < counts[p]; i++ {
			if all[displs[p]+i] != val(p, i) {
				return fmt.Errorf("rank %d: AllgathervF32 value %d of rank %d is %g", r, i, p, all[displs[p]+i])
			}
		}
	}
	// the same in place: this rank's values already sit at its part of
	// the receive buffer, the others' land around them
	all = make([]float32, total)
	for i := 0; i <= r; i++ {
		all[displs[r]+i] = val(r, i)
	}
	if err := c.AllgathervF32(all[displs[r]:][:r+1], all, counts, displs); err != nil {
		return err
	}
	for p := range counts {
		for i := 0; i < counts[p]; i++ {
			if all[displs[p]+i] != val(p, i) {
				return fmt.Errorf("rank %d: AllgathervF32 in place: value %d of rank %d is %g", r, i, p, all[displs[p]+i])
			}
		}
	}
	// any other overlap of the values sent and the receive buffer is refused
	// (checked before any message, so every rank returns alone)
	big := make([]float32, total+1)
	if err := c.AllgathervF32(big[displs[r]+1:][:r+1], big[:total], counts, displs); err == nil && n > 1 {
		return fmt.Errorf("rank %d: AllgathervF32 accepted a send buffer overlapping another rank's part", r)
	}
	// Alltoallv: rank r sends q+1 values to rank q, value i being
	// 1000*r + 10*q + i
	sc, sd, rc, rd := make([]int, n), make([]int, n), make([]int, n), make([]int, n)
	var out []float32
	for q := 0; q < n; q++ {
		sc[q], sd[q] = q+1, len(out)
		for i := 0; i <= q; i++ {
			out = append(out, float32(1000*r+10*q+i))
		}
		rc[q], rd[q] = r+1, q*(r+1)
	}
	in := make([]float32, n*(r+1))
	if err := c.AlltoallvF32(out, sc, sd, in, rc, rd); err != nil {
		return err
	}
	for p := 0; p < n; p++ {
		for i := 0; i <= r; i++ {
			if want := float32(1000*p + 10*r + i); in[p*(r+1)+i] != want {
				return fmt.Errorf("rank %d: AlltoallvF32 value %d from rank %d is %g, want %g", r, i, p, in[p*(r+1)+i], want)
			}
		}
	}
	// GatherBytes at rank 0: rank p sends p bytes of value p
	got, err := c.GatherBytes(bytes.Repeat([]byte{byte(r)}, r), 0)
	if err != nil {
		return err
	}
	if r == 0 {
		if len(got) != n {
			return fmt.Errorf("GatherBytes: %d parts from %d ranks", len(got), n)
		}
		for p := range got {
			if !bytes.Equal(got[p], bytes.Repeat([]byte{byte(p)}, p)) {
				return fmt.Errorf("GatherBytes: rank %d's part is %v", p, got[p])
			}
		}
	} else if got != nil {
		return fmt.Errorf("rank %d: GatherBytes returned parts off the root", r)
	}
	// AllreduceSum of small integers (exact in any order)
	s := []float32{float32(r), 1}
	if err := c.AllreduceSumF32(s); err != nil {
		return err
	}
	if s[0] != float32(n*(n-1)/2) || s[1] != float32(n) {
		return fmt.Errorf("rank %d: AllreduceSumF32 gave %v", r, s)
	}
	return c.Barrier()
}
