package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/x448/float16"

	"qat/autograd"
	"qat/data/gguf"
	"qat/export"
	"qat/kernels"
	"qat/layers"
)

// PackedOptions select what `qat bench packed` runs.
type PackedOptions struct {
	Threads []int
	// LlamaCpp is a directory with llama.cpp's test-backend-ops and
	// llama-bench (../shared/peers/llamacpp/build.sh builds them): when
	// set, they run in the same session at the same shapes and threads.
	LlamaCpp string
	// GGUFs are models to decode (besides the synthetic ones).
	GGUFs []string
	// Synth is where the synthetic 4-layer Llama-3-8B-shaped models are
	// written (kept between runs).
	Synth  string
	Tokens int
	// Only names the sections to run (PackedSections); empty: all.
	Only []string
}

// PackedSections are the parts of `qat bench packed`, in the order they
// run: the Q4_0/Q8_0 products, the per-channel int products, W4A4 beside
// W4A8, decoding and prompt processing.
var PackedSections = []string{"products", "channel", "w4a4", "decode", "prompt"}

func (o PackedOptions) runs(section string) bool {
	return len(o.Only) == 0 || slices.Contains(o.Only, section)
}

// Packed measures the packed products and decoding.
func Packed(w io.Writer, o PackedOptions) error {
	Machine(w)
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]float32, 1<<24)
	dst := make([]float32, 1<<24)
	for i := range big {
		big[i], dst[i] = 1, 1 // resident before the clock starts
	}
	// the copy's bandwidth on each thread count (bytes read plus
	// written), best of three rounds: decoding's GB/s is set against it
	copyGBs := map[int]float64{}
	var cs []string
	for _, th := range o.Threads {
		kernels.SetThreads(th)
		kernels.SetBLASThreads(1)
		sec := math.Inf(1)
		for range 3 {
			sec = min(sec, timeIt(200*time.Millisecond, func() {
				kernels.ForRows(len(big), 1<<20, 16, func(lo, hi int) { copy(dst[lo:hi], big[lo:hi]) })
			}))
		}
		copyGBs[th] = 8 * float64(len(big)) / sec / 1e9
		cs = append(cs, fmt.Sprintf("%.1f GB/s on %d thread(s)", copyGBs[th], th))
	}
	kernels.SetThreads(1)
	fmt.Fprintf(w, "memory: copy of 64 MB (bytes read + written), best of 3: %s\n", strings.Join(cs, ", "))
	fmt.Fprintf(w, "packed kernel: %s (*: weights repacked in groups of four rows at load, as models load)\n\n", kernels.PackedKernel())
	if o.runs("products") {
		fmt.Fprintf(w, "%-5s %-12s %3s %3s  %10s %9s %9s  %14s %7s\n", "type", "weight", "n", "thr", "ours us", "GFLOP/s", "weight GB/s", "llama.cpp us", "speedup")
	}
	for _, f := range []kernels.FormatID{kernels.Q4_0, kernels.Q8_0} {
		if !o.runs("products") {
			break
		}
		for _, k := range []int{4096, 14336} {
			const rows = 4096
			wb := make([]byte, rows*f.RowBytes(k))
			row := make([]float32, k)
			for r := 0; r < rows; r++ {
				for i := range row {
					row[i] = float32(rng.NormFloat64())
				}
				f.Pack(wb[r*f.RowBytes(k):], row)
			}
			for _, n := range []int{1, 8, 32} {
				x := make([]float32, n*k)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				y := make([]float32, n*rows)
				var a kernels.PackedQ8
				// the repacked kernel where the CPU has it, as models load
				rep := kernels.Repack(f, wb, rows, k)
				name := f.String()
				if rep != nil {
					name += "*"
				}
				for _, th := range o.Threads {
					kernels.SetThreads(th)
					kernels.SetBLASThreads(1)
					sec := timeIt(500*time.Millisecond, func() {
						kernels.QuantizeQ8(&a, x, n, k)
						if rep != nil {
							kernels.GemmR4(rep, &a, y)
						} else {
							kernels.GemmPacked(f, wb, rows, k, &a, y)
						}
					})
					theirs := "-"
					speed := ""
					if o.LlamaCpp != "" {
						if us, err := llamaMulMat(o.LlamaCpp, f.String(), rows, n, k, th); err == nil {
							theirs = fmt.Sprintf("%.0f", us)
							speed = fmt.Sprintf("%.2fx", us/(sec*1e6))
						} else {
							theirs = "n/a" // no such case in its perf set
							fmt.Fprintln(os.Stderr, err)
						}
					}
					fmt.Fprintf(w, "%-5s %-12s %3d %3d  %10.0f %9.1f %9.1f  %14s %7s\n", name, fmt.Sprintf("%dx%d", rows, k), n, th,
						sec*1e6, 2*float64(rows)*float64(k)*float64(n)/sec/1e9, float64(len(wb))/sec/1e9, theirs, speed)
				}
			}
		}
	}
	// per-channel integer weights x per-token int8 activations (w4a8,
	// w8a8): llama.cpp has no such type; the reference is our float32
	// sgemm (OpenBLAS) at the same shape, decode (n=1) to prefill (n=256)
	if err := packedChannel(w, o, rng); err != nil {
		return err
	}
	if o.runs("w4a4") {
		if err := packedW4A4(w, o, rng); err != nil {
			return err
		}
	}
	kernels.SetThreads(1)
	return packedModels(w, o, copyGBs)
}

// packedChannel measures the per-channel int products beside sgemm.
func packedChannel(w io.Writer, o PackedOptions, rng *rand.Rand) error {
	if !o.runs("channel") {
		return nil
	}
	fmt.Fprintf(w, "\nper-channel int weights x per-token int8 activations; the two right columns: float32 sgemm (OpenBLAS) at the same shape\n")
	f32us := map[[3]int]float64{}
	for _, k := range []int{4096, 14336} {
		const rows = 4096
		wf := make([]float32, rows*k)
		for i := range wf {
			wf[i] = float32(rng.NormFloat64())
		}
		for _, n := range []int{1, 8, 32, 256} {
			x := make([]float32, n*k)
			y := make([]float32, n*rows)
			for _, th := range o.Threads {
				kernels.SetThreads(th)
				kernels.SetBLASThreads(th)
				f32us[[3]int{k, n, th}] = 1e6 * timeIt(500*time.Millisecond, func() {
					kernels.Sgemm(false, true, n, rows, k, 1, x, k, wf, k, 0, y, rows)
				})
			}
		}
	}
	for _, bits := range []int{4, 8} {
		for _, k := range []int{4096, 14336} {
			const rows = 4096
			cw, err := randomChannel(rng, bits, rows, k)
			if err != nil {
				return err
			}
			for _, n := range []int{1, 8, 32, 256} {
				x := make([]float32, n*k)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				y := make([]float32, n*rows)
				var a kernels.TokenU8
				for _, th := range o.Threads {
					kernels.SetThreads(th)
					kernels.SetBLASThreads(1)
					sec := timeIt(500*time.Millisecond, func() {
						kernels.QuantizeTokens(&a, x, n, k)
						kernels.GemmChannel(cw, &a, y)
					})
					ref := f32us[[3]int{k, n, th}]
					fmt.Fprintf(w, "%-5s %-12s %3d %3d  %10.0f %9.1f %9.1f  %14.0f %6.2fx\n", fmt.Sprintf("w%da8c", bits), fmt.Sprintf("%dx%d", rows, k), n, th,
						sec*1e6, 2*float64(rows)*float64(k)*float64(n)/sec/1e9, float64(len(cw.W))/sec/1e9, ref, ref/(sec*1e6))
				}
			}
		}
	}
	return nil
}

// packedModels decodes and prefills the synthetic models and o.GGUFs
// beside llama-bench.
func packedModels(w io.Writer, o PackedOptions, copyGBs map[int]float64) error {
	if !o.runs("w4a4") && !o.runs("decode") && !o.runs("prompt") {
		return nil
	}
	var models []string
	if o.Synth != "" {
		for _, q := range []string{"q4_0", "q8_0"} {
			p := filepath.Join(o.Synth, "synth-8b4-"+q+".gguf")
			if _, err := os.Stat(p); err != nil {
				if err := writeSynth(p, q); err != nil {
					return err
				}
			}
			models = append(models, p)
		}
	}
	models = append(models, o.GGUFs...)
	if o.Synth != "" && o.runs("w4a4") {
		if err := decodeW4A4(w, o); err != nil {
			return err
		}
	}
	// a model's float32 matrices take 4 GB here even where the GGUF holds
	// them packed (allocated and left zero; memory the heap reuses is
	// zeroed, so resident): collect the last model's before each load and
	// hand it back (a run that left it to the collector's pace was killed
	// for memory at 23 GB)
	debug.FreeOSMemory()
	var pp bytes.Buffer
	if !o.runs("decode") && !o.runs("prompt") {
		return nil
	}
	if len(models) > 0 && o.runs("decode") {
		fmt.Fprintf(w, "\ndecode (%d tokens after one, tokens/s; MB/token: weights and the KV cache read per token, mean over the tokens; GB/s: that times tokens/s, %% of the copy above)\n", o.Tokens)
		fmt.Fprintf(w, "%-40s %3s %10s %12s %8s %9s %7s %7s\n", "model", "thr", "ours", "llama-bench", "ratio", "MB/token", "GB/s", "% copy")
	}
	for _, p := range models {
		m, f, err := export.LoadGGUFModel(p, false)
		if err != nil {
			return err
		}
		packed := export.Packed(m, f)
		perTok := decodeBytes(m, packed, o.Tokens)
		for _, th := range o.Threads {
			if !o.runs("decode") {
				break
			}
			kernels.SetThreads(th)
			kernels.SetBLASThreads(1) // as qat generate does for packed models
			tps := 0.0
			for pass := 0; pass < 2; pass++ { // best of two passes
				d := layers.NewPackedDecoder(m, packed)
				if _, err := d.Step(0); err != nil {
					return err
				}
				t0 := time.Now()
				for i := 0; i < o.Tokens && d.Pos() < m.MaxSeq; i++ {
					d.Step(int32(1 + i%(m.Vocab-1)))
				}
				tps = max(tps, float64(o.Tokens)/time.Since(t0).Seconds())
			}
			theirs, ratio := "-", ""
			if o.LlamaCpp != "" {
				if t, err := llamaBench(o.LlamaCpp, p, o.Tokens, th); err == nil {
					theirs = fmt.Sprintf("%.1f", t)
					ratio = fmt.Sprintf("%.2fx", tps/t)
				} else {
					theirs = "error"
					fmt.Fprintln(os.Stderr, err)
				}
			}
			gbs := perTok * tps / 1e9
			fmt.Fprintf(w, "%-40s %3d %10.1f %12s %8s %9.1f %7.1f %6.0f%%\n", filepath.Base(p), th, tps, theirs, ratio, perTok/1e6, gbs, 100*gbs/copyGBs[th])
		}
		if o.runs("prompt") {
			if err := packedPrompt(&pp, o, p, m, packed); err != nil {
				return err
			}
		}
		debug.FreeOSMemory()
	}
	if len(models) > 0 && o.runs("prompt") {
		fmt.Fprintf(w, "\nprompt processing (tokens/s, one prompt from an empty cache, logits of its last token)\n")
		fmt.Fprintf(w, "%-40s %3s", "model", "thr")
		for _, n := range promptLens {
			fmt.Fprintf(w, " %9s %12s %7s", fmt.Sprintf("pp%d", n), "llama-bench", "ratio")
		}
		fmt.Fprintln(w)
		w.Write(pp.Bytes())
	}
	kernels.SetThreads(1)
	return nil
}

var mulMatRe = regexp.MustCompile(`MUL_MAT\(type_a=(\w+),type_b=f32,m=(\d+),n=(\d+),k=(\d+)[^)]*\):.*?([\d.]+) us/run`)

// llamaMulMat runs llama.cpp's test-backend-ops for one MUL_MAT case and
// returns its us/run.
func llamaMulMat(dir, typ string, m, n, k, threads int) (float64, error) {
	re := fmt.Sprintf("type_a=%s,type_b=f32,m=%d,n=%d,k=%d,", typ, m, n, k)
	out, err := exec.Command(filepath.Join(dir, "test-backend-ops"), "perf", "-o", "MUL_MAT", "-b", "CPU",
		"-t", strconv.Itoa(threads), "-p", regexp.QuoteMeta(re)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("test-backend-ops: %v: %s", err, out)
	}
	for _, mm := range mulMatRe.FindAllStringSubmatch(string(out), -1) {
		if mm[1] == typ && mm[2] == strconv.Itoa(m) && mm[3] == strconv.Itoa(n) && mm[4] == strconv.Itoa(k) {
			return strconv.ParseFloat(mm[5], 64)
		}
	}
	return 0, fmt.Errorf("test-backend-ops printed no %s case:\n%s", re, out)
}

var benchRe = regexp.MustCompile(`\|\s+(tg|pp)(\d+)\s+\|\s+([\d.]+) ±`)

// llamaBench runs llama-bench's decode test (tg N) on a model.
func llamaBench(dir, model string, tokens, threads int) (float64, error) {
	out, err := exec.Command(filepath.Join(dir, "llama-bench"), "-m", model, "-p", "0", "-n", strconv.Itoa(tokens),
		"-t", strconv.Itoa(threads), "-r", "2").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("llama-bench: %v: %s", err, out)
	}
	for _, mm := range benchRe.FindAllStringSubmatch(string(out), -1) {
		if mm[1] == "tg" {
			return strconv.ParseFloat(mm[3], 64)
		}
	}
	return 0, fmt.Errorf("llama-bench printed no tg result:\n%s", out)
}

// llamaPrompt runs llama-bench's prompt tests (pp N, no decoding) on a
// model and returns tokens/s by prompt length.
func llamaPrompt(dir, model string, lens []int, threads int) (map[int]float64, error) {
	ps := make([]string, len(lens))
	for i, n := range lens {
		ps[i] = strconv.Itoa(n)
	}
	out, err := exec.Command(filepath.Join(dir, "llama-bench"), "-m", model, "-p", strings.Join(ps, ","), "-n", "0",
		"-t", strconv.Itoa(threads), "-r", "2").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("llama-bench: %v: %s", err, out)
	}
	got := map[int]float64{}
	for _, mm := range benchRe.FindAllStringSubmatch(string(out), -1) {
		if mm[1] != "pp" {
			continue
		}
		n, _ := strconv.Atoi(mm[2])
		if got[n], err = strconv.ParseFloat(mm[3], 64); err != nil {
			return nil, err
		}
	}
	for _, n := range lens {
		if _, ok := got[n]; !ok {
			return nil, fmt.Errorf("llama-bench printed no pp%d result:\n%s", n, out)
		}
	}
	return got, nil
}

// decodeBytes is what one decoded token reads from memory: every linear's
// weights (packed bytes, or float32) and the keys and values cached
// before it, averaged over tokens tokens after the first (positions 1 to
// tokens, as the decode loop runs them). Norms and the embedding row are
// left out (a few KB).
func decodeBytes(m *layers.Model, packed map[*autograd.Var]layers.PackedWeight, tokens int) float64 {
	size := func(v *autograd.Var) float64 {
		p, ok := packed[v]
		switch {
		case !ok:
			return 4 * float64(len(v.Data()))
		case p.R4 != nil:
			return float64(len(p.R4.W) + 2*len(p.R4.Scales))
		case p.Channel != nil:
			return float64(len(p.Channel.W) + 4*len(p.Channel.Scale))
		}
		return float64(len(p.Data))
	}
	var w float64
	for _, nl := range m.Linears() {
		w += size(nl.Linear.Weight)
	}
	if m.Head == nil {
		w += size(m.Embed.Weight) // tied: the head reads the embedding
	}
	c := m.Config
	// token at position p attends to p+1 cached rows of keys and values
	var kv float64
	for p := 1; p <= tokens; p++ {
		kv += float64(2*4*c.Layers*c.HeadDim()*c.KVHeads) * float64(p+1)
	}
	return w + kv/float64(tokens)
}

// promptLens are the prompt lengths of the prompt-processing case
// (llama-bench's pp128 and pp512).
var promptLens = []int{128, 512}

// packedPrompt times Prefill of a prompt from an empty cache (only the
// last position's logits, as llama-bench's pp test asks) on model m (the
// file p, its packed weights) on each thread count, beside llama-bench
// -p 128,512 -n 0 (which runs each twice after a warm-up), one row per
// thread count; best of two passes, each a new decoder.
func packedPrompt(w io.Writer, o PackedOptions, p string, m *layers.Model, packed map[*autograd.Var]layers.PackedWeight) error {
	rng := rand.New(rand.NewPCG(5, 5))
	toks := make([]int32, promptLens[len(promptLens)-1])
	for i := range toks {
		toks[i] = int32(rng.IntN(m.Vocab))
	}
	defer kernels.SetThreads(1)
	for _, th := range o.Threads {
		kernels.SetThreads(th)
		kernels.SetBLASThreads(1) // as qat generate and eval --packed do
		var theirs map[int]float64
		if o.LlamaCpp != "" {
			var err error
			if theirs, err = llamaPrompt(o.LlamaCpp, p, promptLens, th); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}
		fmt.Fprintf(w, "%-40s %3d", filepath.Base(p), th)
		for _, n := range promptLens {
			tps := 0.0
			for pass := 0; pass < 2; pass++ { // best of two passes
				d := layers.NewPackedDecoder(m, packed)
				t0 := time.Now()
				if _, err := d.Prefill(toks[:n], false); err != nil {
					return err
				}
				tps = max(tps, float64(n)/time.Since(t0).Seconds())
			}
			ref, ratio := "-", ""
			if t, ok := theirs[n]; ok {
				ref, ratio = fmt.Sprintf("%.1f", t), fmt.Sprintf("%.2fx", tps/t)
			} else if o.LlamaCpp != "" {
				ref = "error"
			}
			fmt.Fprintf(w, " %9.1f %12s %7s", tps, ref, ratio)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// writeSynth writes a 4-layer Llama-3-8B-shaped model (n_embd 4096, n_ff
// 14336, 32 heads, 8 kv heads, 32000 tokens, untied output) with random
// blocks of scale 0.01 in format quant: the shape of llama.cpp's
// synthetic decode benchmark (../shared/peers/llamacpp/tiny_gguf.py synth).
func writeSynth(path, quant string) error {
	c := layers.Config{Vocab: 32000, Dim: 4096, Layers: 4, Heads: 32, KVHeads: 8, FFNHidden: 14336, RopeTheta: 500000,
		NormEps: 1e-5, MaxSeq: 4096}
	f, err := kernels.ParseFormat(quant)
	if err != nil {
		return err
	}
	ggml := uint32(kernels.Formats[f].GGML)
	rng := rand.New(rand.NewPCG(7, 7))
	block := func(rows, cols int) []byte {
		b := make([]byte, rows*f.RowBytes(cols))
		for i := 0; i+8 <= len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
		}
		d := uint16(float16.Fromfloat32(0.01))
		for i := 0; i < len(b); i += kernels.Formats[f].BlockBytes {
			binary.LittleEndian.PutUint16(b[i:], d)
		}
		return b
	}
	norm := func() []byte {
		b := make([]byte, 4*c.Dim)
		kernels.F32.Pack(b, ones(c.Dim))
		return b
	}
	u32 := func(k string, v int) gguf.KV { return gguf.KV{Key: k, Type: gguf.TypeU32, Value: uint32(v)} }
	tokens := make([]string, c.Vocab)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("t%d", i)
	}
	file := &gguf.File{KVs: append([]gguf.KV{
		{Key: "general.architecture", Type: gguf.TypeString, Value: "llama"},
		{Key: "general.name", Type: gguf.TypeString, Value: "synthetic-random-llama"}},
		append(export.LlamaKVs(c),
			gguf.KV{Key: "tokenizer.ggml.model", Type: gguf.TypeString, Value: "gpt2"},
			gguf.KV{Key: "tokenizer.ggml.pre", Type: gguf.TypeString, Value: "default"},
			gguf.KV{Key: "tokenizer.ggml.tokens", Type: gguf.TypeArray, Value: gguf.Array{Type: gguf.TypeString, Values: tokens}},
			gguf.KV{Key: "tokenizer.ggml.merges", Type: gguf.TypeArray, Value: gguf.Array{Type: gguf.TypeString, Values: []string{}}},
			u32("tokenizer.ggml.bos_token_id", c.Vocab-1), u32("tokenizer.ggml.eos_token_id", c.Vocab-1))...)}
	add := func(name string, data []byte, typ uint32, dims ...uint64) {
		file.Tensors = append(file.Tensors, gguf.Tensor{Name: name, Dims: dims, Type: typ, Data: data})
	}
	kv := c.HeadDim() * c.KVHeads
	add("token_embd.weight", block(c.Vocab, c.Dim), ggml, uint64(c.Dim), uint64(c.Vocab))
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		add(p+"attn_norm.weight", norm(), 0, uint64(c.Dim))
		add(p+"attn_q.weight", block(c.Dim, c.Dim), ggml, uint64(c.Dim), uint64(c.Dim))
		add(p+"attn_k.weight", block(kv, c.Dim), ggml, uint64(c.Dim), uint64(kv))
		add(p+"attn_v.weight", block(kv, c.Dim), ggml, uint64(c.Dim), uint64(kv))
		add(p+"attn_output.weight", block(c.Dim, c.Dim), ggml, uint64(c.Dim), uint64(c.Dim))
		add(p+"ffn_norm.weight", norm(), 0, uint64(c.Dim))
		add(p+"ffn_gate.weight", block(c.FFNHidden, c.Dim), ggml, uint64(c.Dim), uint64(c.FFNHidden))
		add(p+"ffn_up.weight", block(c.FFNHidden, c.Dim), ggml, uint64(c.Dim), uint64(c.FFNHidden))
		add(p+"ffn_down.weight", block(c.Dim, c.FFNHidden), ggml, uint64(c.FFNHidden), uint64(c.Dim))
	}
	add("output_norm.weight", norm(), 0, uint64(c.Dim))
	add("output.weight", block(c.Vocab, c.Dim), ggml, uint64(c.Dim), uint64(c.Vocab))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return gguf.Write(path, file)
}

// randomChannel is a rows x k per-channel int weight of uniformly random
// codes on the bits grid, every row's step 0.01.
func randomChannel(rng *rand.Rand, bits, rows, k int) (*kernels.ChannelInt, error) {
	codes := make([]int8, rows*k)
	for i := range codes {
		codes[i] = int8(rng.IntN(1<<bits) - 1<<(bits-1))
	}
	scale := make([]float32, rows)
	for i := range scale {
		scale[i] = 0.01
	}
	return kernels.NewChannelInt(bits, codes, scale, rows, k)
}

func ones(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = 1
	}
	return x
}

// packedW4A4 measures the W4A4 kernel (GemmChannel4: int4 per-channel
// weights, 4-bit per-token activations) beside the W4A8 kernel
// (GemmChannel on the same int4 weights, 8-bit activations) at the
// shapes of the per-channel rows, quantization included, in alternating
// rounds (timePair) so that the ratio is not the machine's drift. GB/s
// counts the weight bytes (both read the same); tokens/s is n per call.
func packedW4A4(w io.Writer, o PackedOptions, rng *rand.Rand) error {
	fmt.Fprintf(w, "\nW4A4 beside W4A8: the same int4 per-channel weights, activations quantized per token to 4 bits (GemmChannel4) or 8 (GemmChannel); alternating rounds, best of 3\n")
	fmt.Fprintf(w, "%-12s %3s %3s  %9s %8s %10s  %9s %8s %10s  %7s\n", "weight", "n", "thr", "w4a8 us", "GB/s", "tokens/s", "w4a4 us", "GB/s", "tokens/s", "a4/a8")
	for _, k := range []int{4096, 14336} {
		const rows = 4096
		cw, err := randomChannel(rng, 4, rows, k)
		if err != nil {
			return err
		}
		for _, n := range []int{1, 8, 32, 256} {
			x := make([]float32, n*k)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			y := make([]float32, n*rows)
			var a8 kernels.TokenU8
			var a4 kernels.TokenU4
			for _, th := range o.Threads {
				kernels.SetThreads(th)
				kernels.SetBLASThreads(1)
				t8, t4 := timePair(3, 300*time.Millisecond, func() {
					kernels.QuantizeTokens(&a8, x, n, k)
					kernels.GemmChannel(cw, &a8, y)
				}, func() {
					kernels.TokenScheme{Bits: 4}.Quantize4(&a4, x, n, k)
					kernels.GemmChannel4(cw, &a4, y)
				})
				gb := float64(len(cw.W)) / 1e9
				fmt.Fprintf(w, "%-12s %3d %3d  %9.0f %8.1f %10.0f  %9.0f %8.1f %10.0f  %6.2fx\n", fmt.Sprintf("%dx%d", rows, k), n, th,
					t8*1e6, gb/t8, float64(n)/t8, t4*1e6, gb/t4, float64(n)/t4, t8/t4)
			}
		}
	}
	kernels.SetThreads(1)
	return nil
}

// decodeW4A4 decodes with a synthetic 4-layer Llama-3-8B-shaped model
// (writeSynth's shape) whose every linear, the head included, holds the
// same random int4 per-channel codes, once with 8-bit and once with 4-bit
// per-token activations (the w4a8 and w4a4 packed decoders), alternating
// passes of o.Tokens tokens. The model is made in memory (its unused
// float32 linears take 4.5 GB while it runs).
func decodeW4A4(w io.Writer, o PackedOptions) error {
	c := layers.Config{Vocab: 32000, Dim: 4096, Layers: 4, Heads: 32, KVHeads: 8, FFNHidden: 14336, RopeTheta: 500000,
		NormEps: 1e-5, MaxSeq: 4096}
	m := layers.New(c)
	rng := rand.New(rand.NewPCG(7, 8))
	emb := m.Embed.Weight.Data()
	for i := range emb {
		emb[i] = float32(rng.NormFloat64())
	}
	p8, p4 := map[*autograd.Var]layers.PackedWeight{}, map[*autograd.Var]layers.PackedWeight{}
	for _, nl := range m.Linears() {
		sh := nl.Linear.Weight.Shape()
		rows, k := sh[0], sh[1]
		cw, err := randomChannel(rng, 4, rows, k)
		if err != nil {
			return fmt.Errorf("%s: %w", nl.Name, err)
		}
		p8[nl.Linear.Weight] = layers.PackedWeight{Channel: cw}
		p4[nl.Linear.Weight] = layers.PackedWeight{Channel: cw, Tokens: kernels.TokenScheme{Bits: 4}}
	}
	fmt.Fprintf(w, "\ndecode, every linear int4 per channel (4-layer Llama-3-8B shape, head included; %d tokens after one, tokens/s, best of 2 alternating passes)\n", o.Tokens)
	fmt.Fprintf(w, "%3s %10s %10s %7s\n", "thr", "w4a8", "w4a4", "a4/a8")
	pass := func(packed map[*autograd.Var]layers.PackedWeight) (float64, error) {
		d := layers.NewPackedDecoder(m, packed)
		if _, err := d.Step(0); err != nil {
			return 0, err
		}
		t0 := time.Now()
		for i := 0; i < o.Tokens && d.Pos() < m.MaxSeq; i++ {
			if _, err := d.Step(int32(1 + i%(m.Vocab-1))); err != nil {
				return 0, err
			}
		}
		return float64(o.Tokens) / time.Since(t0).Seconds(), nil
	}
	for _, th := range o.Threads {
		kernels.SetThreads(th)
		kernels.SetBLASThreads(1) // as qat generate does for packed models
		var best8, best4 float64
		for range 2 {
			t8, err := pass(p8)
			if err != nil {
				return err
			}
			t4, err := pass(p4)
			if err != nil {
				return err
			}
			best8, best4 = max(best8, t8), max(best4, t4)
		}
		fmt.Fprintf(w, "%3d %10.2f %10.2f %6.2fx\n", th, best8, best4, best4/best8)
	}
	kernels.SetThreads(1)
	return nil
}
