package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataTokenize: qat data tokenize prints, as a Python list, the BOS of
// the tokenizer's tokenizer_config.json and then the ids Hugging Face's
// tokenizers give the text (their JavaScript port on Llama 3's real
// tokenizer files, which put no BOS in front themselves); bad input exits 2
// naming the flag.
func TestDataTokenize(t *testing.T) {
	root := filepath.Join("..", "..")
	dir := filepath.Join(root, ".cache", "tokref", "llama3")
	nm := filepath.Join(root, ".cache", "npm", "node_modules")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil || exec.Command("node", "--version").Run() != nil {
		if os.Getenv("QAT_REQUIRE_NODE") == "1" {
			t.Fatalf("QAT_REQUIRE_NODE=1: no node or no %s (make npm-deps)", dir)
		}
		t.Skip("no node or .cache/tokref (make npm-deps)")
	}
	if _, err := os.Stat(nm); err != nil {
		t.Fatalf("no %s (make npm-deps)", nm)
	}
	files, _ := filepath.Glob(filepath.Join(root, "..", "shared", "data", "sotu", "*.txt"))
	if len(files) == 0 {
		t.Fatal("no ../shared/data/sotu")
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	// the first 20000 bytes, cut at a space (whole characters)
	text := string(b[:min(len(b), 20000)])
	text = text[:strings.LastIndexByte(text, ' ')+1]
	tmp := t.TempDir()
	f := filepath.Join(tmp, "text.txt")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	in, _ := json.Marshal(map[string]any{"texts": []string{text}, "full": 0})
	cmd := exec.Command("node", filepath.Join(root, "tools", "tokref", "tokref.mjs"), "encode", dir)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tokref: %v", err)
	}
	var ref []struct {
		Plain []int32 `json:"plain"`
	}
	if err := json.Unmarshal(out, &ref); err != nil || len(ref) != 1 {
		t.Fatalf("tokref output: %v", err)
	}
	want := append([]int32{128000}, ref[0].Plain...) // <|begin_of_text|>

	got, code := qat(t, "data", "tokenize", "--tokenizer", dir, "--text", f)
	var ids []int32
	if code != 0 || json.Unmarshal([]byte(got), &ids) != nil {
		t.Fatalf("exit %d: %.200s", code, got)
	}
	if len(ids) != len(want) {
		t.Fatalf("%d ids, the reference %d", len(ids), len(want))
	}
	for i := range ids {
		if ids[i] != want[i] {
			t.Fatalf("id %d: %d, the reference %d", i, ids[i], want[i])
		}
	}
	if got, _ = qat(t, "data", "tokenize", "--tokenizer", dir, "--text", f, "--no-bos"); !strings.HasPrefix(got, "["+itoa(want[1])+", ") {
		t.Errorf("--no-bos: %.40s, want the text's first id %d first", got, want[1])
	}

	bad := filepath.Join(tmp, "bad.txt")
	if err := os.WriteFile(bad, []byte("a\xffb"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tokenizer", dir, "--text", bad}, "--text: " + bad + " is not UTF-8"},
		{[]string{"--tokenizer", dir, "--text", filepath.Join(tmp, "none.txt")}, "--text"},
		{[]string{"--tokenizer", filepath.Join(tmp, "nodir"), "--text", f}, "--tokenizer"},
		{[]string{"--text", f}, "--tokenizer and --text are required"},
	} {
		out, code := qat(t, append([]string{"data", "tokenize"}, c.args...)...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, out, c.want)
		}
	}
}

func itoa(x int32) string { b, _ := json.Marshal(x); return string(b) }
