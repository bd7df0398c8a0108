//go:build cgo && !noblas

package kernels

/*
#cgo LDFLAGS: -lopenblas
// Declared here rather than through cblas.h: Debian keeps that header in a
// per-variant directory (openblas-pthread, openblas-openmp).
enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
char *openblas_get_corename(void);
void openblas_set_num_threads(int n);
*/
import "C"

import "unsafe"

// Backend names the sgemm implementation.
const Backend = "openblas"

func init() {
	// qat splits work itself; OpenBLAS's own threads would spin between
	// calls and fight the Go code for the cores.
	C.openblas_set_num_threads(1)
}

// CoreName reports the kernel family OpenBLAS picked for this CPU (for
// example "Cooperlake" with AVX-512, "Haswell" with AVX2 only).
func CoreName() string { return C.GoString(C.openblas_get_corename()) }

func tr(t bool) C.int {
	if t {
		return C.Trans
	}
	return C.NoTrans
}

func sgemm1(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	C.cblas_sgemm(C.RowMajor, tr(tA), tr(tB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.int(lda), (*C.float)(unsafe.Pointer(&b[0])), C.int(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc))
}

// blasPool is true while OpenBLAS runs its own worker threads.
var blasPool bool

func setBlasThreads(n int) {
	C.openblas_set_num_threads(C.int(n))
	blasPool = n > 1
}
