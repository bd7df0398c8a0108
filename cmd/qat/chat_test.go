package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"qat/autograd"
	"qat/cmd/internal/config"
	"qat/data"
	"qat/data/bpe"
	"qat/layers"
)

// chatTokenizerDir writes a model directory as Hugging Face lays it out:
// tokenizer.json (ours, trained on texts) and tokenizer_config.json with a
// chat template whose turns open with <|bos|> and end with <|eos|>.
func chatTokenizerDir(t *testing.T, texts []string) (string, *bpe.Tokenizer) {
	t.Helper()
	tok, err := bpe.Train(texts, 300)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := tok.Save(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{
		"bos_token":     bpe.BOS,
		"eos_token":     map[string]any{"content": bpe.EOS, "special": true},
		"chat_template": "{% for m in messages %}<|bos|>{{ m.role }}\n{{ m.content | trim }}<|eos|>{% endfor %}{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}",
	})
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, tok
}

// TestChatPrepareAndTrain: qat data prepare reads conversations from JSON
// Lines, renders them with the directory's chat template and masks the
// loss to the replies; qat train's first loss is then the float64 mean of
// -log p over exactly the masked-in targets of its first batch, computed
// here from the initial model and the same loader.
func TestChatPrepareAndTrain(t *testing.T) {
	src := t.TempDir()
	var lines, texts []string
	for i := range 40 {
		q := fmt.Sprintf("What is %d plus %d?", i, i+1)
		a := fmt.Sprintf("%d plus %d is %d.", i, i+1, 2*i+1)
		texts = append(texts, "user\n"+q, "assistant\n"+a, "system\nYou add numbers.")
		b, _ := json.Marshal(map[string]any{"messages": []map[string]string{
			{"role": "system", "content": "You add numbers."}, {"role": "user", "content": q}, {"role": "assistant", "content": a}}})
		lines = append(lines, string(b))
	}
	write := func(name string, lines []string) string {
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	train, val := write("chat.jsonl", lines[:32]), write("val.jsonl", lines[32:])
	tokDir, tok := chatTokenizerDir(t, texts)
	out := filepath.Join(t.TempDir(), "data")
	msg, code := qat(t, "data", "prepare", "--input", train, "--input", val, "--tokenizer", tokDir, "--out", out, "--validation", "^val")
	if code != 0 || !strings.Contains(msg, "the assistant's") {
		t.Fatalf("data prepare: exit %d\n%s", code, msg)
	}

	// bad conversations exit 2 naming the file, the line and the field
	bad := write("bad.jsonl", []string{lines[0], `{"messages": [{"role": 7, "content": "x"}]}`})
	msg, code = qat(t, "data", "prepare", "--input", bad, "--tokenizer", tokDir, "--out", filepath.Join(t.TempDir(), "x"))
	if code != 2 || !strings.Contains(msg, "bad.jsonl:2: field messages[0].role") {
		t.Fatalf("bad role: exit %d\n%s", code, msg)
	}

	run := strings.NewReplacer("vocab: 512", fmt.Sprintf("vocab: %d", tok.VocabSize()), "steps: 40", "steps: 1",
		"batch: 4", "batch: 2", "seq: 32", "seq: 16", "ckpt_every: 5", "ckpt_every: 1").Replace(tinyRun)
	runDir := filepath.Join(t.TempDir(), "run")
	cfgPath := writeConfig(t, run, out, runDir)
	msg, code = qat(t, "train", "--config", cfgPath)
	if code != 0 {
		t.Fatalf("train: exit %d\n%s", code, msg)
	}
	got, err := strconv.ParseFloat(losses(t, runDir)[1], 64)
	if err != nil {
		t.Fatalf("step 1 loss: %v", err)
	}

	// the reference: the run's initial model on the run's first batch
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := data.LoadSplit(out, "train", cfg.Model.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	loader, err := data.NewLoader(ds, cfg.Train.Batch, cfg.Train.Seq, cfg.Train.Seed)
	if err != nil {
		t.Fatal(err)
	}
	B, T, V := cfg.Train.Batch, cfg.Train.Seq, cfg.Model.Vocab
	ids, tg := make([]int32, B*T), make([]int32, B*T)
	loader.Next(ids, tg)
	m := layers.New(cfg.Model)
	m.Init(cfg.Train.Seed)
	tp := autograd.NewTape()
	tp.SetNoGrad(true)
	logits := m.Forward(tp, ids, B, T).Data()
	var nats float64
	kept := 0
	for r, y := range tg {
		if y == data.IgnoreTarget {
			continue
		}
		row := logits[r*V : (r+1)*V]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v) - mx)
		}
		nats += mx + math.Log(sum) - float64(row[y])
		kept++
	}
	if kept == 0 || kept == len(tg) {
		t.Fatalf("the first batch keeps %d of %d targets: the test needs a mix", kept, len(tg))
	}
	if want := nats / float64(kept); math.Abs(got-want) > 1e-5*want {
		t.Fatalf("step 1 loss %.9g, float64 mean over the %d kept targets %.9g", got, kept, want)
	}
}
