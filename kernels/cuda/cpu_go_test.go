//go:build purego || !cgo

package cuda

// cpuIsGo: package kernels runs its Go loops (no C kernels), which the
// host build must match bit for bit everywhere, AdamW8 included.
const cpuIsGo = true
