package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"qat/data/bpe"
)

// sampleManifest is a valid manifest as Prepare writes it.
func sampleManifest() []byte {
	sha := strings.Repeat("ab", 32)
	m := Manifest{Tokenizer: sha, VocabSize: 300, ValidationRule: ValidationYear7.String(), TokensPerShard: 500,
		Splits: map[string]Split{
			"train": {Docs: 3, Tokens: 700, Bytes: 2000, Shards: []Shard{
				{File: "train-00000.parquet", SHA256: sha, Docs: 2, Tokens: 500},
				{File: "train-00001.parquet", SHA256: sha, Docs: 1, Tokens: 200}}},
			"validation": {Docs: 1, Tokens: 100, Bytes: 300, Shards: []Shard{{File: "validation-00000.parquet", SHA256: sha, Docs: 1, Tokens: 100}}},
		}}
	b, _ := json.MarshalIndent(m, "", "  ")
	return b
}

// editManifest decodes the sample into generic maps, edits and encodes it.
func editManifest(t testing.TB, edit func(m map[string]any)) []byte {
	var m map[string]any
	if err := json.Unmarshal(sampleManifest(), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func shard(m map[string]any, split string, i int) map[string]any {
	return m["splits"].(map[string]any)[split].(map[string]any)["shards"].([]any)[i].(map[string]any)
}

type manifestCase struct {
	name string
	b    []byte
	want string
}

func hostileManifests(t testing.TB) []manifestCase {
	good := sampleManifest()
	cs := []manifestCase{
		{"empty", nil, "manifest.json: EOF"},
		{"not JSON", []byte("{"), "manifest.json: unexpected EOF"},
		{"a list", []byte("[]"), "manifest.json: json: cannot unmarshal array"},
		{"trailing data", append(append([]byte(nil), good...), "{}"...), "data after the manifest object"},
		{"too big", make([]byte, MaxManifestBytes+1), "over 67108864 bytes"},
	}
	for i := 1; i <= 10; i++ {
		n := len(good) * i / 11
		cs = append(cs, manifestCase{fmt.Sprintf("truncated to %d", n), good[:n], "manifest.json: "})
	}
	for _, c := range []struct {
		name, want string
		edit       func(m map[string]any)
	}{
		{"unknown field", `unknown field "vocab"`, func(m map[string]any) { m["vocab"] = 3 }},
		{"vocab_size 0", "vocab_size: 0, want 1 to 4194304", func(m map[string]any) { m["vocab_size"] = 0 }},
		{"vocab_size 2^40", "vocab_size: 1099511627776", func(m map[string]any) { m["vocab_size"] = 1 << 40 }},
		{"vocab_size negative", "vocab_size: -5", func(m map[string]any) { m["vocab_size"] = -5 }},
		{"vocab_size a string", "vocab_size", func(m map[string]any) { m["vocab_size"] = "300" }},
		{"vocab_size past int64", "vocab_size", func(m map[string]any) { m["vocab_size"] = 1e30 }},
		{"tokenizer_sha256 short", "tokenizer_sha256: \"ab\"", func(m map[string]any) { m["tokenizer_sha256"] = "ab" }},
		{"tokens_per_shard 0", "tokens_per_shard: 0", func(m map[string]any) { m["tokens_per_shard"] = 0 }},
		{"validation_rule bad", "validation_rule: error parsing regexp", func(m map[string]any) { m["validation_rule"] = "(" }},
		{"validation_rule long", "validation_rule", func(m map[string]any) { m["validation_rule"] = strings.Repeat("a", 5000) }},
		{"no splits", "splits: no train split", func(m map[string]any) { delete(m, "splits") }},
		{"no train split", "splits: no train split", func(m map[string]any) { delete(m["splits"].(map[string]any), "train") }},
		{"split name with a slash", `split name "../x"`, func(m map[string]any) {
			m["splits"].(map[string]any)["../x"] = m["splits"].(map[string]any)["validation"]
		}},
		{"shard file ..", `splits.train.shards[0].file: "..": not a file name`, func(m map[string]any) { shard(m, "train", 0)["file"] = ".." }},
		{"shard file escaping", `splits.train.shards[1].file: "../../etc/passwd": not a plain file name`, func(m map[string]any) { shard(m, "train", 1)["file"] = "../../etc/passwd" }},
		{"shard file absolute", `splits.validation.shards[0].file: "/tmp/x.parquet"`, func(m map[string]any) { shard(m, "validation", 0)["file"] = "/tmp/x.parquet" }},
		{"shard file in a directory", `splits.train.shards[0].file: "sub/x.parquet"`, func(m map[string]any) { shard(m, "train", 0)["file"] = "sub/x.parquet" }},
		{"shard file with a backslash", `splits.train.shards[0].file: "..\\x"`, func(m map[string]any) { shard(m, "train", 0)["file"] = `..\x` }},
		{"shard file with NUL", `splits.train.shards[0].file`, func(m map[string]any) { shard(m, "train", 0)["file"] = "a\x00b" }},
		{"shard file empty", `splits.train.shards[0].file: "": not a file name`, func(m map[string]any) { shard(m, "train", 0)["file"] = "" }},
		{"shard file long", `over 255 bytes`, func(m map[string]any) { shard(m, "train", 0)["file"] = strings.Repeat("x", 300) }},
		{"shard file twice", `splits.validation.shards[0].file: "train-00000.parquet" is also splits.train.shards[0]`, func(m map[string]any) {
			shard(m, "validation", 0)["file"] = "train-00000.parquet"
		}},
		{"shard sha256 bad", `splits.train.shards[1].sha256: "zz"`, func(m map[string]any) { shard(m, "train", 1)["sha256"] = "zz" }},
		{"shard tokens negative", `splits.train.shards[0]: docs 2, tokens -1`, func(m map[string]any) { shard(m, "train", 0)["tokens"] = -1 }},
		{"shard docs 2^50", `splits.train.shards[0]: docs 1125899906842624`, func(m map[string]any) { shard(m, "train", 0)["docs"] = 1 << 50 }},
		{"split tokens disagree", `splits.train: docs 3 and tokens 701, its shards hold 3 and 700`, func(m map[string]any) {
			m["splits"].(map[string]any)["train"].(map[string]any)["tokens"] = 701
		}},
		{"split docs 2^50", `splits.validation.docs: 1125899906842624`, func(m map[string]any) {
			m["splits"].(map[string]any)["validation"].(map[string]any)["docs"] = 1 << 50
		}},
		{"split bytes negative", `splits.train.bytes: -1`, func(m map[string]any) {
			m["splits"].(map[string]any)["train"].(map[string]any)["bytes"] = -1
		}},
		{"shards not a list", `manifest.json: json: cannot unmarshal`, func(m map[string]any) {
			m["splits"].(map[string]any)["train"].(map[string]any)["shards"] = "x"
		}},
		{"targets without loss_mask", `splits.train.targets: 5, with 700 tokens and loss_mask false`, func(m map[string]any) {
			m["splits"].(map[string]any)["train"].(map[string]any)["targets"] = 5
		}},
		{"targets over tokens", `splits.train.targets: 701, with 700 tokens and loss_mask true`, func(m map[string]any) {
			m["loss_mask"] = true
			m["splits"].(map[string]any)["train"].(map[string]any)["targets"] = 701
		}},
		{"targets negative", `splits.train.targets: -1`, func(m map[string]any) {
			m["loss_mask"] = true
			m["splits"].(map[string]any)["train"].(map[string]any)["targets"] = -1
		}},
	} {
		cs = append(cs, manifestCase{c.name, editManifest(t, c.edit), c.want})
	}
	return cs
}

// TestHostileManifests: every broken manifest is an *InputError naming the
// file and the field at fault.
func TestHostileManifests(t *testing.T) {
	if _, err := ParseManifest("d/manifest.json", sampleManifest()); err != nil {
		t.Fatal(err)
	}
	for _, c := range hostileManifests(t) {
		_, err := ParseManifest("d/manifest.json", c.b)
		var ie *InputError
		if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "d/manifest.json") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want an *InputError saying %q", c.name, err, c.want)
		}
	}
}

// TestManifestMatchesShards: a manifest whose counts disagree with a
// shard's is an error naming the shard; so is a tokenizer without BOS in
// Prepare, and a manifest on disk over the size limit.
func TestManifestMatchesShards(t *testing.T) {
	src, _ := writeCorpus(t)
	files, _ := Sources([]string{src})
	texts, _ := ReadTexts(files)
	tok, err := bpe.Train(texts, 300)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := Prepare(files, texts, tok, out, ValidationYear7, 500); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(out, "manifest.json")
	b, _ := os.ReadFile(path)
	var m Manifest
	json.Unmarshal(b, &m)
	s := m.Splits["train"]
	s.Shards[0].Docs++
	s.Docs++
	m.Splits["train"] = s
	b, _ = json.Marshal(m)
	os.WriteFile(path, b, 0o644)
	_, err = LoadSplit(out, "train", 300)
	var ie *InputError
	if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "splits.train.shards[0] ("+s.Shards[0].File+"): the manifest says") {
		t.Errorf("shard counts off by one: %v", err)
	}
	os.WriteFile(path, nil, 0o644)
	os.Truncate(path, MaxManifestBytes+10) // sparse
	if _, err := ReadManifest(out); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("oversized manifest: %v", err)
	}
	delete(tok.Special, bpe.BOS)
	if _, err := Prepare(files, texts, tok, t.TempDir(), ValidationYear7, 500); err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "<|bos|>") {
		t.Errorf("tokenizer without BOS: %v", err)
	}
}

func FuzzLoadManifest(f *testing.F) {
	f.Add(sampleManifest())
	for _, c := range hostileManifests(f) {
		if len(c.b) < 1<<16 {
			f.Add(c.b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest("manifest.json", b)
		if err != nil {
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v is not an *InputError", err)
			}
			return
		}
		if m.VocabSize < 1 || m.VocabSize > bpe.MaxVocab || m.TokensPerShard < 1 {
			t.Fatalf("vocab_size %d, tokens_per_shard %d accepted", m.VocabSize, m.TokensPerShard)
		}
		if _, err := regexp.Compile(m.ValidationRule); err != nil {
			t.Fatal(err)
		}
		for name, s := range m.Splits {
			var docs, tokens int64
			for _, sh := range s.Shards {
				if sh.File != filepath.Base(sh.File) || strings.ContainsAny(sh.File, `/\`) || sh.File == ".." || sh.File == "." {
					t.Fatalf("split %s: shard file %q accepted", name, sh.File)
				}
				docs += int64(sh.Docs)
				tokens += sh.Tokens
			}
			if docs != int64(s.Docs) || tokens != s.Tokens || s.Bytes < 0 {
				t.Fatalf("split %s: totals %+v accepted", name, s)
			}
		}
	})
}
