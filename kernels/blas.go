package kernels

import (
	"fmt"
	"runtime"
)

// Sgemm computes C = alpha*op(A)*op(B) + beta*C for row-major matrices, with
// op(X) = X or X^T: op(A) is m x k, op(B) is k x n, C is m x n. The leading
// dimensions are row strides. It runs on Threads() threads: OpenBLAS's own
// (which share packed panels between threads: measured 20-35% faster on the
// model's shapes than splitting rows over goroutines) or gonum's.
func Sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkGemm(tA, tB, m, n, k, a, lda, b, ldb, c, ldc)
	// A worker that makes back-to-back C calls never passes through the Go
	// scheduler. After 10 ms on one scheduling tick, the runtime's sysmon
	// takes its P while it is inside a C call, hands the P to a fresh
	// thread, and drops its own polling interval back to 20 us; on a
	// 2-core machine each of those wakeups preempts a worker. Yielding
	// before large products (a training step makes one every few ms)
	// keeps the tick moving: tiny at 2 threads went from about 1,900
	// context switches and 140 ms a step to about 250 and 122 ms. Small
	// ones (decoding's vector-matrix products) skip it: there the yield
	// costs more than the product. So do products on OpenBLAS's own
	// threads: the yield wakes a thread on the core its worker is using
	// (tiny's shapes at 2 threads: 0.88-0.98 of OpenBLAS called directly
	// with the yield, 0.97-1.01 without).
	if m*n*k >= yieldWork && !blasThreaded() {
		runtime.Gosched()
	}
	sgemm1(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// yieldWork is the product size (m*n*k) from which Sgemm yields first:
// about 0.1 ms of work.
const yieldWork = 1 << 24

// SgemmSerial is Sgemm for callers that parallelise over many small
// products themselves (attention heads): call it only inside ForBLAS, which
// holds the BLAS library to one thread per call.
func SgemmSerial(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkGemm(tA, tB, m, n, k, a, lda, b, ldb, c, ldc)
	sgemm1(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func checkGemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	ar, ac := m, k
	if tA {
		ar, ac = k, m
	}
	br, bc := k, n
	if tB {
		br, bc = n, k
	}
	bad := func(name string, x []float32, r, cols, ld int) {
		if ld < max(1, cols) || (r > 0 && len(x) < (r-1)*ld+cols) {
			panic(fmt.Sprintf("kernels: Sgemm: %s is %dx%d with stride %d, slice has %d elements", name, r, cols, ld, len(x)))
		}
	}
	bad("A", a, ar, ac, lda)
	bad("B", b, br, bc, ldb)
	bad("C", c, m, n, ldc)
}

// BackendSgemm calls the sgemm backend directly, without Sgemm's checks:
// the machine's limit that benchmarks compare Sgemm against.
func BackendSgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemm1(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
