package autograd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// releasePages tells the kernel the whole pages under x (already zero)
// are unused: it drops them, and a later read maps zero pages.
func releasePages(x []float32) {
	if len(x) == 0 {
		return
	}
	const page = 4096
	p := unsafe.Pointer(&x[0])
	off := (page - uintptr(p)%page) % page
	if uintptr(4*len(x)) < off+page {
		return
	}
	n := (uintptr(4*len(x)) - off) / page * page
	b := unsafe.Slice((*byte)(unsafe.Add(p, off)), n)
	unix.Madvise(b, unix.MADV_DONTNEED) // advice: a refusal leaves the zeros resident
}
