package safetensors

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// InputError is a file that is not the safetensors file (or sharded
// checkpoint) it claims to be: the user's to fix, so the CLI exits 2
// (BadInput). Its text names the file and the tensor or key.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// BadInput marks the error as the user's to fix (exit status 2).
func (e *InputError) BadInput() {}

func inputErr(format string, a ...any) error { return &InputError{fmt.Errorf(format, a...)} }

// Open maps the file at path read-only and parses it: the tensors alias
// the mapping, so a checkpoint is never read into memory a second time
// beside the model it fills; only the pages a loader touches are read,
// and Release gives them back. The tensors are valid until Close.
// Parse's checks apply (every offset inside the file) before any tensor
// byte is touched.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close() // the mapping outlives the descriptor
	st, err := fd.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, inputErr("%s: not a regular file", path)
	}
	size := st.Size()
	if size < 8 {
		return nil, inputErr("%s: safetensors: %d bytes, too short for the header length", path, size)
	}
	if size != int64(int(size)) {
		return nil, inputErr("%s: %d bytes, more than this process can map", path, size)
	}
	b, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	f, err := Parse(b)
	if err != nil {
		unix.Munmap(b)
		return nil, &InputError{fmt.Errorf("%s: %w", path, err)}
	}
	f.maps = [][]byte{b}
	return f, nil
}

// Close unmaps what Open or OpenSharded mapped (nothing for Read and
// Parse): the tensors' Data must not be used after it.
func (f *File) Close() error {
	var errs []error
	for _, b := range f.maps {
		errs = append(errs, unix.Munmap(b))
	}
	f.maps = nil
	return errors.Join(errs...)
}

// Release tells the kernel that t's bytes, read from a mapped file, are
// not needed again soon: the whole pages under them leave the process's
// resident set (they stay in the page cache, and a later read maps them
// back from the file). A loader that converts tensor by tensor calls it
// after each, so its peak memory is the model plus one tensor, not plus
// the file. For a tensor not in one of f's mappings it does nothing (the
// advice on heap memory would zero it).
func (f *File) Release(t Tensor) {
	if len(t.Data) == 0 {
		return
	}
	const page = 4096
	lo := uintptr(unsafe.Pointer(&t.Data[0]))
	hi := lo + uintptr(len(t.Data))
	for _, b := range f.maps {
		mlo := uintptr(unsafe.Pointer(&b[0]))
		if lo < mlo || hi > mlo+uintptr(len(b)) {
			continue
		}
		// the mapping starts on a page, so offsets into it align as
		// addresses do
		start := (lo - mlo + page - 1) / page * page
		end := (hi - mlo) / page * page
		if end > start {
			unix.Madvise(b[start:end], unix.MADV_DONTNEED) // advice: a refusal only keeps the pages
		}
		return
	}
}

// Source is the file holding the tensor called name: its shard for a
// sharded checkpoint (OpenSharded), "" otherwise (the caller knows the
// one file).
func (f *File) Source(name string) string { return f.src[name] }
