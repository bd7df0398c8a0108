//go:build cgo && !purego

package cuda

// cpuIsGo is false where package kernels runs its C kernels: their AdamW8
// contracts multiply-adds into FMAs, so there it is compared within a
// tolerance (and bit for bit under -tags purego).
const cpuIsGo = false
