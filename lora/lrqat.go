// Package lora holds low-rank adapters for quantization-aware fine-tuning:
// LR-QAT (arXiv 2406.06385), whose adapters live inside the quantizer over
// a frozen int8 copy of the weights, and plain LoRA + QAT (torchtune's
// QAT+LoRA recipe) for comparison; Prepare attaches them by config, Merge
// folds LR-QAT's adapters into plain integer weights.
package lora

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"unsafe"

	"qat/autograd"
	"qat/data/safetensors"
	"qat/kernels"
	"qat/layers"
)

// LRQAT is the LR-QAT weight of one linear layer (rows x cols):
//
//	W_hat = s * clamp(rne(Phi/2^(8-b) + (alpha/r) A B), -2^(b-1), 2^(b-1)-1)
//
// with Phi = rne(clamp(W0/s0, qmin, qmax) * 2^(8-b)) the frozen base
// weight in int8 fixed point (b integer bits, 8-b fractional), A (rows, r)
// and B (r, cols) the trained low-rank factors, and s the trained scale
// (one per row, or per group of inputs), initialised to s0. It computes
// the layer's whole product (a layers.Adapter): W_hat is built in a
// pooled buffer for the product and rebuilt in backward, so no float32
// copy of any weight lives longer than one layer's product.
type LRQAT struct {
	Bits, Group int // group: inputs per scale (Cols: per channel)
	Rank        int
	Alpha       float32
	Rows, Cols  int
	Phi         []int8
	// A, B and Step are trained: A starts at 0 (W_hat = RTN(W0) at step
	// 0), B Kaiming-uniform as torch's nn.Linear, Step at s0.
	A, B, Step *autograd.Var
}

// NewLRQAT builds the layer from w0 (rows x cols) and its initial scales s0
// (rows*cols/group of them). seed draws B.
func NewLRQAT(w0 []float32, rows, cols, bits, group, rank int, alpha float32, s0 []float32, seed uint64) (*LRQAT, error) {
	if bits < 2 || bits > 8 {
		return nil, fmt.Errorf("lr-qat: %d-bit weights: the int8 fixed-point base needs 2 to 8", bits)
	}
	if group <= 0 || cols%group != 0 || len(s0) != rows*cols/group || len(w0) != rows*cols {
		return nil, fmt.Errorf("lr-qat: %d scales (group %d) for a %d x %d weight", len(s0), group, rows, cols)
	}
	if rank <= 0 || rank > min(rows, cols) {
		return nil, fmt.Errorf("lr-qat: rank %d for a %d x %d weight", rank, rows, cols)
	}
	l := &LRQAT{Bits: bits, Group: group, Rank: rank, Alpha: alpha, Rows: rows, Cols: cols, Phi: make([]int8, rows*cols),
		A: autograd.NewParam(rows, rank), B: autograd.NewParam(rank, cols), Step: autograd.NewParam(len(s0))}
	qmin, qmax := l.grid()
	frac := float32(int(1) << (8 - bits))
	for i, w := range w0 {
		v := min(max(w/s0[i/group], qmin), qmax) * frac
		l.Phi[i] = int8(rne(v))
	}
	copy(l.Step.Data(), s0)
	// Kaiming-uniform with a = sqrt(5): bound 1/sqrt(fan_in)
	rng := rand.New(rand.NewPCG(seed, 0x10a))
	bound := 1 / math.Sqrt(float64(cols))
	for i := range l.B.Data() {
		l.B.Data()[i] = float32((2*rng.Float64() - 1) * bound)
	}
	return l, nil
}

func (l *LRQAT) grid() (qmin, qmax float32) {
	return -float32(int(1) << (l.Bits - 1)), float32(int(1)<<(l.Bits-1)) - 1
}

// rne rounds half to even (|v| < 2^22: the adding trick is exact there).
func rne(v float32) float32 { return (v + 12582912) - 12582912 }

// Apply returns W_hat as a tensor of its own (for callers that want the
// weight itself; the layer's product goes through Forward).
func (l *LRQAT) Apply(ops autograd.Ops, _ *autograd.Var) *autograd.Var {
	w := make([]float32, l.Rows*l.Cols)
	q := make([]int8, len(w))
	m := make([]uint8, len(w))
	return ops.Custom([]int{l.Rows, l.Cols}, []*autograd.Var{l.A, l.B, l.Step},
		func(out []float32) { l.build(out, q, m) },
		func(g []float32, d [][]float32) { l.backWeight(g, q, m, d[0], d[1], d[2]) })
}

// build writes W_hat into w and, where q and m are given, the integers
// and the straight-through mask 1[qmin <= rne(z) <= qmax].
func (l *LRQAT) build(w []float32, q []int8, m []uint8) {
	kernels.Sgemm(false, false, l.Rows, l.Cols, l.Rank, l.Alpha/float32(l.Rank), l.A.Data(), l.Rank, l.B.Data(), l.Cols, 0, w, l.Cols)
	qmin, qmax := l.grid()
	inv := 1 / float32(int(1)<<(8-l.Bits))
	s, phi, g := l.Step.Data(), l.Phi, l.Group
	kernels.For(l.Rows, 8, func(r0, r1 int) {
		// by scale group: no division per element
		for k := r0 * l.Cols / g; k < r1*l.Cols/g; k++ {
			sk := s[k]
			for i := k * g; i < (k+1)*g; i++ {
				r := rne(float32(phi[i])*inv + w[i])
				c := min(max(r, qmin), qmax)
				if q != nil {
					q[i] = int8(c)
					m[i] = 0
					if r == c {
						m[i] = 1
					}
				}
				w[i] = sk * c
			}
		}
	})
}

// backWeight takes G = dL/dW_hat (overwritten) into the gradients of A, B
// and s: ds += sum(G*q) per scale, dC = s*G*m, dA += (alpha/r) dC B^T,
// dB += (alpha/r) A^T dC.
func (l *LRQAT) backWeight(G []float32, q []int8, m []uint8, dA, dB, ds []float32) {
	s, g := l.Step.Data(), l.Group
	if ds != nil {
		for k := range ds {
			var acc float32
			for i := k * g; i < (k+1)*g; i++ {
				acc += G[i] * float32(q[i])
			}
			ds[k] += acc
		}
	}
	kernels.For(l.Rows, 8, func(r0, r1 int) {
		for k := r0 * l.Cols / g; k < r1*l.Cols/g; k++ {
			sk := s[k]
			for i := k * g; i < (k+1)*g; i++ {
				G[i] *= sk * float32(m[i])
			}
		}
	})
	sc := l.Alpha / float32(l.Rank)
	if dA != nil {
		kernels.Sgemm(false, true, l.Rows, l.Rank, l.Cols, sc, G, l.Cols, l.B.Data(), l.Cols, 1, dA, l.Rank)
	}
	if dB != nil {
		kernels.Sgemm(true, false, l.Rank, l.Cols, l.Rows, sc, l.A.Data(), l.Rank, G, l.Cols, 1, dB, l.Cols)
	}
}

// Forward computes x W_hat^T (x: (..., Cols)) with W_hat built in a
// pooled buffer, and in backward rebuilds it for dx and the adapters'
// gradients (the reference checkpoints W_hat the same way).
func (l *LRQAT) Forward(ops autograd.Ops, x *autograd.Var) *autograd.Var {
	return l.Product(ops, x, nil)
}

// Product implements layers.Adapter: Forward; the layer keeps no weight.
func (l *LRQAT) Product(ops autograd.Ops, x, _ *autograd.Var) *autograd.Var {
	sh := x.Shape()
	if sh[len(sh)-1] != l.Cols {
		panic(fmt.Sprintf("lora: LR-QAT linear of %d inputs applied to %v", l.Cols, sh))
	}
	out := append(append([]int(nil), sh[:len(sh)-1]...), l.Rows)
	n := x.Size() / l.Cols
	return ops.Custom(out, []*autograd.Var{x, l.A, l.B, l.Step},
		func(y []float32) {
			w := floats.get(l.Rows * l.Cols)
			l.build(w, nil, nil)
			kernels.Sgemm(false, true, n, l.Rows, l.Cols, 1, x.Data(), l.Cols, w, l.Cols, 0, y, l.Rows)
			floats.put(w)
		},
		func(dy []float32, d [][]float32) {
			w, G := floats.get(l.Rows*l.Cols), floats.get(l.Rows*l.Cols)
			qm := bytes.get(2 * l.Rows * l.Cols)
			q := unsafe.Slice((*int8)(unsafe.Pointer(&qm[0])), l.Rows*l.Cols)
			m := qm[l.Rows*l.Cols:]
			l.build(w, q, m)
			if d[0] != nil { // dx += dy W_hat
				kernels.Sgemm(false, false, n, l.Cols, l.Rows, 1, dy, l.Rows, w, l.Cols, 1, d[0], l.Cols)
			}
			if d[1] != nil || d[2] != nil || d[3] != nil { // G = dy^T x
				kernels.Sgemm(true, false, l.Rows, l.Cols, n, 1, dy, l.Rows, x.Data(), l.Cols, 0, G, l.Cols)
				l.backWeight(G, q, m, d[1], d[2], d[3])
			}
			floats.put(w)
			floats.put(G)
			bytes.put(qm)
		})
}

// Ints returns the merged integer weights clamp(rne(Phi/2^(8-b) + (alpha/r)
// A B)) and W = s*q as Forward computes it (Merge's input).
func (l *LRQAT) Ints() ([]int8, []float32) {
	w, q, m := make([]float32, l.Rows*l.Cols), make([]int8, l.Rows*l.Cols), make([]uint8, l.Rows*l.Cols)
	l.build(w, q, m)
	return q, w
}

// State is the trained tensors (checkpointed as NAME.weight_quant.KEY).
func (l *LRQAT) State() map[string]*autograd.Var {
	return map[string]*autograd.Var{"lora_a": l.A, "lora_b": l.B, "step": l.Step}
}

// Frozen is the int8 base weight (layers.FrozenState).
func (l *LRQAT) Frozen() map[string]safetensors.Tensor {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&l.Phi[0])), len(l.Phi))
	return map[string]safetensors.Tensor{"phi": {DType: "I8", Shape: []int{l.Rows, l.Cols}, Data: b}}
}

// LoadFrozen reads the base weight back.
func (l *LRQAT) LoadFrozen(key string, t safetensors.Tensor) error {
	if key != "phi" || t.DType != "I8" || len(t.Data) != len(l.Phi) {
		return fmt.Errorf("lr-qat %s: dtype %s, %d bytes; want I8, %d", key, t.DType, len(t.Data), len(l.Phi))
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&l.Phi[0])), len(l.Phi)), t.Data)
	return nil
}

// Replica shares the base weight and the trained values; the trained
// tensors get their own gradients.
func (l *LRQAT) Replica() layers.Adapter {
	r := *l
	r.A, r.B, r.Step = l.A.Replica(), l.B.Replica(), l.Step.Replica()
	return &r
}

var (
	_ layers.Adapter     = (*LRQAT)(nil)
	_ layers.FrozenState = (*LRQAT)(nil)
)

// freeList holds layer-sized scratch buffers: at most a few live at once
// (one layer's product per goroutine), reused across layers and steps.
type freeList[T any] struct {
	sync.Mutex
	free [][]T
}

// get returns a buffer of n elements (contents unspecified).
func (l *freeList[T]) get(n int) []T {
	l.Lock()
	defer l.Unlock()
	for i, s := range l.free {
		if cap(s) >= n {
			l.free = append(l.free[:i], l.free[i+1:]...)
			return s[:n]
		}
	}
	return make([]T, n)
}

func (l *freeList[T]) put(s []T) {
	l.Lock()
	l.free = append(l.free, s)
	l.Unlock()
}

var (
	floats freeList[float32]
	bytes  freeList[byte]
)
