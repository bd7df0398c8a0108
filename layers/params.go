package layers

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"qat/autograd"
)

// The model's names come from its struct tags, as ollama's populateFields
// reads them: `st` names a field in the checkpoint (Hugging Face: joined
// with "." and slice indices, model.layers.3.self_attn.q_proj.weight),
// `gguf` in a GGUF file (blk.3.attn_q.weight; an empty gguf tag adds no
// component, a missing one means GGUF holds nothing below the field), and
// `input` groups the linears of one struct that read the same input
// (q/k/v, gate/up), naming the group. Every list of names below is one
// walk over the tags; nothing else spells them.

// Param is a parameter with its checkpoint name and its GGUF name ("" for
// what GGUF files do not hold: quantizer state). Quant marks a quantizer's
// learned state, which a full-precision checkpoint lacks.
type Param struct {
	Name  string
	GGUF  string
	Var   *autograd.Var
	Quant bool
}

var (
	varType       = reflect.TypeOf((*autograd.Var)(nil))
	quantType     = reflect.TypeOf((*Quantizer)(nil)).Elem()
	adapterType   = reflect.TypeOf((*Adapter)(nil)).Elem()
	linearType    = reflect.TypeOf((*Linear)(nil))
	attentionType = reflect.TypeOf((*Attention)(nil))
)

// tagField is one st-tagged field of a struct type.
type tagField struct {
	index        int
	st, gguf     string
	inGGUF       bool // the field has a gguf tag
	input        string
	kind         reflect.Kind
	isVar, quant bool
}

// tagFields caches each struct type's tagged fields (immutable once made).
var tagFields sync.Map // reflect.Type -> []tagField

func fieldsOf(t reflect.Type) []tagField {
	if fs, ok := tagFields.Load(t); ok {
		return fs.([]tagField)
	}
	var fs []tagField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("st")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		g, inGGUF := f.Tag.Lookup("gguf")
		fs = append(fs, tagField{index: i, st: name, gguf: g, inGGUF: inGGUF, input: f.Tag.Get("input"), kind: f.Type.Kind(),
			isVar: f.Type == varType, quant: f.Type == quantType || f.Type == adapterType})
	}
	tagFields.Store(t, fs)
	return fs
}

// walker walks a model's tagged fields depth first, keeping the names of
// the path to the current node (names are joined only when asked for).
type walker struct {
	st, gg  []string // path components; empty ones add nothing
	missing int      // components whose field has no gguf tag
	index   int      // the innermost slice index on the path, -1 if none
}

// node is a tagged field (or slice element) the walk reaches; its names
// are valid while the walk is at it.
type node struct {
	w            *walker
	input        string // the field's input tag
	index        int    // the innermost slice index above (the decoder layer), -1 if none
	isVar, quant bool
	v            reflect.Value
}

// name is the node's checkpoint path.
func (n node) name() string { return joinPath(n.w.st) }

// parent is the checkpoint path of the struct holding the node.
func (n node) parent() string { return joinPath(n.w.st[:len(n.w.st)-1]) }

// gguf is the node's GGUF path, "" where GGUF holds nothing.
func (n node) gguf() string {
	if n.w.missing > 0 {
		return ""
	}
	return joinPath(n.w.gg)
}

func joinPath(parts []string) string {
	var b strings.Builder
	n := 0
	for _, p := range parts {
		n += len(p) + 1
	}
	b.Grow(n)
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

func (w *walker) push(st, gg string, inGGUF bool) {
	w.st, w.gg = append(w.st, st), append(w.gg, gg)
	if !inGGUF {
		w.missing++
	}
}

func (w *walker) pop(inGGUF bool) {
	w.st, w.gg = w.st[:len(w.st)-1], w.gg[:len(w.gg)-1]
	if !inGGUF {
		w.missing--
	}
}

// walk visits the tagged fields of the struct v in field order; see is
// shown each node and says whether to go below it.
func (w *walker) walk(v reflect.Value, see func(n node) bool) {
	for _, f := range fieldsOf(v.Type()) {
		w.push(f.st, f.gguf, f.inGGUF)
		w.visit(node{w: w, input: f.input, index: w.index, isVar: f.isVar, quant: f.quant, v: v.Field(f.index)}, f.kind, see)
		w.pop(f.inGGUF)
	}
}

func (w *walker) visit(n node, kind reflect.Kind, see func(n node) bool) {
	if !see(n) {
		return
	}
	switch fv := n.v; {
	case kind == reflect.Slice:
		outer := w.index
		for j := 0; j < fv.Len(); j++ {
			w.push(strconv.Itoa(j), strconv.Itoa(j), true)
			w.index = j
			e := fv.Index(j)
			w.visit(node{w: w, index: j, v: e}, e.Kind(), see)
			w.pop(true)
		}
		w.index = outer
	case kind == reflect.Pointer && !n.isVar && !fv.IsNil() && fv.Elem().Kind() == reflect.Struct:
		w.walk(fv.Elem(), see)
	case kind == reflect.Pointer, kind == reflect.Interface:
	default:
		panic(fmt.Sprintf("layers: field %s of kind %s carries an st tag", n.name(), kind))
	}
}

// walk walks m from its root.
func (m *Model) walk(see func(n node) bool) {
	(&walker{index: -1}).walk(reflect.ValueOf(m).Elem(), see)
}

// Params returns every parameter in a fixed order (the struct fields',
// depth first). Nil optional fields (an untied lm_head) are skipped.
func (m *Model) Params() []Param {
	var out []Param
	m.walk(func(n node) bool {
		switch {
		case n.quant:
			if !n.v.IsNil() {
				st := n.v.Interface().(interface {
					State() map[string]*autograd.Var
				}).State()
				keys := make([]string, 0, len(st))
				for k := range st {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					out = append(out, Param{Name: n.name() + "." + k, Var: st[k], Quant: true})
				}
			}
			return false
		case n.isVar:
			if !n.v.IsNil() {
				out = append(out, Param{Name: n.name(), GGUF: n.gguf(), Var: n.v.Interface().(*autograd.Var)})
			}
			return false
		}
		return true
	})
	return out
}

// ParamMap returns Params keyed by name.
func (m *Model) ParamMap() map[string]*autograd.Var {
	out := map[string]*autograd.Var{}
	for _, p := range m.Params() {
		out[p.Name] = p.Var
	}
	return out
}

// NamedLinear is a linear layer with its checkpoint name
// (model.layers.3.self_attn.q_proj, lm_head) and GGUF name (blk.3.attn_q,
// output).
type NamedLinear struct {
	Name   string
	GGUF   string
	Linear *Linear
}

// NamedAttention is an attention module with its checkpoint name
// (model.layers.3.self_attn), which KV-cache rules match.
type NamedAttention struct {
	Name      string
	Attention *Attention
}

// InputGroup is the linears that read one input, in model order: those
// of one struct whose fields share an input tag (q/k/v, gate/up), named
// by their parent and the tag (model.layers.3.self_attn.qkv), or a linear
// alone under its own name (o_proj, down_proj, lm_head). Layer is the
// index of the decoder layer that holds them, -1 outside the layers.
type InputGroup struct {
	Name    string
	Layer   int
	Linears []*Linear
}

// Linears lists the model's linear layers (q/k/v/o, gate/up/down per
// layer, then an untied head) with their names.
func (m *Model) Linears() []NamedLinear {
	var out []NamedLinear
	m.walk(func(n node) bool {
		if n.v.Type() != linearType {
			return true
		}
		if !n.v.IsNil() {
			out = append(out, NamedLinear{Name: n.name(), GGUF: n.gguf(), Linear: n.v.Interface().(*Linear)})
		}
		return false
	})
	return out
}

// Attentions lists the model's attention modules with their names.
func (m *Model) Attentions() []NamedAttention {
	var out []NamedAttention
	m.walk(func(n node) bool {
		if n.v.Type() != attentionType {
			return !n.isVar && !n.quant
		}
		if !n.v.IsNil() {
			out = append(out, NamedAttention{n.name(), n.v.Interface().(*Attention)})
		}
		return false
	})
	return out
}

// InputGroups lists the model's linears grouped by the input they read
// (their input tags): every linear is in one group, in Linears' order.
func (m *Model) InputGroups() []InputGroup {
	var out []InputGroup
	at := map[string]int{} // a tagged group's index in out, by name
	m.walk(func(n node) bool {
		if n.v.Type() != linearType {
			return true
		}
		if n.v.IsNil() {
			return false
		}
		l := n.v.Interface().(*Linear)
		if n.input == "" {
			out = append(out, InputGroup{Name: n.name(), Layer: n.index, Linears: []*Linear{l}})
			return false
		}
		name := n.parent() + "." + n.input
		if i, ok := at[name]; ok {
			out[i].Linears = append(out[i].Linears, l)
			return false
		}
		at[name] = len(out)
		out = append(out, InputGroup{Name: name, Layer: n.index, Linears: []*Linear{l}})
		return false
	})
	return out
}

// TensorShape is a parameter's checkpoint name and shape.
type TensorShape struct {
	Name  string
	Shape []int
}

// Shapes lists the parameters New(c) makes, in Params' order, without
// allocating them (Describe): loaders check a file against it before New.
// c must be valid.
func (c Config) Shapes() []TensorShape {
	var out []TensorShape
	for _, p := range Describe(c).Params() {
		out = append(out, TensorShape{p.Name, p.Var.Shape()})
	}
	return out
}
