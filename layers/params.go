package layers

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"qat/autograd"
)

// Param is a parameter and its checkpoint name. Quant marks a
// quantizer's learned state, which a full-precision checkpoint lacks.
type Param struct {
	Name  string
	Var   *autograd.Var
	Quant bool
}

var (
	varType   = reflect.TypeOf((*autograd.Var)(nil))
	quantType = reflect.TypeOf((*Quantizer)(nil)).Elem()
)

// Params walks m's fields by their `st` tags (joined with "." and slice
// indices, as ollama's populateFields does) and returns every parameter in
// a fixed order. Nil optional fields (an untied lm_head) are skipped.
func (m *Model) Params() []Param {
	var out []Param
	walk(reflect.ValueOf(m).Elem(), "", &out)
	return out
}

func walk(v reflect.Value, prefix string, out *[]Param) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("st")
		if !ok {
			continue
		}
		name := strings.Split(tag, ",")[0]
		if prefix != "" {
			name = prefix + "." + name
		}
		visit(v.Field(i), name, out)
	}
}

func visit(fv reflect.Value, name string, out *[]Param) {
	switch {
	case fv.Type() == quantType:
		if !fv.IsNil() {
			st := fv.Interface().(Quantizer).State()
			keys := make([]string, 0, len(st))
			for k := range st {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				*out = append(*out, Param{Name: name + "." + k, Var: st[k], Quant: true})
			}
		}
	case fv.Type() == varType:
		if !fv.IsNil() {
			*out = append(*out, Param{Name: name, Var: fv.Interface().(*autograd.Var)})
		}
	case fv.Kind() == reflect.Slice:
		for j := 0; j < fv.Len(); j++ {
			visit(fv.Index(j), name+"."+strconv.Itoa(j), out)
		}
	case fv.Kind() == reflect.Pointer:
		if !fv.IsNil() {
			walk(fv.Elem(), name, out)
		}
	default:
		panic(fmt.Sprintf("layers: field %s of kind %s carries an st tag", name, fv.Kind()))
	}
}

// ParamMap returns Params keyed by name.
func (m *Model) ParamMap() map[string]*autograd.Var {
	out := map[string]*autograd.Var{}
	for _, p := range m.Params() {
		out[p.Name] = p.Var
	}
	return out
}

// TensorShape is a parameter's checkpoint name and shape.
type TensorShape struct {
	Name  string
	Shape []int
}

// Shapes lists the parameters New(c) makes, in Params' order, without
// allocating them: loaders check a file against it before New. c must be
// valid.
func (c Config) Shapes() []TensorShape {
	kv := c.HeadDim() * c.KVHeads
	out := []TensorShape{{"model.embed_tokens.weight", []int{c.Vocab, c.Dim}}}
	for i := 0; i < c.Layers; i++ {
		p := "model.layers." + strconv.Itoa(i) + "."
		out = append(out, TensorShape{p + "input_layernorm.weight", []int{c.Dim}},
			TensorShape{p + "self_attn.q_proj.weight", []int{c.Dim, c.Dim}}, TensorShape{p + "self_attn.k_proj.weight", []int{kv, c.Dim}},
			TensorShape{p + "self_attn.v_proj.weight", []int{kv, c.Dim}}, TensorShape{p + "self_attn.o_proj.weight", []int{c.Dim, c.Dim}},
			TensorShape{p + "post_attention_layernorm.weight", []int{c.Dim}},
			TensorShape{p + "mlp.gate_proj.weight", []int{c.FFNHidden, c.Dim}}, TensorShape{p + "mlp.up_proj.weight", []int{c.FFNHidden, c.Dim}},
			TensorShape{p + "mlp.down_proj.weight", []int{c.Dim, c.FFNHidden}})
	}
	out = append(out, TensorShape{"model.norm.weight", []int{c.Dim}})
	if !c.Tied {
		out = append(out, TensorShape{"lm_head.weight", []int{c.Vocab, c.Dim}})
	}
	return out
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
