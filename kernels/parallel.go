package kernels

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

var (
	threads = 1
	// inRegion is set while ForChunks runs chunks on several goroutines:
	// nested calls (an op inside a data-parallel worker) run serially. It is
	// written only by the goroutine that starts the region, before it starts
	// the others and after they are done; atomic because the packed
	// products' pool sets it too while another goroutine's ForRows, refused
	// the busy pool, reads it to run serially.
	inRegion atomic.Bool
	blasHeld bool // inside ForBLAS: OpenBLAS is held to one thread
)

// SetThreads sets how many goroutines the kernels split work over (1 or
// more; values above GOMAXPROCS are clipped). Like blas32.Use it is a
// process-wide setting, meant to be called once by main.
func SetThreads(n int) {
	threads = max(1, min(n, runtime.GOMAXPROCS(0)))
	setBlasThreads(threads)
}

// ForBLAS is ForChunks for work that calls SgemmSerial: while it runs, the
// BLAS library runs each call on the calling thread, since several
// goroutines call it at once (OpenBLAS's thread pool must not be entered
// concurrently).
func ForBLAS(n, grain int, fn func(chunk, lo, hi int)) {
	if Chunks(n, grain) > 1 {
		setBlasThreads(1)
		blasHeld = true
		defer func() { setBlasThreads(threads); blasHeld = false }()
	}
	ForChunks(n, grain, fn)
}

// blasThreaded reports whether a BLAS call made now runs on OpenBLAS's own
// worker threads (more than one thread set, outside ForBLAS).
func blasThreaded() bool { return blasPool && !blasHeld }

// SetBLASThreads sets the BLAS library's threads alone (at most
// Threads()): decoding with packed weights makes only tiny BLAS calls
// (attention over the cache) and runs its products on our goroutines, so
// it keeps BLAS on one thread, whose idle workers would otherwise spin on
// the cores those goroutines need.
func SetBLASThreads(n int) { setBlasThreads(max(1, min(n, threads))) }

// Threads returns the number set by SetThreads.
func Threads() int { return threads }

// Chunks returns how many chunks For and ForChunks split n items of at
// least grain each into (1 inside a parallel region).
func Chunks(n, grain int) int {
	if inRegion.Load() {
		return 1
	}
	return max(1, min(threads, (n+max(grain, 1)-1)/max(grain, 1)))
}

// Serial reports whether For(n, grain, ...) would run on the calling
// goroutine alone; callers use it to skip building a closure (which
// allocates) on that path.
func Serial(n, grain int) bool { return Chunks(n, grain) <= 1 || blasThreaded() }

// For calls fn over [0,n) split into at most Threads() contiguous chunks of
// at least grain items, in parallel, and returns when all are done.
func For(n, grain int, fn func(lo, hi int)) {
	if Serial(n, grain) {
		fn(0, n) // no wrapper closure to allocate on the serial path
		return
	}
	ForChunks(n, grain, func(_, lo, hi int) { fn(lo, hi) })
}

// ForChunks is For that also passes the chunk's index in [0, Chunks(n,
// grain)), so callers can hand each chunk its own scratch buffer.
func ForChunks(n, grain int, fn func(chunk, lo, hi int)) {
	t := Chunks(n, grain)
	if blasThreaded() {
		// OpenBLAS's idle workers spin on the other core for ~0.1 s after
		// each multithreaded call; a goroutine sent there only fights them
		// (tiny, 2 threads: 198 ms/step with parallel elementwise ops,
		// 182 ms without).
		t = 1
	}
	if t <= 1 {
		fn(0, 0, n)
		return
	}
	inRegion.Store(true)
	defer inRegion.Store(false)
	var wg sync.WaitGroup
	var crashed atomic.Pointer[workerPanic]
	wg.Add(t - 1)
	for i := 1; i < t; i++ {
		lo, hi := i*n/t, (i+1)*n/t
		go func() {
			defer func() {
				if r := recover(); r != nil {
					crashed.CompareAndSwap(nil, &workerPanic{r, debug.Stack()})
				}
				wg.Done()
			}()
			fn(i, lo, hi)
		}()
	}
	fn(0, 0, n/t)
	wg.Wait()
	if p := crashed.Load(); p != nil {
		// on the caller's goroutine, where the command's recover sees it
		panic(p)
	}
}

// workerPanic carries a chunk's panic, with its goroutine's stack, to the
// goroutine that called ForChunks: a panic left on a worker would end the
// process past every recover.
type workerPanic struct {
	value any
	stack []byte
}

func (p *workerPanic) String() string {
	return fmt.Sprintf("%v\n\nin a parallel chunk:\n%s", p.value, p.stack)
}
