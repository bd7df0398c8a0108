package layers

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"qat/autograd"
	"qat/data/safetensors"
)

// hfArchs are tools/hf_fixture.py's architectures.
var hfArchs = []string{"llama2", "llama3", "mistral", "qwen2"}

// TestHFReference: tools/hf_fixture.py writes random bf16 checkpoints in
// the Hugging Face layout (two shards and an index) of Llama 2, Llama 3.2
// (llama3 rope_scaling, head_dim != hidden/heads, tied), Mistral (head_dim,
// grouped-query) and Qwen2 (q/k/v biases), with logits, loss and every
// weight's gradient from its own float64 PyTorch implementation of the
// transformers models. The model, loaded from those files, gives the
// logits within 1e-3 of their scale, and so do its gradients after one
// backward; the KV-cache decoder gives the same logits token by token.
// The fixtures take a small byte-level tokenizer here (the arithmetic does
// not depend on the vocabulary's size; checkpoint's TestHFReferenceImport
// runs them at the real tokenizers' sizes through the importer).
// Without torch it skips, unless QAT_REQUIRE_TORCH=1 (make test sets it).
func TestHFReference(t *testing.T) {
	if err := exec.Command(torchPython, "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("QAT_REQUIRE_TORCH") == "1" {
			t.Fatalf("QAT_REQUIRE_TORCH=1 but %s cannot import torch: %v", torchPython, err)
		}
		t.Skip("python3-torch not installed")
	}
	dir := t.TempDir()
	out, err := exec.Command(torchPython, append([]string{"../tools/hf_fixture.py", dir}, hfArchs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("hf_fixture.py: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, arch := range hfArchs {
		t.Run(arch, func(t *testing.T) { checkHFFixture(t, filepath.Join(dir, arch)) })
	}
}

func checkHFFixture(t *testing.T, dir string) {
	c := readHFConfig(t, filepath.Join(dir, "config.json"))
	m := New(c)
	loadHFShards(t, m, dir)
	ref, err := safetensors.Read(filepath.Join(dir, "reference.safetensors"))
	must(t, err)
	get := func(name string) []float32 {
		tt, ok := ref.Get(name)
		if !ok {
			t.Fatalf("reference lacks %s", name)
		}
		v, err := tt.F32()
		must(t, err)
		return v
	}
	idsT, ok := ref.Get("ids")
	if !ok {
		t.Fatal("reference lacks ids")
	}
	ids, err := idsT.I32()
	must(t, err)
	B, T := idsT.Shape[0], idsT.Shape[1]
	// Hugging Face's labels are the ids; position t predicts ids[t+1]
	tg := make([]int32, B*T)
	for i := range tg {
		tg[i] = IgnoreIndex
		if (i+1)%T != 0 {
			tg[i] = ids[i+1]
		}
	}

	if c.RopeScaling.Type != "" {
		// the frequencies are transformers' (float32) to one ulp; the
		// real Llama 3.2's too
		checkFreqs(t, "inv_freq", c.RopeFreqs(), get("inv_freq"))
		real := Config{Dim: 2048, Heads: 32, HeadDimension: 64, RopeTheta: 500000,
			RopeScaling: RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMax: 8192}}
		checkFreqs(t, "Llama 3.2", real.RopeFreqs(), get("inv_freq.llama3.2"))
	}

	tp := autograd.NewTape()
	logits := m.Forward(tp, ids, B, T)
	loss := tp.CrossEntropy(logits, tg, IgnoreIndex)
	tp.Backward(loss)
	worstRel := map[bool]float64{} // true: the logits, false: the rest
	cmp := func(name string, got, want []float32) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, reference %d", name, len(got), len(want))
		}
		var scale, worst float64
		for i, w := range want {
			scale = math.Max(scale, math.Abs(float64(w)))
			worst = math.Max(worst, math.Abs(float64(got[i])-float64(w)))
		}
		if !(worst <= 1e-3*scale) {
			t.Errorf("%s: max diff %.3g, over 1e-3 of its scale %.3g", name, worst, scale)
		}
		if worst/scale > worstRel[name == "logits"] {
			worstRel[name == "logits"] = worst / scale
		}
	}
	defer func() {
		t.Logf("max diff / scale: logits %.2g, loss, gradients and decoder %.2g", worstRel[true], worstRel[false])
	}()
	cmp("logits", logits.Data(), get("logits"))
	cmp("loss", loss.Data(), get("loss"))
	names := map[string]bool{}
	for _, p := range m.Params() {
		cmp("grad."+p.Name, p.Var.GradData(), get("grad."+p.Name))
		names["grad."+p.Name] = true
	}
	for _, tt := range ref.Tensors {
		if len(tt.Name) > 5 && tt.Name[:5] == "grad." && !names[tt.Name] {
			t.Errorf("the reference has %s, the model no such parameter", tt.Name)
		}
	}

	// the KV-cache decoder, one token at a time, on the first sequence
	d := NewDecoder(m)
	want := get("logits")
	for i := 0; i < T; i++ {
		got, err := d.Step(ids[i])
		must(t, err)
		cmp("decoder logits", got, want[i*c.Vocab:(i+1)*c.Vocab])
	}
}

// checkFreqs compares float64 frequencies, rounded to float32, with
// transformers' float32 ones to one unit in the last place.
func checkFreqs(t *testing.T, what string, got []float64, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frequencies, transformers %d", what, len(got), len(want))
	}
	for j, w := range want {
		g := float32(got[j])
		if d := int64(math.Float32bits(g)) - int64(math.Float32bits(w)); d < -1 || d > 1 {
			t.Errorf("%s[%d]: %g, transformers %g", what, j, g, w)
		}
	}
}

// readHFConfig reads the keys of a Hugging Face config.json the model
// needs (the import engineer's checkpoint loader does this in earnest;
// this test reads them itself so that it checks the model alone).
func readHFConfig(t *testing.T, path string) Config {
	b, err := os.ReadFile(path)
	must(t, err)
	var c Config
	must(t, json.Unmarshal(b, &c))
	var extra struct {
		ModelType   string `json:"model_type"`
		RopeScaling *struct {
			RopeType string  `json:"rope_type"`
			Factor   float64 `json:"factor"`
			Low      float64 `json:"low_freq_factor"`
			High     float64 `json:"high_freq_factor"`
			Original int     `json:"original_max_position_embeddings"`
		} `json:"rope_scaling"`
	}
	must(t, json.Unmarshal(b, &extra))
	c.QKVBias = extra.ModelType == "qwen2"
	if r := extra.RopeScaling; r != nil {
		c.RopeScaling = RopeScaling{Type: r.RopeType, Factor: r.Factor, LowFreqFactor: r.Low, HighFreqFactor: r.High, OriginalMax: r.Original}
	}
	must(t, c.Validate())
	return c
}

// loadHFShards reads model.safetensors.index.json and its shards' bf16
// tensors into m: every parameter must be there with its shape.
func loadHFShards(t *testing.T, m *Model, dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
	must(t, err)
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	must(t, json.Unmarshal(b, &index))
	shards := map[string]*safetensors.File{}
	params := m.ParamMap()
	if len(index.WeightMap) != len(params) {
		t.Fatalf("the index maps %d tensors, the model has %d parameters", len(index.WeightMap), len(params))
	}
	for name, file := range index.WeightMap {
		v, ok := params[name]
		if !ok {
			t.Fatalf("%s: the model has no such parameter", name)
		}
		f := shards[file]
		if f == nil {
			f, err = safetensors.Read(filepath.Join(dir, file))
			must(t, err)
			shards[file] = f
		}
		tt, ok := f.Get(name)
		if !ok || tt.DType != "BF16" || !sameInts(tt.Shape, v.Shape()) {
			t.Fatalf("%s in %s: %v %s, the model's %v BF16", name, file, tt.Shape, tt.DType, v.Shape())
		}
		for i := range v.Data() {
			v.Data()[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(tt.Data[2*i:])) << 16)
		}
	}
}

func sameInts(a, b []int) bool {
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
