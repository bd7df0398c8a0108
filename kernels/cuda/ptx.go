package cuda

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"math"
	"strings"

	"qat/kernels"
)

// ErrNoGPUBuild is what Open says in a binary built without the gpu tag.
var ErrNoGPUBuild = errors.New("this binary was built without GPU support: build it with `make gpu` (go build -tags gpu; needs the CUDA headers to build and libcuda.so.1 to run)")

// PTX is the device code (kernels.cu compiled by `make ptx` for
// compute_80; the driver JIT-compiles it for the GPU it finds, sm_80 and
// later). It is checked in so that building the GPU binary needs no nvcc.
//
//go:embed kernels.ptx
var PTX string

// Kernels names every entry of PTX that the device code launches.
var Kernels = []string{
	"qat_copy", "qat_absmax_groups", "qat_minmax_groups", "qat_fq_affine", "qat_fq_lsq",
	"qat_mask_grad", "qat_lsq_grad", "qat_fq_q4_0", "qat_fq_q8_0", "qat_quantize_q8",
	"qat_gemm_packed", "qat_adamw8", "qat_fq_fp", "qat_quantize_tokens", "qat_gemm_channel",
	"qat_rmsnorm_fwd", "qat_rmsnorm_dx", "qat_rmsnorm_dw", "qat_rope", "qat_swiglu_fwd", "qat_swiglu_bwd",
	"qat_cross_entropy", "qat_adamw", "qat_add", "qat_axpy", "qat_embedding_fwd", "qat_embedding_bwd",
	"qat_sgemm", "qat_attn_fwd", "qat_attn_delta", "qat_attn_dq", "qat_attn_dkv", "qat_dyn_scales",
}

// Scale kinds of DynamicScales (qat.Spec's minmax scales).
const (
	ScaleSym  = 0 // symmetric int: amax / ((qmax-qmin)/2)
	ScaleAsym = 1 // asymmetric int: the range widened to 0, a zero point
	ScaleFP   = 2 // FP formats: amax / Max
)

// hasEntry says whether ptx defines the kernel name.
func hasEntry(ptx, name string) bool { return strings.Contains(ptx, ".entry "+name+"(") }

// sourceHash is the sha256 of the device sources that `make ptx` writes on
// the first line of kernels.ptx, so a test notices a PTX older than its
// sources even where there is no nvcc to rebuild it.
func sourceHash(sources ...[]byte) string {
	h := sha256.New()
	for _, s := range sources {
		h.Write(s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Q8Host holds activations quantized to Q8_0 blocks of 32 for the packed
// products, in the layout of the device buffers: per block the scale D,
// the Q4_0 correction C4 = 8*sum(q)*D and the unsigned one C8 =
// 128*sum(q)*D, then 32 codes a block in Q (kernels.PackedQ8 holds the
// same numbers interleaved per column).
type Q8Host struct {
	D, C4, C8 []float32
	Q         []int8
}

// NewQ8Host allocates n blocks.
func NewQ8Host(n int) *Q8Host {
	return &Q8Host{D: make([]float32, n), C4: make([]float32, n), C8: make([]float32, n), Q: make([]int8, 32*n)}
}

// adamScalars are the step-wide constants of kernels.AdamW8, computed as
// it does: lr/bc1, 1 - lr*wd and 1/sqrt(bc2).
func adamScalars(lr, wd, bc1, bc2 float32) (step, decay, isb2 float32) {
	return lr / bc1, 1 - lr*wd, float32(1 / math.Sqrt(float64(bc2)))
}

func q4(f kernels.FormatID) int32 {
	if f == kernels.Q4_0 {
		return 1
	}
	return 0
}
