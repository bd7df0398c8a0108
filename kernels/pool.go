package kernels

import (
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// A persistent worker pool for the packed products. Decoding runs a few
// hundred products per token, each a fraction of a millisecond to a few
// milliseconds of streaming weights: For's goroutine per call and wait
// group cost little, but a freshly made goroutine starts on the other core
// only after the scheduler wakes an idle thread for it (tens of
// microseconds, often a large part of a product), so two threads gained
// 1.1-1.2x. The pool's workers stay on their own OS threads, spin for a
// while after each product (the next one usually comes within
// microseconds), then park on a condition variable.
//
// A product is split into chunks of rows aligned to a multiple of the
// caller's unit (outputs of one chunk fill whole cache lines, so two
// threads never write the same line), claimed one at a time from a single
// atomic word that holds the product's generation and the next chunk: a
// thread the OS takes off its core for a while leaves its remaining
// chunks to the others, and a worker that wakes late for a finished
// product finds nothing to claim (its generation is gone).

// poolSpin is how long an idle worker spins before it parks.
const poolSpin = 200 * time.Microsecond

type pool struct {
	workers int // besides the calling goroutine
	// state: generation << 40 | chunks << 20 | next chunk to claim. A
	// successful CAS of next proves the chunk belongs to the product being
	// run, so the product's fields read after it are that product's.
	state     atomic.Uint64
	completed atomic.Int64 // chunks of the current generation done
	// the current product, written by the caller before it publishes a
	// new generation and read by a worker only after it has claimed a
	// chunk of that generation (so never while being rewritten)
	fn            func(lo, hi int)
	n, chunk, nch int
	crashed       atomic.Pointer[workerPanic]
	// parking
	mu       sync.Mutex
	cond     *sync.Cond
	sleepers atomic.Int32
	stop     atomic.Bool
	// busy: one product at a time (a second caller runs serially)
	busy sync.Mutex
}

var (
	poolMu  sync.Mutex
	curPool *pool
)

// getPool returns the pool for the current thread count, replacing one
// made for another count (its workers exit).
func getPool() *pool {
	poolMu.Lock()
	defer poolMu.Unlock()
	if curPool != nil && curPool.workers == threads-1 {
		return curPool
	}
	if curPool != nil {
		curPool.close()
	}
	p := &pool{workers: threads - 1}
	p.cond = sync.NewCond(&p.mu)
	for i := 0; i < p.workers; i++ {
		go p.work()
	}
	curPool = p
	return p
}

func (p *pool) close() {
	p.stop.Store(true)
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// work is a worker's loop: wait for a new generation, claim its chunks.
func (p *pool) work() {
	runtime.LockOSThread()
	seen := p.state.Load() >> 40
	for {
		s := p.state.Load()
		if s>>40 == seen {
			// spin, then park until a new generation is published
			t0 := time.Now()
			for i := 1; p.state.Load()>>40 == seen; i++ {
				if p.stop.Load() {
					return
				}
				if i%256 == 0 && time.Since(t0) > poolSpin {
					p.mu.Lock()
					p.sleepers.Add(1)
					for p.state.Load()>>40 == seen && !p.stop.Load() {
						p.cond.Wait()
					}
					p.sleepers.Add(-1)
					p.mu.Unlock()
				}
			}
			continue
		}
		seen = s >> 40
		p.claim(seen)
	}
}

const chunkMask = 1<<20 - 1

// claim runs chunks of generation g until none is left.
func (p *pool) claim(g uint64) {
	for {
		s := p.state.Load()
		if s>>40 != g || s&chunkMask >= s>>20&chunkMask {
			return
		}
		if p.state.CompareAndSwap(s, s+1) {
			p.run(int(s & chunkMask))
		}
	}
}

func (p *pool) run(c int) {
	lo := c * p.chunk
	hi := min(p.n, lo+p.chunk)
	defer func() {
		if r := recover(); r != nil {
			p.crashed.CompareAndSwap(nil, &workerPanic{r, debug.Stack()})
		}
		p.completed.Add(1)
	}()
	p.fn(lo, hi)
}

// ForRows calls fn over [0,n) split into chunks of about grain items
// (rounded up to a multiple of unit, at least one unit; the chunks other
// than the last start and end on multiples of unit) on the calling
// goroutine and the pool's Threads()-1 workers, and returns when all are
// done. Serial where For would be, and inside a parallel region or while
// another goroutine's product holds the pool.
func ForRows(n, grain, unit int, fn func(lo, hi int)) {
	unit = max(1, unit)
	chunk := (max(grain, unit) + unit - 1) / unit * unit
	if Serial(n, chunk) || threads <= 1 {
		fn(0, n)
		return
	}
	p := getPool()
	if !p.busy.TryLock() {
		fn(0, n)
		return
	}
	defer p.busy.Unlock()
	// at least four chunks per thread, so a thread that falls behind
	// leaves work to the others
	if per := (n + 4*threads - 1) / (4 * threads); per < chunk {
		chunk = max(unit, (per+unit-1)/unit*unit)
	}
	if n/chunk >= chunkMask {
		chunk = (n/(chunkMask-1) + unit) / unit * unit
	}
	p.fn, p.n, p.chunk, p.nch = fn, n, chunk, (n+chunk-1)/chunk
	p.completed.Store(0)
	g := (p.state.Load()>>40 + 1) & (1<<24 - 1)
	inRegion = true
	p.state.Store(g<<40 | uint64(p.nch)<<20)
	if p.sleepers.Load() > 0 {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	p.claim(g)
	for p.completed.Load() < int64(p.nch) {
		// a worker is finishing its last chunk
	}
	inRegion = false
	p.fn = nil
	if c := p.crashed.Swap(nil); c != nil {
		panic(c)
	}
}
