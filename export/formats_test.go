package export

import (
	"testing"

	"qat/data/gguf"
	"qat/kernels"
)

// TestFormatsMatchGGUF: every format of kernels' table that has a ggml
// type is sized by the GGUF parser as the table says, and GGUF exports
// accept exactly the formats with a llama file type.
func TestFormatsMatchGGUF(t *testing.T) {
	for id := range kernels.Formats {
		f := kernels.Formats[id]
		if f.GGML < 0 || f.Name == "" {
			continue
		}
		if n, err := gguf.DataSize(uint32(f.GGML), uint64(f.BlockElems)); err != nil || n != uint64(f.BlockBytes) {
			t.Errorf("%s: the GGUF parser sizes a block of %d at %d bytes (%v), the table at %d", f.Name, f.BlockElems, n, err, f.BlockBytes)
		}
	}
	if got := ggufFormats(); got != "f32, f16, q4_0 or q8_0" {
		t.Errorf("GGUF formats %q", got)
	}
}
