package kernels

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// withThreads runs f with n kernel threads (GOMAXPROCS raised to n if
// needed, so the pool really runs on several threads) and BLAS on one, as
// the packed decoder sets them (while OpenBLAS has threads of its own,
// ForRows runs serially and the pool would go untested).
func withThreads(t *testing.T, n int, f func()) {
	t.Helper()
	if runtime.GOMAXPROCS(0) < n {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	}
	defer SetThreads(1)
	SetThreads(n)
	SetBLASThreads(1)
	f()
}

// TestForRows: every index of [0,n) is visited exactly once, in chunks
// that start and end on multiples of unit (but the last end, n), for
// sizes around the chunking's edges, on 2 and 3 threads, twice in a row
// (the second call reuses the parked or spinning workers).
func TestForRows(t *testing.T) {
	for _, th := range []int{2, 3} {
		withThreads(t, th, func() {
			for _, c := range []struct{ n, grain, unit int }{{1, 1, 1}, {7, 1, 1}, {64, 4, 4}, {1000, 8, 16}, {1001, 300, 16}, {4096, 2, 4}, {37, 5, 3}} {
				for rep := 0; rep < 2; rep++ {
					seen := make([]int32, c.n)
					var mu sync.Mutex
					var bad []string
					ForRows(c.n, c.grain, c.unit, func(lo, hi int) {
						if lo%c.unit != 0 || (hi != c.n && hi%c.unit != 0) || lo >= hi {
							mu.Lock()
							bad = append(bad, fmt.Sprintf("[%d,%d)", lo, hi))
							mu.Unlock()
						}
						for i := lo; i < hi; i++ {
							seen[i]++ // chunks are disjoint: no two goroutines write one index
						}
					})
					if len(bad) > 0 {
						t.Fatalf("threads %d %+v: chunks off the unit: %v", th, c, bad)
					}
					for i, s := range seen {
						if s != 1 {
							t.Fatalf("threads %d %+v: index %d visited %d times", th, c, i, s)
						}
					}
				}
			}
		})
	}
}

// TestForRowsPanic: a panic in a chunk, wherever it runs, reaches the
// caller (as For's do), and the pool still works afterwards.
func TestForRowsPanic(t *testing.T) {
	withThreads(t, 2, func() {
		for _, at := range []int{0, 999} {
			func() {
				defer func() {
					r := recover()
					if r == nil || !strings.Contains(fmt.Sprint(r), "chunk boom") {
						t.Fatalf("panic at %d: recovered %v", at, r)
					}
				}()
				ForRows(1000, 4, 4, func(lo, hi int) {
					if lo <= at && at < hi {
						panic("chunk boom")
					}
				})
			}()
		}
		sum := 0
		var mu sync.Mutex
		ForRows(100, 4, 4, func(lo, hi int) {
			mu.Lock()
			sum += hi - lo
			mu.Unlock()
		})
		if sum != 100 {
			t.Fatalf("after the panics: %d of 100 rows", sum)
		}
	})
}

// TestForRowsConcurrent: callers on several goroutines at once (one holds
// the pool, the others run serially) each get their whole range, and a
// change of the thread count in between replaces the pool.
func TestForRowsConcurrent(t *testing.T) {
	for _, th := range []int{2, 3, 2} {
		withThreads(t, th, func() {
			var wg sync.WaitGroup
			errs := make(chan string, 8)
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for rep := 0; rep < 50; rep++ {
						n := 200 + 37*g + rep
						out := make([]int, n)
						ForRows(n, 8, 8, func(lo, hi int) {
							for i := lo; i < hi; i++ {
								out[i] += i + 1
							}
						})
						for i, v := range out {
							if v != i+1 {
								errs <- fmt.Sprintf("goroutine %d call %d: out[%d] = %d", g, rep, i, v)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Fatalf("threads %d: %s", th, e)
			}
		})
	}
}

// TestForRowsSteal: the chunk at 0 waits until every other chunk is done,
// so the other thread must take all of them, its own region's and what is
// left of the caller's (a pool whose threads kept to their own regions
// would never finish: the wait gives up after 10 s and the test fails).
func TestForRowsSteal(t *testing.T) {
	withThreads(t, 2, func() {
		for rep := 0; rep < 3; rep++ {
			const n = 400
			var done atomic.Int64
			timedOut := false
			ForRows(n, 4, 4, func(lo, hi int) {
				if lo == 0 {
					deadline := time.Now().Add(10 * time.Second)
					for done.Load() < n-int64(hi) {
						if time.Now().After(deadline) {
							timedOut = true
							break
						}
						runtime.Gosched()
					}
				}
				done.Add(int64(hi - lo))
			})
			if timedOut || done.Load() != n {
				t.Fatalf("rep %d: %d of %d rows done, waited in vain: %v", rep, done.Load(), n, timedOut)
			}
		}
	})
}
