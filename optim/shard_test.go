package optim

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestShardedMatchesWhole: optimizers that each keep some tensors' moments
// (ZeRO-1) update those tensors to the bit as the whole optimizer does,
// their shards merge (SaveParts, in any order) into the very file Save
// writes, and loading that file into another split restores each kept
// tensor's moments: for fp32, int8 and fp8 moments.
func TestShardedMatchesWhole(t *testing.T) {
	split := [][]bool{{true, false, true}, {false, true, false}}
	for _, kind := range []string{"fp32", "int8", "fp8"} {
		st := States{Kind: kind, MinSize: 100}
		start := func() []Param { return statesParams(rand.New(rand.NewPCG(4, 5))) }
		grads := func(ps []Param, step int) {
			r := rand.New(rand.NewPCG(uint64(step), 9))
			for _, p := range ps {
				for i := range p.Var.GradData() {
					p.Var.GradData()[i] = float32(r.NormFloat64())
				}
			}
		}
		whole := start()
		ref := NewAdamW(DefaultAdamW, whole, st.Factory())
		var shards []*AdamW
		var params [][]Param
		for _, keep := range split {
			ps := start()
			o := NewAdamW(DefaultAdamW, ps, Shard(st.Factory(), func(p Param) bool { return keep[index(ps, p)] }))
			shards, params = append(shards, o), append(params, ps)
		}
		for step := 1; step <= 3; step++ {
			grads(whole, step)
			ref.Update(1e-3)
			for k, o := range shards {
				grads(params[k], step)
				o.Update(1e-3)
			}
		}
		for k, keep := range split {
			for i, kept := range keep {
				if kept && !bytes.Equal(f32bytes(params[k][i].Var.Data()), f32bytes(whole[i].Var.Data())) {
					t.Errorf("%s: shard %d's %s differs from the whole optimizer's", kind, k, whole[i].Name)
				}
			}
		}
		dir := t.TempDir()
		want, got := filepath.Join(dir, "whole.safetensors"), filepath.Join(dir, "parts.safetensors")
		if err := ref.Save(want); err != nil {
			t.Fatal(err)
		}
		var parts [][]byte
		for _, k := range []int{1, 0} {
			b, err := shards[k].Encode()
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, b)
		}
		if err := shards[0].SaveParts(got, parts); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(want)
		b, _ := os.ReadFile(got)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: the merged shards (%d bytes) are not the whole optimizer's file (%d bytes)", kind, len(b), len(a))
		}
		ps := start()
		o := NewAdamW(DefaultAdamW, ps, Shard(st.Factory(), func(p Param) bool { return index(ps, p) > 0 }))
		if err := o.Load(want); err != nil {
			t.Fatal(err)
		}
		if o.Step != 3 || o.State[0] != nil {
			t.Errorf("%s: loaded shard at step %d, first tensor's moments %v", kind, o.Step, o.State[0])
		}
		for i := 1; i < 3; i++ {
			for j, tn := range o.State[i].Tensors("x") {
				if !bytes.Equal(tn.Data, ref.State[i].Tensors("x")[j].Data) {
					t.Errorf("%s: loaded %s of tensor %d differs", kind, tn.Name, i)
				}
			}
		}
	}
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		u := math.Float32bits(x)
		b = append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	return b
}

func index(ps []Param, p Param) int {
	for i := range ps {
		if ps[i].Var == p.Var {
			return i
		}
	}
	panic("not a parameter")
}
