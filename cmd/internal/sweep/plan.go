// Package sweep runs scaling-law grids: a sweep file expands into a plan
// (a flat, deterministic list of training runs with stable ids, each QAT
// run paired with a full-precision run at the same model size and token
// budget), entries run one at a time (idempotent and resumable; a failure
// leaves a record, not a result, so the entry runs again), a local pool
// runs a whole plan, the results collect into one Parquet table, and
// Kubernetes Indexed Job or Slurm array scripts run the same entries on a
// cluster, checkpointing on SIGTERM and retrying failures.
package sweep

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/goccy/go-yaml"

	"qat/cmd/internal/config"
	"qat/kernels"
	"qat/qat"
)

// Spec is a sweep file.
type Spec struct {
	// Name names the sweep (job names, plots).
	Name string `yaml:"name"`
	// Base is the run config every entry starts from (data, schedule,
	// optimizer); the sweep sets model size, steps, seed and quantizers.
	Base string `yaml:"base"`
	// Results is the directory results go to (relative to the plan file).
	Results string `yaml:"results"`
	// Models are the sizes N.
	Models []Model `yaml:"models"`
	// Tokens are the training budgets D; steps = ceil(D / (batch*seq*grad_accum)).
	Tokens []int64 `yaml:"tokens"`
	// Groups are the weight group sizes G: numbers or "channel".
	Groups []string `yaml:"groups"`
	// Bits are the weight bit widths.
	Bits []int `yaml:"bits"`
	// Methods: minmax (fake-quant with the range of each group, straight
	// through) or lsq (learned steps); weights only (W{bits}A16).
	Methods []string `yaml:"methods"`
	Seeds   []uint64 `yaml:"seeds"`
}

// Model is one model size; fields left out keep the base config's.
type Model struct {
	Name      string `yaml:"name"`
	Dim       int    `yaml:"dim"`
	Layers    int    `yaml:"layers"`
	Heads     int    `yaml:"heads"`
	KVHeads   int    `yaml:"kv_heads"`
	FFNHidden int    `yaml:"ffn_hidden"`
}

// Entry is one run of a plan.
type Entry struct {
	Index int    `json:"index"`
	ID    string `json:"id"`
	// Kind: fp (full precision) or qat.
	Kind  string `json:"kind"`
	Model string `json:"model"`
	// N counts non-embedding parameters; D the tokens trained on.
	N     int64 `json:"n"`
	D     int64 `json:"d"`
	Steps int   `json:"steps"`
	// Group is the weight group size (0: per channel; the row length is
	// then G for the law), GroupName as the sweep file gave it.
	Group     int    `json:"group,omitempty"`
	GroupName string `json:"group_name,omitempty"`
	RowLength int    `json:"row_length"`
	Bits      int    `json:"bits,omitempty"`
	Method    string `json:"method,omitempty"`
	Seed      uint64 `json:"seed"`
	// Pair is the id of the full-precision run a QAT run is measured
	// against.
	Pair string `json:"pair,omitempty"`
	// Config is the whole run configuration.
	Config config.Config `json:"config"`
}

// Plan is an expanded sweep.
type Plan struct {
	Name    string  `json:"name"`
	Results string  `json:"results"`
	Entries []Entry `json:"entries"`
	// dir is the plan file's directory: relative paths start there.
	dir string
}

// LoadSpec reads a sweep file.
func LoadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &config.InputError{Err: err}
	}
	return ParseSpec(path, b)
}

// ParseSpec parses and checks a sweep file's bytes (path names it in
// messages and locates a relative base config).
func ParseSpec(path string, b []byte) (*Spec, error) {
	var s Spec
	if err := config.Unmarshal(path, b, &s); err != nil {
		return nil, err
	}
	bad := func(field, format string, a ...any) error {
		return &config.InputError{Err: fmt.Errorf("%s: %s: %s", path, field, fmt.Sprintf(format, a...))}
	}
	switch {
	case s.Name == "":
		return nil, bad("name", "missing")
	case s.Base == "":
		return nil, bad("base", "missing")
	case len(s.Models) == 0:
		return nil, bad("models", "none")
	case len(s.Tokens) == 0:
		return nil, bad("tokens", "none")
	case len(s.Groups) == 0:
		return nil, bad("groups", "none")
	case len(s.Bits) == 0:
		return nil, bad("bits", "none")
	}
	if len(s.Methods) == 0 {
		s.Methods = []string{"minmax"}
	}
	if len(s.Seeds) == 0 {
		s.Seeds = []uint64{1}
	}
	if s.Results == "" {
		s.Results = "results"
	}
	if err := checkTitle(s.Name); err != nil {
		return nil, bad("name", "%v", err)
	}
	names := map[string]bool{}
	for i, m := range s.Models {
		if err := CheckName(m.Name); err != nil {
			return nil, bad(fmt.Sprintf("models[%d].name", i), "%v", err)
		}
		if names[m.Name] {
			return nil, bad(fmt.Sprintf("models[%d].name", i), "%q: repeated", m.Name)
		}
		names[m.Name] = true
	}
	for i, d := range s.Tokens {
		if d <= 0 {
			return nil, bad(fmt.Sprintf("tokens[%d]", i), "%d, must be positive", d)
		}
	}
	for i, g := range s.Groups {
		if n, err := strconv.Atoi(g); g != "channel" && (err != nil || n < 2 || strconv.Itoa(n) != g) {
			return nil, bad(fmt.Sprintf("groups[%d]", i), "%q: want a group size of at least 2 or channel", g)
		}
	}
	for i, m := range s.Methods {
		if m != "minmax" && m != "lsq" {
			return nil, bad(fmt.Sprintf("methods[%d]", i), "%q: want minmax or lsq", m)
		}
	}
	if !filepath.IsAbs(s.Base) {
		s.Base = filepath.Join(filepath.Dir(path), s.Base)
	}
	return &s, nil
}

// Expand turns the spec into a plan: for every model, token budget and
// seed, one full-precision run, then one QAT run per group size, bit
// width and method. Ids name the point ("s2-d1m-w4g32-minmax-s1"), so
// they stay the same when the grid grows.
func (s *Spec) Expand() (*Plan, error) {
	base, err := config.Load(s.Base)
	if err != nil {
		return nil, err
	}
	p := &Plan{Name: s.Name, Results: s.Results}
	add := func(e Entry, sets ...string) error {
		c := *base
		m := c.Model
		for _, f := range []struct {
			v   int
			dst *int
		}{{modelOf(s, e.Model).Dim, &m.Dim}, {modelOf(s, e.Model).Layers, &m.Layers}, {modelOf(s, e.Model).Heads, &m.Heads},
			{modelOf(s, e.Model).KVHeads, &m.KVHeads}, {modelOf(s, e.Model).FFNHidden, &m.FFNHidden}} {
			if f.v > 0 {
				*f.dst = f.v
			}
		}
		if modelOf(s, e.Model).KVHeads == 0 && modelOf(s, e.Model).Heads > 0 {
			m.KVHeads = m.Heads
		}
		c.Model = m
		t := c.Train
		perStep := int64(t.Batch * t.Seq * t.GradAccum)
		e.Steps = int((e.D + perStep - 1) / perStep)
		e.D = int64(e.Steps) * perStep
		c.Train.Steps, c.Train.Seed = e.Steps, e.Seed
		c.Train.Warmup = min(c.Train.Warmup, e.Steps/10)
		c.Train.EvalEvery = 0
		c.InitFrom = ""
		c.Quant = config.Quant{CalibBatches: base.Quant.CalibBatches}
		if e.Kind == "qat" {
			w := &qat.Spec{Format: kernels.Int, Bits: e.Bits, Symmetric: true, Granularity: "group", GroupSize: e.Group, Scale: e.Method}
			if e.Group == 0 {
				w.Granularity, w.GroupSize = "channel", 0
			}
			c.Quant.Rules = []qat.Rule{{Match: "model.layers.*", Weights: w}}
		}
		if err := CheckName(e.ID); err != nil {
			return &config.InputError{Err: fmt.Errorf("sweep entry %d: id: %v", len(p.Entries), err)}
		}
		c.OutDir = filepath.Join(s.Results, e.ID, "run")
		if err := checkConfig("sweep entry "+e.ID+" config", c); err != nil {
			return err
		}
		_, ne := c.Model.Params()
		e.N, e.RowLength, e.Config = int64(ne), c.Model.Dim, c
		e.Index = len(p.Entries)
		p.Entries = append(p.Entries, e)
		return nil
	}
	for _, m := range s.Models {
		for _, d := range s.Tokens {
			for _, seed := range s.Seeds {
				fp := fmt.Sprintf("%s-d%s-fp-s%d", m.Name, short(d), seed)
				if err := add(Entry{ID: fp, Kind: "fp", Model: m.Name, D: d, Seed: seed}); err != nil {
					return nil, err
				}
				for _, g := range s.Groups {
					group, _ := strconv.Atoi(g) // "channel": 0
					for _, bits := range s.Bits {
						for _, method := range s.Methods {
							gname := "g" + g
							if group == 0 {
								gname = "ch"
							}
							id := fmt.Sprintf("%s-d%s-w%d%s-%s-s%d", m.Name, short(d), bits, gname, method, seed)
							e := Entry{ID: id, Kind: "qat", Model: m.Name, D: d, Group: group, GroupName: g, Bits: bits,
								Method: method, Seed: seed, Pair: fp}
							if err := add(e); err != nil {
								return nil, err
							}
						}
					}
				}
			}
		}
	}
	return p, nil
}

func modelOf(s *Spec, name string) Model {
	for _, m := range s.Models {
		if m.Name == name {
			return m
		}
	}
	return Model{}
}

// short writes a token count as 250k, 1m, 1.5m.
func short(d int64) string {
	switch {
	case d%1_000_000 == 0:
		return fmt.Sprintf("%dm", d/1_000_000)
	case d >= 1_000_000:
		return strconv.FormatFloat(float64(d)/1e6, 'f', -1, 64) + "m"
	case d%1000 == 0:
		return fmt.Sprintf("%dk", d/1000)
	}
	return strconv.FormatInt(d, 10)
}

// Marshal writes the plan as indented JSON.
func (p *Plan) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// nameRE is what an id or a model name may hold: each becomes a directory
// and a word in emitted shell and YAML.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// CheckName reports why s cannot be an entry id or a model name: it
// becomes a directory under the results, so it is one path element of
// letters, digits, '.', '_' and '-', and not "." or "..".
func CheckName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("missing")
	case s == "." || s == "..":
		return fmt.Errorf("%q is not a directory name", s)
	case !nameRE.MatchString(s):
		return fmt.Errorf("%q: want letters, digits, '.', '_' and '-' only (%s)", s, nameRE)
	}
	return nil
}

// checkTitle reports why s cannot name a sweep: it is free text (job
// names are derived from it) but one line.
func checkTitle(s string) error {
	if s == "" {
		return fmt.Errorf("missing")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%q: control characters", s)
		}
	}
	return nil
}

// checkConfig validates an entry's run config as `qat train` would read
// it: written as YAML and parsed (field values, model sizes within
// layers.CurrentLimits, quantizer rules against the model's shapes); name
// heads the message.
func checkConfig(name string, c config.Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return &config.InputError{Err: fmt.Errorf("%s: %w", name, err)}
	}
	if _, err := config.Parse(name, b); err != nil {
		// Parse names the line of the YAML it was given, which is ours,
		// not the user's: "NAME:12: train.lr: ..." reads "NAME: train.lr: ...".
		msg := err.Error()
		if rest, ok := strings.CutPrefix(msg, name+":"); ok {
			if n := len(rest) - len(strings.TrimLeft(rest, "0123456789")); n > 0 && strings.HasPrefix(rest[n:], ": ") {
				return &config.InputError{Err: errors.New(name + rest[n:])}
			}
		}
		return err
	}
	return nil
}

// LoadPlan reads a plan file (ParsePlan).
func LoadPlan(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &config.InputError{Err: err}
	}
	return ParsePlan(path, b)
}

// ParsePlan decodes and checks a plan's bytes (path names it in messages
// and is where relative results directories start): indices count from
// 0, ids and model names are names (CheckName) and ids unique, pairs name
// full-precision entries, and every entry's config is valid, so a bad
// entry fails before anything runs. Errors name the entry and field.
func ParsePlan(path string, b []byte) (*Plan, error) {
	var p Plan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, &config.InputError{Err: fmt.Errorf("%s: %w", path, err)}
	}
	if dec.More() {
		return nil, &config.InputError{Err: fmt.Errorf("%s: data after the plan", path)}
	}
	bad := func(field, format string, a ...any) error {
		return &config.InputError{Err: fmt.Errorf("%s: %s: %s", path, field, fmt.Sprintf(format, a...))}
	}
	if err := checkTitle(p.Name); err != nil {
		return nil, bad("name", "%v", err)
	}
	if p.Results == "" {
		return nil, bad("results", "missing")
	}
	kinds := map[string]string{}
	for i, e := range p.Entries {
		at := fmt.Sprintf("entries[%d]", i)
		if err := CheckName(e.ID); err != nil {
			return nil, bad(at+".id", "%v", err)
		}
		if _, dup := kinds[e.ID]; dup {
			return nil, bad(at+".id", "%q: repeated", e.ID)
		}
		kinds[e.ID] = e.Kind
		if e.Index != i {
			return nil, bad(at+".index", "%d, want %d (indices count from 0)", e.Index, i)
		}
		if err := CheckName(e.Model); err != nil {
			return nil, bad(at+".model", "%v", err)
		}
		if e.Kind != "fp" && e.Kind != "qat" {
			return nil, bad(at+".kind", "%q, want fp or qat", e.Kind)
		}
	}
	for i, e := range p.Entries {
		if e.Pair != "" && kinds[e.Pair] != "fp" {
			return nil, bad(fmt.Sprintf("entries[%d].pair", i), "%q is not a full-precision entry of the plan", e.Pair)
		}
		if err := checkConfig(fmt.Sprintf("%s: entries[%d] (%s).config", path, i, e.ID), e.Config); err != nil {
			return nil, err
		}
	}
	p.dir = filepath.Dir(path)
	return &p, nil
}

// ResultsDir is the results directory, relative paths taken from the plan
// file's directory.
func (p *Plan) ResultsDir() string {
	if filepath.IsAbs(p.Results) {
		return p.Results
	}
	return filepath.Join(p.dir, p.Results)
}
