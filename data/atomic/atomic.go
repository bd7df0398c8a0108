// Package atomic writes files and directories so that a reader, or a run
// killed midway, never sees a partial one, and so that nothing is lost:
// content goes to a temporary name in the same directory, is synced, and
// is renamed into place, and the parent directory is synced after the
// rename so the new name survives a power cut.
//
// Directories are only replaced when qat wrote them (they carry the marker
// file OutputMarker) or when the caller forces it; run directories are
// guarded by an exclusive lock (Lock) for as long as a process writes them.
// Temporaries left by a killed writer are recognised by their free flock
// and removed by the next writer of the same name.
package atomic

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OutputMarker is the file Dir writes into every directory it creates:
// its presence is what lets a later Dir replace the directory.
const OutputMarker = ".qat-output"

// RefusedError is an output that would replace data qat did not write (or
// the command's own input). It is bad input: the command exits 2.
type RefusedError struct {
	Path string
	Why  string
}

func (e *RefusedError) Error() string { return fmt.Sprintf("%s: %s", e.Path, e.Why) }

// BadInput marks the error as the user's to fix (exit status 2).
func (e *RefusedError) BadInput() {}

// BusyError is a directory another live process holds.
type BusyError struct {
	Path string
	PID  int // the holder's, 0 if it could not be read
}

func (e *BusyError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s is in use by another qat process (pid %d)", e.Path, e.PID)
	}
	return fmt.Sprintf("%s is in use by another qat process", e.Path)
}

// BadInput marks the error as the user's to fix (exit status 2).
func (e *BusyError) BadInput() {}

// syncDir makes a rename or creation in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, unix.EINVAL) { // file systems that cannot sync a directory
		err = nil
	}
	return err
}

// SyncDir makes the entries of dir (renames, creations) durable.
func SyncDir(dir string) error { return syncDir(dir) }

// Rename renames old to new and syncs new's directory.
func Rename(old, new string) error {
	if err := os.Rename(old, new); err != nil {
		return err
	}
	return syncDir(filepath.Dir(new))
}

// tryLock takes an exclusive flock on f without waiting; false when another
// open file description holds it.
func tryLock(f *os.File) (bool, error) {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}

// staleAge is how old a temporary file must be before it is taken for a
// dead writer's: WriteFile creates its temporary and locks it a moment
// later.
const staleAge = 10 * time.Second

// cleanStale removes the temporaries `.BASE.tmp*` beside path that no live
// process holds (a writer keeps its temporary locked until it is renamed
// into place), first putting back a replaced directory that a killed Dir
// had moved aside but not yet replaced. It returns the pid recorded by a
// live writer of the same path, 0 if none.
func cleanStale(path string) (busy int) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	prefix := "." + base + ".tmp"
	_, statErr := os.Lstat(path)
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		p := filepath.Join(dir, name)
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		ok, _ := tryLock(f)
		if !ok {
			if pid := readPID(p); pid > 0 {
				busy = pid
			} else {
				busy = -1
			}
			f.Close()
			continue
		}
		// WriteFile creates its temporary and locks it a moment later; Dir
		// does both under the parent's lock, so a free directory is stale
		info, err := f.Stat()
		if err != nil || !info.IsDir() && time.Since(info.ModTime()) < staleAge {
			f.Close()
			continue
		}
		if strings.HasPrefix(name, prefix+"-old") && errors.Is(statErr, os.ErrNotExist) {
			// killed between moving the old directory aside and renaming
			// the new one in: the old one is the only copy
			if os.Rename(p, path) == nil {
				syncDir(dir)
				statErr = nil
				f.Close()
				continue
			}
		}
		os.RemoveAll(p)
		f.Close()
	}
	return busy
}

// readPID reads the pid a marker or lock file at dir (or dir itself, a
// file) records.
func readPID(p string) int {
	for _, f := range []string{filepath.Join(p, OutputMarker), filepath.Join(p, LockFile), p} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "pid "); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					return n
				}
			}
		}
	}
	return 0
}

// WriteFile writes b to path via a synced temporary file and rename, and
// syncs the directory. A temporary left by a killed writer of the same
// path is removed.
func WriteFile(path string, b []byte) error {
	cleanStale(path)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return errors.Join(fmt.Errorf("writing %s", path), err)
	}
	_, err = tryLock(tmp)
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp makes 0600
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return errors.Join(fmt.Errorf("writing %s", path), err)
	}
	return nil
}

// Dir creates a directory at path by filling a temporary sibling with fill
// and renaming it into place. An existing directory at path is replaced
// only if qat wrote it (it holds OutputMarker) or force is set, and never
// while another process writes it. A kill leaves either the old directory
// or the new one; its temporaries are removed by the next Dir of the path.
func Dir(path string, force bool, fill func(tmp string) error) error {
	res, err := Reserve(path, force)
	if err != nil {
		return err
	}
	return res.Fill(fill)
}

// A Reservation is a directory output claimed before the work that makes
// it: its locked temporary tells a second writer of the same path, at
// once, that the path is taken (Reserve gives it a *BusyError).
type Reservation struct {
	path, tmp string
	force     bool
	held      *os.File // the temporary, flocked
}

// Reserve checks that path may be written (CheckReplace) and creates its
// locked temporary. Fill or Abort it.
func Reserve(path string, force bool) (*Reservation, error) {
	path = filepath.Clean(path)
	if err := CheckReplace(path, force); err != nil {
		return nil, err
	}
	parent := filepath.Dir(path)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	// One Reserve of a name at a time: the scan for live writers and the
	// creation of ours happen under the parent's lock.
	pl, err := os.Open(parent)
	if err != nil {
		return nil, err
	}
	defer pl.Close() // releases the parent's lock
	if err := unix.Flock(int(pl.Fd()), unix.LOCK_EX); err != nil {
		return nil, err
	}
	if pid := cleanStale(path); pid != 0 {
		return nil, &BusyError{Path: path, PID: max(pid, 0)}
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, err
	}
	r := &Reservation{path: path, tmp: tmp, force: force}
	if r.held, err = os.Open(tmp); err == nil {
		_, err = tryLock(r.held)
	}
	if err == nil {
		err = os.Chmod(tmp, 0o755) // MkdirTemp makes 0700
	}
	if err == nil {
		marker := fmt.Sprintf("written by qat; qat replaces this directory when asked to write here\npid %d\n", os.Getpid())
		err = os.WriteFile(filepath.Join(tmp, OutputMarker), []byte(marker), 0o644)
	}
	if err != nil {
		r.Abort()
		return nil, err
	}
	return r, nil
}

// Abort removes the reservation's temporary.
func (r *Reservation) Abort() {
	if r.held != nil {
		os.RemoveAll(r.tmp)
		r.held.Close()
		r.held = nil
	}
}

// Fill writes the directory with fill and renames it into place.
func (r *Reservation) Fill(fill func(tmp string) error) error {
	if r.held == nil {
		return fmt.Errorf("%s: reservation already used", r.path)
	}
	path, tmp, parent := r.path, r.tmp, filepath.Dir(r.path)
	defer r.Abort()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	// checked again: the target may have appeared while fill ran
	if err := CheckReplace(path, r.force); err != nil {
		return err
	}
	old := ""
	if _, err := os.Lstat(path); err == nil {
		f, err := os.CreateTemp(parent, "."+filepath.Base(path)+".tmp-old*")
		if err != nil {
			return err
		}
		old = f.Name()
		f.Close()
		os.Remove(old)
		if err := os.Rename(path, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		if old != "" {
			os.Rename(old, path)
		}
		return err
	}
	r.held.Close()
	r.held = nil
	if err := syncDir(parent); err != nil {
		return err
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return nil
}

// CheckReplace returns nil when an output at path may be written: nothing
// is there, or a directory qat wrote (OutputMarker) that no live process
// holds, or anything but a live run with force.
func CheckReplace(path string, force bool) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.IsDir() {
		if held, pid := Held(path); held {
			return &BusyError{Path: path, PID: pid}
		}
		if _, err := os.Stat(filepath.Join(path, OutputMarker)); err == nil {
			return nil
		}
		if ents, err := os.ReadDir(path); err == nil && len(ents) == 0 {
			return nil // nothing to lose
		}
		if force {
			return nil
		}
		return &RefusedError{Path: path, Why: "exists and was not written by qat ptq, merge or export; choose another --out, or pass --force to replace it"}
	}
	if force {
		return nil
	}
	return &RefusedError{Path: path, Why: "exists; choose another --out, or pass --force to replace it"}
}

// CheckNotInput refuses an output path that is, or holds, one of the
// command's inputs: replacing it would delete the input, --force or not.
func CheckNotInput(out string, inputs ...string) error {
	o := resolve(out)
	for _, in := range inputs {
		if in == "" {
			continue
		}
		i := resolve(in)
		if i == o || strings.HasPrefix(i, o+string(filepath.Separator)) {
			return &RefusedError{Path: out, Why: fmt.Sprintf("is the input %s (or holds it); write the output elsewhere", in)}
		}
	}
	return nil
}

// resolve is p made absolute with its symbolic links resolved as far as it
// exists.
func resolve(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	rest := ""
	for cur := a; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return a
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// CleanTemps removes from dir the temporaries (`.NAME.tmp*`) of every
// writer that died, as each Dir or WriteFile does for its own name, and
// returns how many names it cleaned for. A caller that holds dir's run
// lock uses it for names it will not write again (an interrupted
// checkpoint of a step the resumed run has passed).
func CleanTemps(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	seen := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		i := strings.LastIndex(name, ".tmp")
		if !strings.HasPrefix(name, ".") || i < 2 {
			continue
		}
		base := name[1:i]
		if !seen[base] {
			seen[base] = true
			cleanStale(filepath.Join(dir, base))
		}
	}
	return len(seen)
}
