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
// threads never write the same line). The chunks are dealt out in one
// contiguous region per thread, each region's remaining range in its own
// atomic word with the product's generation: a thread claims its own
// region's chunks from the front, in address order, then takes what is
// left of the others' from the back. Each thread so streams one run of
// weights, as the hardware prefetchers want (on a 2-core Zen 5, chunks
// of 16 rows dealt alternately to two threads streamed a DRAM-sized
// GEMV at 33-48 GB/s, contiguous halves at 56-63); a thread the OS takes
// off its core for a while still leaves its remaining chunks to the
// others, and a worker that wakes late for a finished product finds
// nothing to claim (its generation is gone).

// poolSpin is how long an idle worker spins before it parks.
const poolSpin = 200 * time.Microsecond

type pool struct {
	workers int // besides the calling goroutine
	// state: generation << 40, published after the regions
	state atomic.Uint64
	// regions: one per thread (the caller's first), each generation << 40
	// | end << 20 | start of the chunks left in it. A successful CAS of a
	// region proves the chunk belongs to the product being run, so the
	// product's fields read after it are that product's.
	regions   []region
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

// region is padded to a cache line: each thread claims from its own.
type region struct {
	w atomic.Uint64
	_ [56]byte
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
	p := &pool{workers: threads - 1, regions: make([]region, threads)}
	p.cond = sync.NewCond(&p.mu)
	for i := 0; i < p.workers; i++ {
		go p.work(i + 1)
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

// work is a worker's loop: wait for a new generation, claim its chunks
// (from region self first).
func (p *pool) work(self int) {
	runtime.LockOSThread()
	// generation 0 is the new pool's: a worker that starts after the
	// first product is published (its goroutine waits for a thread) must
	// still take part in it, so it cannot start from the state it finds
	var seen uint64
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
		p.claim(seen, self)
	}
}

const chunkMask = 1<<20 - 1

// claim runs chunks of generation g until none is left: region self's
// from the front, then the other regions' from the back.
func (p *pool) claim(g uint64, self int) {
	for k := range p.regions {
		r := &p.regions[(self+k)%len(p.regions)].w
		for {
			s := r.Load()
			lo, hi := s&chunkMask, s>>20&chunkMask
			if s>>40 != g {
				return // the product is done and another may be running
			}
			if lo >= hi {
				break
			}
			c, next := lo, s+1
			if k > 0 {
				c, next = hi-1, s-1<<20
			}
			if r.CompareAndSwap(s, next) {
				p.run(int(c))
			}
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
	inRegion.Store(true)
	for i := range p.regions {
		lo, hi := i*p.nch/len(p.regions), (i+1)*p.nch/len(p.regions)
		p.regions[i].w.Store(g<<40 | uint64(hi)<<20 | uint64(lo))
	}
	p.state.Store(g << 40)
	if p.sleepers.Load() > 0 {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	p.claim(g, 0)
	for p.completed.Load() < int64(p.nch) {
		// a worker is finishing its last chunk
	}
	inRegion.Store(false)
	p.fn = nil
	if c := p.crashed.Swap(nil); c != nil {
		panic(c)
	}
}
