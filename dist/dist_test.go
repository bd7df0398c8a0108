package dist

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// TestPartition: runs cover the items in order without splitting one, and
// no run is larger than an equal share plus its largest item.
func TestPartition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 500; trial++ {
		n := rng.IntN(40)
		sizes := make([]int, n)
		total, big := 0, 0
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(1000)
			if rng.IntN(10) == 0 {
				sizes[i] *= 100
			}
			total += sizes[i]
			big = max(big, sizes[i])
		}
		parts := 1 + rng.IntN(8)
		first := Partition(sizes, parts)
		if len(first) != parts+1 || first[0] != 0 || first[parts] != n || !slices.IsSorted(first) {
			t.Fatalf("Partition(%v, %d) = %v", sizes, parts, first)
		}
		for p := 0; p < parts; p++ {
			s := 0
			for _, x := range sizes[first[p]:first[p+1]] {
				s += x
			}
			if float64(s) > float64(total)/float64(parts)+float64(big) {
				t.Errorf("run %d of %d holds %d of %d (largest item %d)", p, parts, s, total, big)
			}
		}
	}
}

// TestLocal: every collective of the in-process Comm against the
// values each rank must end with.
func TestLocal(t *testing.T) {
	const n = 3
	var wg sync.WaitGroup
	errs := make([]error, n)
	for _, c := range Local(n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[c.Rank()] = Exercise(c)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestLocalAbort(t *testing.T) {
	cs := Local(2)
	done := make(chan error)
	go func() { done <- cs[1].Barrier() }()
	cs[0].Abort(3)
	if err := <-done; !errors.Is(err, ErrAborted) {
		t.Fatalf("a rank waiting in a barrier got %v after an abort", err)
	}
}

func TestNoMPI(t *testing.T) {
	if _, err := Open(); err != nil && !errors.Is(err, ErrNoMPI) {
		t.Fatal(err)
	}
}
