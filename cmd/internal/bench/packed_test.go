package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLlamaBenchParse: the decode and prompt figures are read from
// llama-bench's table (a stand-in script printing the table llama.cpp
// c392e50 prints), each from its own row, and a missing row is an error.
func TestLlamaBenchParse(t *testing.T) {
	dir := t.TempDir()
	table := `| model                          |       size |     params | backend    | threads |          test |                  t/s |
| ------------------------------ | ---------: | ---------: | ---------- | ------: | ------------: | -------------------: |
| llama 8B Q4_0                  |   1.23 GiB |     1.00 B | CPU        |       2 |         pp128 |         81.25 ± 0.31 |
| llama 8B Q4_0                  |   1.23 GiB |     1.00 B | CPU        |       2 |         pp512 |         77.50 ± 1.02 |
| llama 8B Q4_0                  |   1.23 GiB |     1.00 B | CPU        |       2 |          tg32 |         40.10 ± 0.12 |
`
	script := "#!/bin/sh\ncat <<'EOT'\n" + table + "EOT\n"
	if err := os.WriteFile(filepath.Join(dir, "llama-bench"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pp, err := llamaPrompt(dir, "m.gguf", []int{128, 512}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if pp[128] != 81.25 || pp[512] != 77.5 {
		t.Fatalf("pp: %v", pp)
	}
	if tg, err := llamaBench(dir, "m.gguf", 32, 2); err != nil || tg != 40.1 {
		t.Fatalf("tg: %v, %v", tg, err)
	}
	if _, err := llamaPrompt(dir, "m.gguf", []int{256}, 2); err == nil {
		t.Fatal("no pp256 row, no error")
	}
}
