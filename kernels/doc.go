// Package kernels holds the hot loops of qat: sgemm (OpenBLAS through cgo, or
// gonum's pure-Go blas32 under the noblas build tag) and the fused elementwise
// and normalisation kernels of the training step.
//
// Each elementwise kernel exists as a portable Go loop (the reference, file
// generic.go) and as C compiled twice, for AVX-512 and for AVX2 (simd.c with
// simd_body.h), chosen once at start from the CPU's features. The table Set
// holds one implementation of every kernel; Variants lists all the sets this
// machine can run so tests compare each against Generic.
//
// Threads: SetThreads sets both the goroutines of For and OpenBLAS's
// threads (whose shared packing beats splitting a product over goroutines).
// Work that calls sgemm from several goroutines at once (attention heads)
// runs under ForBLAS, which holds OpenBLAS to one thread meanwhile.
//
// Number formats are one table, Formats, indexed by FormatID as ggml's type
// traits are (quants.go): name, block size, reference pack/unpack and dot
// product with its partner format, FP parameters, ggml type and llama file
// type. Configs and files spell formats by name (ParseFormat); everything
// else compares ids and reads the table. The packed products' hot loops
// take the id and do not call through the table.
//
// Hadamard transforms (hadamard.go) rotate activations for QuaRot-style
// W4A4: NewHadamard(n) builds an orthonormal n x n transform as a Kronecker
// product of a small Paley (or Sylvester) matrix and a Walsh-Hadamard
// butterfly, so the sizes of real models (11008, 14336, 1376...) are
// covered; Apply runs the butterfly in C (AVX-512 or AVX2) and the small
// factor as a dense product; the tests hold Apply and its float64 twin
// Apply64 to the product with the dense Matrix.
//
// This package imports nothing else of qat.
package kernels
