package layers

import (
	"fmt"
	"reflect"

	"qat/autograd"
	"qat/kernels"
)

// Replicas runs one batch's forward and backward split by rows over worker
// replicas of a model: they share its weights, keep their own gradients and
// tapes, and run on separate goroutines with single-threaded BLAS each.
// On small models this beats one multithreaded pass (tiny, 2 threads: the
// multithreaded sgemm of 1024-row products reaches 180-260 GFLOP/s, two
// single-threaded 512-row ones about 2 x 140, and the elementwise ops run
// in parallel for free).
type Replicas struct {
	Model   *Model
	workers []*Model
	tapes   []*autograd.Tape
	params  [][]Param // params[w][i] mirrors Model.Params()[i]
	master  []Param
	losses  []float32
}

// NewReplicas prepares n workers for m.
func NewReplicas(m *Model, n int) *Replicas {
	if n < 1 {
		panic(fmt.Sprintf("layers: NewReplicas: %d workers", n))
	}
	r := &Replicas{Model: m, master: m.Params(), losses: make([]float32, n)}
	for i := 0; i < n; i++ {
		w := Replicate(m)
		r.workers = append(r.workers, w)
		r.tapes = append(r.tapes, autograd.NewTape())
		r.params = append(r.params, w.Params())
	}
	return r
}

// TargetCounts counts the targets that count (not IgnoreIndex) in each of
// W workers' rows of a B x T batch (worker w: rows w*B/W to (w+1)*B/W),
// and in all: a worker's mean loss weighs counts[w]/total in the batch's.
func TargetCounts(targets []int32, B, T, W int) (counts []int, total int) {
	counts = make([]int, W)
	for w := 0; w < W; w++ {
		for _, t := range targets[w*B/W*T : (w+1)*B/W*T] {
			if t != IgnoreIndex {
				counts[w]++
			}
		}
		total += counts[w]
	}
	return counts, total
}

// Replicate returns a worker replica of m: it shares m's weights,
// quantizers' frozen state and adapters' bases, and keeps its own
// gradients (adjacent, as in the model) and observers. A worker's
// Loss + Backward leaves in its gradients exactly what one Replicas worker
// computes for the same rows (engine/dp runs one per process).
func Replicate(m *Model) *Model {
	w := replicate(reflect.ValueOf(m)).Interface().(*Model)
	autograd.PackGrads(packOrder(w.Params()))
	return w
}

var observersType = reflect.TypeOf([]Observer(nil))

// replicate copies the structure under a pointer, giving every tagged
// parameter its own gradient (Var.Replica) and sharing everything else.
func replicate(v reflect.Value) reflect.Value {
	switch {
	case v.Type() == quantType:
		if v.IsNil() {
			return v
		}
		r := reflect.New(quantType).Elem()
		r.Set(reflect.ValueOf(v.Interface().(Quantizer).Replica()))
		return r
	case v.Type() == adapterType:
		if v.IsNil() {
			return v
		}
		r := reflect.New(adapterType).Elem()
		r.Set(reflect.ValueOf(v.Interface().(Adapter).Replica()))
		return r
	case v.Type() == observersType:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeSlice(observersType, v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(reflect.ValueOf(v.Index(i).Interface().(Observer).Replica()))
		}
		return n
	case v.Type() == varType:
		if v.IsNil() {
			return v
		}
		return reflect.ValueOf(v.Interface().(*autograd.Var).Replica())
	case v.Kind() == reflect.Pointer && v.IsNil():
		return v
	case v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct:
		n := reflect.New(v.Elem().Type())
		n.Elem().Set(v.Elem())
		t := v.Elem().Type()
		for i := 0; i < t.NumField(); i++ {
			if _, ok := t.Field(i).Tag.Lookup("st"); ok || t.Field(i).Type == observersType {
				n.Elem().Field(i).Set(replicate(v.Elem().Field(i)))
			}
		}
		return n
	case v.Kind() == reflect.Slice:
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(replicate(v.Index(i)))
		}
		return n
	}
	panic(fmt.Sprintf("layers: replicate: unexpected %s", v.Type()))
}

// LossBackward computes the mean cross-entropy of ids against targets (B
// rows of T) and adds its gradient into the model's parameter gradients,
// exactly as Model.Loss + Backward on one tape would (each worker's mean is
// weighted by its share of the counted targets). It returns the loss.
func (r *Replicas) LossBackward(ids, targets []int32, B, T int) float32 {
	W := min(len(r.workers), B)
	counts, total := TargetCounts(targets, B, T, W)
	kernels.ForBLAS(W, 1, func(_, lo, hi int) {
		for w := lo; w < hi; w++ {
			r0, r1 := w*B/W, (w+1)*B/W
			for _, p := range r.params[w] {
				autograd.ZeroGrad(p.Var)
			}
			tp := r.tapes[w]
			l := r.workers[w].Loss(tp, ids[r0*T:r1*T], targets[r0*T:r1*T], r1-r0, T)
			tp.Backward(l)
			r.losses[w] = l.Data()[0]
			tp.Reset()
		}
	})
	var loss float32
	for w := 0; w < W; w++ {
		if total > 0 {
			loss += r.losses[w] * float32(counts[w]) / float32(total)
		}
	}
	kernels.ForBLAS(len(r.master), 1, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			g := r.master[i].Var.GradData()
			if g == nil || !r.master[i].Var.RequiresGrad() {
				continue
			}
			for w := 0; w < W; w++ {
				if counts[w] > 0 {
					kernels.Active.Axpy(g, r.params[w][i].Var.GradData(), float32(counts[w])/float32(total))
				}
			}
		}
	})
	return loss
}
