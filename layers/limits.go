package layers

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"sync/atomic"
)

// Limits bound the sizes of a model read from a config, a config.json, a
// GGUF or a checkpoint, so that a mistaken or hostile file is refused
// before anything is allocated for it. Each field is an inclusive upper
// bound on the Config field of the same YAML name; Params bounds the
// float32 values New allocates for the weights (Config.CheckedParams),
// Rope the entries of the RoPE tables (max_seq x head_dim).
//
// The defaults (DefaultLimits) admit every published Llama with room to
// spare (Llama 3.1 405B: vocab 128256, dim 16384, 126 layers, 128 heads,
// 8 kv heads, ffn 53248, context 131072, head dim 128, 4.1e11 parameters
// is over Params: raise it with --limits params=5e11) and refuse sizes no
// CPU run can hold.
type Limits struct {
	Vocab   int64 // vocab: 1<<20 (Llama 3 has 128256, Gemma 256000)
	Dim     int64 // dim: 1<<16
	Layers  int64 // layers: 1024
	Heads   int64 // heads: 1<<12
	KVHeads int64 // kv_heads: 1<<12
	FFN     int64 // ffn_hidden: 1<<18
	Seq     int64 // max_seq (context length): 1<<20
	HeadDim int64 // head_dim (dim/heads): 1<<12
	// Params: parameters of the whole model, embeddings and an untied head
	// included: 1<<38 (1 TiB of float32 weights).
	Params int64
	// Rope: max_seq x head_dim, the RoPE cos/sin tables' float32 entries:
	// 1<<28 (1 GiB; a 131072 context at head dim 128 takes 1<<24).
	Rope int64
}

// DefaultLimits are the limits unless SetLimits replaces them.
var DefaultLimits = Limits{Vocab: 1 << 20, Dim: 1 << 16, Layers: 1024, Heads: 1 << 12, KVHeads: 1 << 12, FFN: 1 << 18,
	Seq: 1 << 20, HeadDim: 1 << 12, Params: 1 << 38, Rope: 1 << 28}

var current atomic.Pointer[Limits]

// CurrentLimits returns the limits Config.Validate enforces.
func CurrentLimits() Limits {
	if l := current.Load(); l != nil {
		return *l
	}
	return DefaultLimits
}

// SetLimits replaces the process's limits (set once by main from
// --limits; tests restore the previous ones, which it returns). It panics
// if a limit is not positive.
func SetLimits(l Limits) (previous Limits) {
	for _, f := range l.fields() {
		if *f.v <= 0 {
			panic(fmt.Sprintf("layers: SetLimits: %s %d, must be positive", f.key, *f.v))
		}
	}
	previous = CurrentLimits()
	current.Store(&l)
	return previous
}

type limitField struct {
	key string // the --limits key, the Config field's YAML name
	v   *int64
}

func (l *Limits) fields() []limitField {
	return []limitField{{"vocab", &l.Vocab}, {"dim", &l.Dim}, {"layers", &l.Layers}, {"heads", &l.Heads},
		{"kv_heads", &l.KVHeads}, {"ffn_hidden", &l.FFN}, {"max_seq", &l.Seq}, {"head_dim", &l.HeadDim},
		{"params", &l.Params}, {"rope", &l.Rope}}
}

// LimitKeys lists the keys ParseLimits takes.
func LimitKeys() string {
	var keys []string
	for _, f := range new(Limits).fields() {
		keys = append(keys, f.key)
	}
	return strings.Join(keys, ", ")
}

// String is the limits in ParseLimits' form.
func (l Limits) String() string {
	var kv []string
	for _, f := range l.fields() {
		kv = append(kv, f.key+"="+strconv.FormatInt(*f.v, 10))
	}
	return strings.Join(kv, ",")
}

// ParseLimits reads "key=value,..." (keys: LimitKeys; values positive
// integers, written 65536, 0x10000, 2^16 or 6.5e4) over DefaultLimits; an
// empty string is DefaultLimits. The CLI's --limits flag:
//
//	l, err := layers.ParseLimits(flag)
//	if err != nil { return input error "--limits: ..." }
//	layers.SetLimits(l)
func ParseLimits(s string) (Limits, error) {
	l := DefaultLimits
	if strings.TrimSpace(s) == "" {
		return l, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return l, fmt.Errorf("%q: want key=value (keys: %s)", kv, LimitKeys())
		}
		var dst *int64
		for _, f := range l.fields() {
			if f.key == strings.TrimSpace(k) {
				dst = f.v
			}
		}
		if dst == nil {
			return l, fmt.Errorf("unknown limit %q (keys: %s)", k, LimitKeys())
		}
		n, err := parseLimit(strings.TrimSpace(v))
		if err != nil {
			return l, fmt.Errorf("%s: %v", k, err)
		}
		*dst = n
	}
	return l, nil
}

// parseLimit reads a positive integer: decimal, 0x hex, 2^N or an
// integral float (1e12).
func parseLimit(v string) (int64, error) {
	bad := fmt.Errorf("%q is not a positive integer", v)
	if b, e, ok := strings.Cut(v, "^"); ok {
		base, err1 := strconv.ParseInt(b, 10, 64)
		exp, err2 := strconv.ParseInt(e, 10, 64)
		if err1 != nil || err2 != nil || base < 2 || exp < 0 || float64(exp)*math.Log2(float64(base)) >= 63 {
			return 0, bad
		}
		n := int64(1)
		for i := int64(0); i < exp; i++ {
			n *= base
		}
		return n, nil
	}
	if n, err := strconv.ParseInt(v, 0, 64); err == nil {
		if n <= 0 {
			return 0, bad
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 1) || f >= math.MaxInt64 || f != math.Trunc(f) {
		return 0, bad
	}
	return int64(f), nil
}

// FieldError is a Config value out of range: Field is its YAML name (dim,
// kv_heads), Value the value read.
type FieldError struct {
	Field string
	Value int64
	Msg   string
}

func (e *FieldError) Error() string { return "model." + e.Field + ": " + e.Msg }

// checkedParams counts parameters as Params does, in uint64 arithmetic
// that reports overflow; every field must be positive.
func (c Config) checkedParams() (uint64, bool) {
	ok := true
	mul := func(a, b uint64) uint64 {
		hi, lo := bits.Mul64(a, b)
		ok = ok && hi == 0
		return lo
	}
	add := func(a, b uint64) uint64 {
		s, carry := bits.Add64(a, b, 0)
		ok = ok && carry == 0
		return s
	}
	u := func(v int) uint64 { return uint64(v) }
	dim := u(c.Dim)
	kv := mul(u(c.HeadDim()), u(c.KVHeads))
	q := mul(u(c.HeadDim()), u(c.Heads))
	block := add(add(add(mul(2, mul(dim, q)), mul(2, mul(dim, kv))), mul(3, mul(dim, u(c.FFNHidden)))), mul(2, dim))
	if c.QKVBias {
		block = add(block, add(q, mul(2, kv)))
	}
	total := add(mul(u(c.Layers), block), dim)
	emb := mul(u(c.Vocab), dim)
	total = add(total, emb)
	if !c.Tied {
		total = add(total, emb)
	}
	return total, ok
}

// checkSizes reports the first field over l.
func (c Config) checkSizes(l Limits) error {
	for _, f := range []struct {
		key   string
		v     int
		limit int64
	}{{"vocab", c.Vocab, l.Vocab}, {"dim", c.Dim, l.Dim}, {"layers", c.Layers, l.Layers}, {"heads", c.Heads, l.Heads},
		{"kv_heads", c.KVHeads, l.KVHeads}, {"ffn_hidden", c.FFNHidden, l.FFN}, {"max_seq", c.MaxSeq, l.Seq},
		{"head_dim", c.HeadDimension, l.HeadDim}} {
		if int64(f.v) > f.limit {
			return &FieldError{f.key, int64(f.v), fmt.Sprintf("%d exceeds the limit %d (--limits %s=N raises it)", f.v, f.limit, f.key)}
		}
	}
	return nil
}

// checkProducts reports the first derived size over l: head dimension,
// RoPE tables, parameters. c's fields are positive and heads divides dim;
// the products are checked for overflow since limits may be raised
// without bound.
func (c Config) checkProducts(l Limits) error {
	if hd := int64(c.HeadDim()); hd > l.HeadDim {
		return &FieldError{"heads", int64(c.Heads), fmt.Sprintf("%d: head dimension %d exceeds the limit %d (--limits head_dim=N raises it)",
			c.Heads, hd, l.HeadDim)}
	}
	if hi, lo := bits.Mul64(uint64(c.MaxSeq), uint64(c.HeadDim())); hi != 0 || lo > uint64(l.Rope) {
		return &FieldError{"max_seq", int64(c.MaxSeq), fmt.Sprintf("%d: the RoPE tables' max_seq x head_dim = %d x %d entries exceed the limit %d (--limits rope=N raises it)",
			c.MaxSeq, c.MaxSeq, c.HeadDim(), l.Rope)}
	}
	n, ok := c.checkedParams()
	if !ok || n > uint64(l.Params) {
		what := strconv.FormatUint(n, 10)
		if !ok {
			what = "more than 2^64"
		}
		return &FieldError{"dim", int64(c.Dim), fmt.Sprintf("%d: %s parameters (vocab %d, dim %d, layers %d, ffn_hidden %d) exceed the limit %d (--limits params=N raises it)",
			c.Dim, what, c.Vocab, c.Dim, c.Layers, c.FFNHidden, l.Params)}
	}
	return nil
}
