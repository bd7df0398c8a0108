package data

import (
	"fmt"
	"math/rand/v2"
)

// Loader cuts a token stream into windows of seq+1 tokens (consecutive
// windows overlap by one token: inputs and next-token targets) and hands
// out batches of them in a shuffled order that depends only on the seed and
// the epoch, so a run resumes at the exact next batch from Position alone.
type Loader struct {
	ds         *Dataset
	batch, seq int
	seed       uint64
	epoch      int
	next       int // index into perm of the next window
	perm       []int32
}

// Position is where a Loader stands: the epoch and the next window.
type Position struct {
	Epoch int `json:"epoch"`
	Next  int `json:"next"`
}

// NewLoader returns a loader at the start of epoch 0.
func NewLoader(ds *Dataset, batch, seq int, seed uint64) (*Loader, error) {
	n := (len(ds.Tokens) - 1) / seq
	if n < batch {
		return nil, inputErr("dataset of %d tokens holds %d windows of %d+1, fewer than one batch of %d", len(ds.Tokens), n, seq, batch)
	}
	l := &Loader{ds: ds, batch: batch, seq: seq, seed: seed}
	l.shuffle()
	return l, nil
}

// Windows is the number of windows per epoch.
func (l *Loader) Windows() int { return len(l.perm) }

func (l *Loader) shuffle() {
	n := (len(l.ds.Tokens) - 1) / l.seq
	if cap(l.perm) < n {
		l.perm = make([]int32, n)
	}
	l.perm = l.perm[:n]
	for i := range l.perm {
		l.perm[i] = int32(i)
	}
	rng := rand.New(rand.NewPCG(l.seed, uint64(l.epoch)))
	rng.Shuffle(n, func(i, j int) { l.perm[i], l.perm[j] = l.perm[j], l.perm[i] })
}

// Position reports where the next batch comes from.
func (l *Loader) Position() Position { return Position{l.epoch, l.next} }

// Seek moves to p (from a checkpoint).
func (l *Loader) Seek(p Position) error {
	if p.Epoch < 0 || p.Next < 0 || p.Next > len(l.perm) {
		return fmt.Errorf("data position %+v outside %d windows", p, len(l.perm))
	}
	l.epoch = p.Epoch
	l.shuffle()
	l.next = p.Next
	return nil
}

// Next fills ids and targets (batch*seq each) with the next batch; an epoch
// that cannot fill a whole batch ends early and the next one starts. A
// target the dataset's mask leaves out is IgnoreTarget.
func (l *Loader) Next(ids, targets []int32) {
	if l.next+l.batch > len(l.perm) {
		l.epoch++
		l.shuffle()
		l.next = 0
	}
	for b := 0; b < l.batch; b++ {
		w := int(l.perm[l.next+b]) * l.seq
		copy(ids[b*l.seq:(b+1)*l.seq], l.ds.Tokens[w:w+l.seq])
		fillTargets(targets[b*l.seq:(b+1)*l.seq], l.ds, w+1)
	}
	l.next += l.batch
}

// fillTargets copies ds.Tokens[from:] into dst, IgnoreTarget where the
// mask is 0.
func fillTargets(dst []int32, ds *Dataset, from int) {
	copy(dst, ds.Tokens[from:from+len(dst)])
	if ds.Mask == nil {
		return
	}
	for i, b := range ds.Mask[from : from+len(dst)] {
		if b == 0 {
			dst[i] = IgnoreTarget
		}
	}
}

// Sequential visits every window once in order (evaluation): fn gets ids
// and targets of up to batch windows at a time and how many windows it got
// (targets the mask leaves out are IgnoreTarget).
func Sequential(ds *Dataset, batch, seq int, fn func(ids, targets []int32, n int)) {
	n := (len(ds.Tokens) - 1) / seq
	ids, tg := make([]int32, batch*seq), make([]int32, batch*seq)
	for w := 0; w < n; w += batch {
		k := min(batch, n-w)
		for b := 0; b < k; b++ {
			o := (w + b) * seq
			copy(ids[b*seq:(b+1)*seq], ds.Tokens[o:o+seq])
			fillTargets(tg[b*seq:(b+1)*seq], ds, o+1)
		}
		fn(ids[:k*seq], tg[:k*seq], k)
	}
}
