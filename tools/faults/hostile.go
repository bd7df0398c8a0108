package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// A format is one kind of file qat reads, where a case's copy of it goes,
// and the command that reads it.
type format struct {
	name string
	kind string // json, yaml, safetensors or binary: how it is mutated
	// setup copies what the command needs into dir and returns the path of
	// the file to mutate and the command's arguments.
	setup func(dir string) (file string, args []string)
}

func copyTree(src, dst string) {
	filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		t := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(t, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(t)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, in)
		return err
	})
}

func evalArgs(model string) []string {
	return []string{"eval", "--model", model, "--data", data, "--seq", "32", "--batches", "1"}
}

// firstShard is the first training shard of a prepared data directory.
func firstShard(dir string) string {
	m, _ := filepath.Glob(filepath.Join(dir, "train-*.parquet"))
	if len(m) == 0 {
		m, _ = filepath.Glob(filepath.Join(dir, "*.parquet"))
	}
	sort.Strings(m)
	if len(m) == 0 {
		fatalf("no Parquet shard in %s", dir)
	}
	return m[0]
}

func formats() []format {
	ref := filepath.Join(work, "ref-fp32", "ckpt-0000040")
	lr := filepath.Join(work, "ref-lr-qat", "ckpt-0000040")
	gg := filepath.Join(work, "hostile-src", "model.gguf")
	packed := filepath.Join(work, "hostile-src", "packed")
	os.MkdirAll(filepath.Dir(gg), 0o755)
	must(qat(time.Minute, "export", "--model", ref, "--quant", "q8_0", "--out", gg), "export gguf")
	ptq := filepath.Join(work, "hostile-src", "w4a8")
	must(qat(time.Minute, "ptq", "--model", ref, "--preset", "w4a8", "--out", ptq, "--data", data, "--seq", "32", "--calib-batches", "1", "--batches", "1"), "ptq")
	must(qat(time.Minute, "export", "--model", ptq, "--format", "safetensors-packed", "--out", packed), "export packed")

	inCkpt := func(src, name string) func(string) (string, []string) {
		return func(dir string) (string, []string) {
			copyTree(src, dir)
			return filepath.Join(dir, name), evalArgs(dir)
		}
	}
	// a finished run, resumed for one more step
	inRun := func(name string) func(string) (string, []string) {
		return func(dir string) (string, []string) {
			for _, f := range []string{"config.yaml", "latest", "metrics.jsonl"} {
				b, _ := os.ReadFile(filepath.Join(work, "ref-fp32", f))
				os.WriteFile(filepath.Join(dir, f), b, 0o644)
			}
			copyTree(ref, filepath.Join(dir, "ckpt-0000040"))
			return filepath.Join(dir, "ckpt-0000040", name), []string{"train", "--resume", dir, "--set", "train.steps=41", "--set", "train.eval_every=0", "--set", "train.no_final_eval=true"}
		}
	}
	// a fresh one-step run on a copy of the data
	inData := func(pick func(string) string) func(string) (string, []string) {
		return func(dir string) (string, []string) {
			d := filepath.Join(dir, "data")
			copyTree(data, d)
			cfg := strings.NewReplacer("DATA", d, "OUT", filepath.Join(dir, "run")).Replace(tinyRun)
			os.WriteFile(filepath.Join(dir, "run.yaml"), []byte(cfg), 0o644)
			return pick(d), []string{"train", "--config", filepath.Join(dir, "run.yaml"), "--set", "train.steps=1", "--set", "train.eval_every=0", "--set", "train.no_final_eval=true"}
		}
	}
	return []format{
		{"model.safetensors", "safetensors", inCkpt(ref, "model.safetensors")},
		{"config.json", "json", inCkpt(ref, "config.json")},
		{"tokenizer.json", "json", inCkpt(ref, "tokenizer.json")},
		{"quant.json", "json", inCkpt(lr, "quant.json")},
		{"lora.json", "json", inCkpt(lr, "lora.json")},
		{"GGUF", "binary", func(dir string) (string, []string) {
			p := filepath.Join(dir, "model.gguf")
			b, _ := os.ReadFile(gg)
			os.WriteFile(p, b, 0o644)
			return p, evalArgs(p)
		}},
		{"packed safetensors", "safetensors", inCkpt(packed, "model.safetensors")},
		{"state.json", "json", inRun("state.json")},
		{"optimizer.safetensors", "safetensors", inRun("optimizer.safetensors")},
		{"Parquet shard", "binary", inData(firstShard)},
		{"manifest.json", "json", inData(func(d string) string { return filepath.Join(d, "manifest.json") })},
		{"run config (YAML)", "yaml", func(dir string) (string, []string) {
			p := filepath.Join(dir, "run.yaml")
			cfg := strings.NewReplacer("DATA", data, "OUT", filepath.Join(dir, "run")).Replace(tinyRun)
			os.WriteFile(p, []byte(cfg), 0o644)
			return p, []string{"train", "--config", p, "--set", "train.steps=1", "--set", "train.eval_every=0", "--set", "train.no_final_eval=true"}
		}},
	}
}

// hostileCases feeds every format `hostile` mutated files. Each command
// must accept the file (exit 0) or refuse it as bad input (exit 2, naming
// something) within 30 s, a refusal within the memory limit, and never
// panic.
func hostileCases(refs []outcome) {
	if *hostile == 0 {
		return
	}
	total, bad := 0, 0
	fs := formats()
	for _, f := range fs {
		var refused, accepted, faults int
		var peak float64
		var slowest time.Duration
		for i := 0; i < *hostile; i++ {
			dir := filepath.Join(work, "hostile", fmt.Sprintf("%s-%02d", strings.Fields(f.name)[0], i))
			os.MkdirAll(dir, 0o755)
			path, args := f.setup(dir)
			orig, err := os.ReadFile(path)
			if err != nil {
				fatalf("%s: %v", f.name, err)
			}
			b, what := mutate(f.kind, orig, i)
			os.WriteFile(path, b, 0o644)
			r := qat(30*time.Second, args...)
			peak = max(peak, r.rssMB)
			slowest = max(slowest, r.wall)
			msg := qatLine(r.out)
			crashed := strings.Contains(r.out, "panic") || strings.Contains(r.out, "goroutine ") || strings.Contains(r.out, "internal error")
			switch {
			case r.killed:
				faults++
				fail("%s #%02d (%s): no answer in 30 s", f.name, i+1, what)
			case crashed:
				faults++
				fail("%s #%02d (%s): crashed, exit %d\n%s", f.name, i+1, what, r.code, r.out)
			// the bound is on refusing: an input still valid (a config of a
			// larger model within the limits) is a job, its memory its own
			case r.rssMB > float64(*maxRSS) && r.code != 0:
				faults++
				fail("%s #%02d (%s): peak RSS %.0f MB", f.name, i+1, what, r.rssMB)
			case r.code == 2:
				refused++
				fmt.Printf("hostile %-21s #%02d %-34s exit 2, %4.0f MB, %5.2fs: %s\n", f.name, i+1, what, r.rssMB, r.wall.Seconds(), clip(msg, 110))
			case r.code == 0:
				accepted++
				fmt.Printf("hostile %-21s #%02d %-34s exit 0 (still valid), %4.0f MB, %5.2fs\n", f.name, i+1, what, r.rssMB, r.wall.Seconds())
			default:
				faults++
				fail("%s #%02d (%s): exit %d, want 2 for bad input\n%s", f.name, i+1, what, r.code, r.out)
			}
			os.RemoveAll(dir)
		}
		total += *hostile
		bad += faults
		summary("hostile %s: %d files, %d refused (exit 2), %d still valid (exit 0), %d faults; peak RSS %.0f MB, slowest %.2f s\n",
			f.name, *hostile, refused, accepted, faults, peak, slowest.Seconds())
	}
	summary("hostile files: %d across %d formats, %d panics, timeouts, wrong exits or RSS over %d MB\n", total, len(fs), bad, *maxRSS)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

// hostile numbers: overflowing products, negative sizes, 2^40 dims.
var hostileNumbers = []string{"1099511627776", "-1", "0", "4294967296", "9223372036854775807", "1e300", "18446744073709551615", "2147483648", "65537"}

var hostileWords = []uint64{1 << 40, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1 << 32, 0}

// mutate returns a hostile variant of b and says what it did. Case i picks
// the mutation, so every kind of damage occurs in a run of any length.
func mutate(kind string, b []byte, i int) ([]byte, string) {
	switch kind {
	case "json":
		if i%4 != 3 {
			if out, what, ok := mutateJSON(b); ok {
				return out, what
			}
		}
	case "yaml":
		if i%4 != 3 {
			return mutateYAML(b)
		}
	case "safetensors":
		if i%4 != 3 && len(b) > 8 {
			n := binary.LittleEndian.Uint64(b)
			if n < uint64(len(b)-8) {
				switch i % 4 {
				case 0, 1:
					if h, what, ok := mutateJSON(b[8 : 8+n]); ok {
						out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
						return append(append(out, h...), b[8+n:]...), "header: " + what
					}
				case 2:
					out := append([]byte(nil), b...)
					w := hostileWords[rng.IntN(len(hostileWords))]
					binary.LittleEndian.PutUint64(out, w)
					return out, fmt.Sprintf("header length %#x", w)
				}
			}
		}
	}
	return mutateBytes(b, i)
}

// mutateBytes truncates, flips bytes or writes a hostile count, in the
// first 4 KiB (where the structure is) or anywhere.
func mutateBytes(b []byte, i int) ([]byte, string) {
	out := append([]byte(nil), b...)
	region := min(len(out), 4096)
	if region < 8 {
		return out[:len(out)/2], "truncated"
	}
	switch i % 3 {
	case 0:
		n := rng.IntN(len(out))
		return out[:n], fmt.Sprintf("truncated at %d of %d", n, len(b))
	case 1:
		k := 1 + rng.IntN(8)
		for j := 0; j < k; j++ {
			out[rng.IntN(region)] ^= byte(1 + rng.IntN(255))
		}
		return out, fmt.Sprintf("%d bytes flipped", k)
	default:
		at := rng.IntN(region - 7)
		w := hostileWords[rng.IntN(len(hostileWords))]
		binary.LittleEndian.PutUint64(out[at:], w)
		return out, fmt.Sprintf("%#x at byte %d", w, at)
	}
}

// mutateJSON changes one leaf of a JSON document: a number to a hostile
// one, a string to a path escape or a huge string, an array to a huge or
// empty one, or drops a key.
func mutateJSON(b []byte) ([]byte, string, bool) {
	var v any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if d.Decode(&v) != nil {
		return nil, "", false
	}
	// every value's path: map keys (strings) and list indices (ints); a
	// long list (a vocabulary, merges) is sampled, not walked whole
	var paths [][]any
	var walk func(x any, path []any)
	walk = func(x any, path []any) {
		paths = append(paths, path)
		switch x := x.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(x[k], append(path[:len(path):len(path)], k))
			}
		case []any:
			for j := 0; j < len(x) && j < 8; j++ {
				walk(x[j], append(path[:len(path):len(path)], j))
			}
		}
	}
	walk(v, nil)
	if len(paths) < 2 {
		return nil, "", false
	}
	target := paths[1+rng.IntN(len(paths)-1)]
	name := ""
	for _, seg := range target {
		if k, ok := seg.(string); ok {
			name += "." + k
		} else {
			name += fmt.Sprintf("[%d]", seg)
		}
	}
	var what string
	v = setAt(v, target, func(old any) (any, bool) {
		switch old.(type) {
		case json.Number:
			n := hostileNumbers[rng.IntN(len(hostileNumbers))]
			what = fmt.Sprintf("%s = %s", name, n)
			return json.Number(n), true
		case string:
			if rng.IntN(2) == 0 {
				what = name + " = \"../../x\""
				return "../../x", true
			}
			what = name + " = a 4 MB string"
			return strings.Repeat("A", 4<<20), true
		case []any:
			if rng.IntN(2) == 0 {
				what = name + " = []"
				return []any{}, true
			}
			what = name + " = [2^40, -1]"
			return []any{json.Number("1099511627776"), json.Number("-1")}, true
		default:
			what = name + " removed"
			return nil, false
		}
	})
	out, err := json.Marshal(v)
	if err != nil {
		return nil, "", false
	}
	return out, clipLeft(what, 34), true
}

// clipLeft keeps the end of s, where a path's leaf is.
func clipLeft(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n+3:]
	}
	return s
}

// setAt replaces (or, when f says false, removes) the value at path.
func setAt(v any, path []any, f func(any) (any, bool)) any {
	if len(path) == 0 {
		nv, _ := f(v)
		return nv
	}
	switch seg := path[0].(type) {
	case string:
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		if len(path) == 1 {
			if nv, keep := f(m[seg]); keep {
				m[seg] = nv
			} else {
				delete(m, seg)
			}
			return m
		}
		m[seg] = setAt(m[seg], path[1:], f)
		return m
	case int:
		a, ok := v.([]any)
		if !ok || seg >= len(a) {
			return v
		}
		if len(path) == 1 {
			if nv, keep := f(a[seg]); keep {
				a[seg] = nv
			} else {
				a = append(a[:seg], a[seg+1:]...)
			}
			return a
		}
		a[seg] = setAt(a[seg], path[1:], f)
		return a
	}
	return v
}

// workload keys size a job rather than describe a file: a large value is
// a valid, large run (the --set flags cap steps), not hostile input.
var workload = map[string]bool{"steps": true, "batch": true, "grad_accum": true, "eval_every": true,
	"eval_batches": true, "ckpt_every": true, "keep_ckpts": true, "log_every": true, "warmup": true}

// mutateYAML sets a numeric field to a hostile value, or drops a line.
func mutateYAML(b []byte) ([]byte, string) {
	lines := strings.Split(string(b), "\n")
	var numeric []int
	for j, l := range lines {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) != "" && !workload[strings.TrimSpace(k)] {
			v = strings.TrimSpace(v)
			if v != "" && (v[0] >= '0' && v[0] <= '9' || v[0] == '-') {
				numeric = append(numeric, j)
			}
		}
	}
	if len(numeric) == 0 || rng.IntN(5) == 0 {
		j := rng.IntN(len(lines))
		what := "dropped " + strings.TrimSpace(lines[j])
		return []byte(strings.Join(append(lines[:j:j], lines[j+1:]...), "\n")), clip(what, 34)
	}
	j := numeric[rng.IntN(len(numeric))]
	k, _, _ := strings.Cut(lines[j], ":")
	n := hostileNumbers[rng.IntN(len(hostileNumbers))]
	lines[j] = k + ": " + n
	return []byte(strings.Join(lines, "\n")), clip(strings.TrimSpace(k)+": "+n, 34)
}
