// Package atomic writes files and directories so that a reader, or a run
// killed midway, never sees a partial one: content goes to a temporary name
// in the same directory, is synced, and is renamed into place.
package atomic

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes b to path via a synced temporary file and rename.
func WriteFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp makes 0600
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return errors.Join(fmt.Errorf("writing %s", path), err)
	}
	return nil
}

// Dir creates a directory at path by filling a temporary sibling with fill
// and renaming it into place; an existing directory at path is replaced.
// A crash leaves either the old directory or the new one (and perhaps a
// temporary sibling, which later calls ignore).
func Dir(path string, fill func(tmp string) error) error {
	tmp, err := os.MkdirTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	os.Chmod(tmp, 0o755) // MkdirTemp makes 0700
	if err := fill(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if d, err := os.Open(tmp); err == nil {
		d.Sync()
		d.Close()
	}
	old := ""
	if _, err := os.Stat(path); err == nil {
		old = path + ".old"
		os.RemoveAll(old)
		if err := os.Rename(path, old); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if old != "" {
		os.RemoveAll(old)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
