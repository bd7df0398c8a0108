//go:build !cgo || purego

package kernels

// simdVariants: without cgo only the portable set exists.
func simdVariants() []Set { return nil }
