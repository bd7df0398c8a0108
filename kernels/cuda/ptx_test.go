package cuda

import (
	"os"
	"strings"
	"testing"
)

func TestPTX(t *testing.T) {
	for _, k := range Kernels {
		if !hasEntry(PTX, k) {
			t.Errorf("kernels.ptx has no entry %s", k)
		}
	}
	cu, err1 := os.ReadFile("kernels.cu")
	h, err2 := os.ReadFile("quant.h")
	th, err3 := os.ReadFile("train.h")
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatal(err1, err2, err3)
	}
	first, _, _ := strings.Cut(PTX, "\n")
	if want := "// source sha256 " + sourceHash(cu, h, th); first != want {
		t.Errorf("kernels.ptx was not built from these sources (first line %q, want %q): run make ptx", first, want)
	}
	if !strings.Contains(PTX, ".target sm_80") {
		t.Error("kernels.ptx does not target sm_80")
	}
}
