package atomic

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// LockFile is the file in a run directory whose flock Lock takes; its
// presence also marks the directory as a qat run.
const LockFile = ".qat-lock"

// A RunLock is an exclusive lock on a run directory, held until Unlock or
// the process's end (the kernel drops a flock with its last descriptor, so
// a killed holder never leaves the directory locked).
type RunLock struct {
	f *os.File
}

// Lock creates dir if needed and takes its exclusive lock without waiting.
// A directory another process holds gives a *BusyError naming its pid.
func Lock(dir string) (*RunLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	ok, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", p, err)
	}
	if !ok {
		f.Close()
		return nil, &BusyError{Path: dir, PID: readPID(p)}
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(fmt.Sprintf("qat run directory lock\npid %d\n", os.Getpid())), 0)
	}
	syncDir(dir)
	return &RunLock{f: f}, nil
}

// Unlock releases the lock (the file stays, marking a qat run).
func (l *RunLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Held reports whether a live process holds dir's run lock, and its pid.
func Held(dir string) (bool, int) {
	p := filepath.Join(dir, LockFile)
	f, err := os.Open(p)
	if err != nil {
		return false, 0
	}
	defer f.Close()
	ok, err := tryLock(f)
	if ok || err != nil {
		return false, 0
	}
	return true, readPID(p)
}

// IsRunDir reports whether dir was made by a qat run (it has a LockFile).
func IsRunDir(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, LockFile))
	return !errors.Is(err, os.ErrNotExist)
}
