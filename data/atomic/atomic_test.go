package atomic

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fillWith(name, s string) func(string) error {
	return func(tmp string) error { return os.WriteFile(filepath.Join(tmp, name), []byte(s), 0o644) }
}

// TestDirReplacesOnlyItsOwn: a directory qat did not write survives Dir
// (refused, exit-2 kind) unless forced; one Dir wrote is replaced; an
// empty one is taken.
func TestDirReplacesOnlyItsOwn(t *testing.T) {
	root := t.TempDir()
	user := filepath.Join(root, "user")
	write(t, filepath.Join(user, "notes.txt"), "mine")
	err := Dir(user, false, fillWith("model", "new"))
	var re *RefusedError
	if !errors.As(err, &re) || re.Path != user {
		t.Fatalf("Dir over a user's directory: %v, want *RefusedError naming it", err)
	}
	if read(t, filepath.Join(user, "notes.txt")) != "mine" {
		t.Fatal("the user's file changed")
	}
	if _, err := os.Stat(user + ".old"); err == nil {
		t.Fatal("left a .old")
	}

	out := filepath.Join(root, "out")
	if err := Dir(out, false, fillWith("model", "v1")); err != nil {
		t.Fatal(err)
	}
	if err := Dir(out, false, fillWith("model", "v2")); err != nil {
		t.Fatalf("replacing its own output: %v", err)
	}
	if read(t, filepath.Join(out, "model")) != "v2" {
		t.Fatal("not replaced")
	}
	empty := filepath.Join(root, "empty")
	os.Mkdir(empty, 0o755)
	if err := Dir(empty, false, fillWith("model", "v1")); err != nil {
		t.Fatalf("an empty directory: %v", err)
	}
	if err := Dir(user, true, fillWith("model", "forced")); err != nil {
		t.Fatalf("forced: %v", err)
	}
	if read(t, filepath.Join(user, "model")) != "forced" {
		t.Fatal("force did not replace")
	}
	// a plain file is refused, then forced
	f := filepath.Join(root, "file")
	write(t, f, "x")
	if err := CheckReplace(f, false); !errors.As(err, &re) {
		t.Fatalf("a file: %v", err)
	}
	if err := CheckReplace(f, true); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if e.Name()[0] == '.' {
			t.Errorf("left %s", e.Name())
		}
	}
}

// TestReserveBusy: a second writer of a reserved path is told at once,
// with the holder's pid; after the first finishes the path is free.
func TestReserveBusy(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	r1, err := Reserve(out, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Reserve(out, false)
	var be *BusyError
	if !errors.As(err, &be) || be.PID != os.Getpid() {
		t.Fatalf("second Reserve: %v, want *BusyError with pid %d", err, os.Getpid())
	}
	if err := r1.Fill(fillWith("a", "1")); err != nil {
		t.Fatal(err)
	}
	r2, err := Reserve(out, false)
	if err != nil {
		t.Fatalf("after the first finished: %v", err)
	}
	r2.Abort()
	if read(t, filepath.Join(out, "a")) != "1" {
		t.Fatal("Abort changed the output")
	}
}

// TestStaleTemporaries: a killed writer's temporaries (unlocked) are
// removed by the next writer of the name; a directory moved aside by a
// writer killed mid-replace is put back, not deleted.
func TestStaleTemporaries(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "out")
	write(t, filepath.Join(root, ".out.tmp123", "half"), "x")
	write(t, filepath.Join(root, ".out.tmp-old456", OutputMarker), "")
	write(t, filepath.Join(root, ".out.tmp-old456", "model"), "previous")
	// the kill left no out: the moved-aside copy is the only one
	if err := CheckReplace(out, false); err != nil {
		t.Fatal(err)
	}
	r, err := Reserve(out, false)
	if err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(out, "model")) != "previous" {
		t.Fatal("the moved-aside directory was not put back")
	}
	if _, err := os.Stat(filepath.Join(root, ".out.tmp123")); !os.IsNotExist(err) {
		t.Fatal("stale temporary directory kept")
	}
	r.Abort()

	// WriteFile's temporaries: a fresh one may belong to a writer about to
	// lock it; an old one is removed
	f := filepath.Join(root, "latest")
	young, old := filepath.Join(root, ".latest.tmp1"), filepath.Join(root, ".latest.tmp2")
	write(t, young, "")
	write(t, old, "")
	past := time.Now().Add(-time.Minute)
	os.Chtimes(old, past, past)
	if err := WriteFile(f, []byte("ckpt")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Error("old temporary file kept")
	}
	if _, err := os.Stat(young); err != nil {
		t.Error("young temporary file removed")
	}
	// CleanTemps covers every name in a run directory
	write(t, filepath.Join(root, ".ckpt-0000100.tmp9", "x"), "")
	if CleanTemps(root) == 0 {
		t.Error("CleanTemps found nothing")
	}
	if _, err := os.Stat(filepath.Join(root, ".ckpt-0000100.tmp9")); !os.IsNotExist(err) {
		t.Error("CleanTemps kept a stale checkpoint")
	}
}

// TestLock: one holder at a time, the second told its pid; the lock goes
// with its holder.
func TestLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	l1, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if held, pid := Held(dir); !held || pid != os.Getpid() {
		t.Fatalf("Held = %v, %d", held, pid)
	}
	_, err = Lock(dir)
	var be *BusyError
	if !errors.As(err, &be) || be.PID != os.Getpid() {
		t.Fatalf("second Lock: %v", err)
	}
	// a locked run directory is not replaced, even forced
	if err := CheckReplace(dir, true); !errors.As(err, &be) {
		t.Fatalf("CheckReplace of a live run: %v", err)
	}
	l1.Unlock()
	if !IsRunDir(dir) {
		t.Fatal("the lock file is the run's mark")
	}
	l2, err := Lock(dir)
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	l2.Unlock()
	// and a run directory is not an output qat may replace unforced
	var re *RefusedError
	write(t, filepath.Join(dir, "latest"), "ckpt-0000001\n")
	if err := CheckReplace(dir, false); !errors.As(err, &re) {
		t.Fatalf("CheckReplace of a run: %v", err)
	}
}

// TestCheckNotInput: the input, a path to it through a link, and a parent
// holding it are all refused; a new directory inside it is not.
func TestCheckNotInput(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "runs", "tiny")
	write(t, filepath.Join(in, "latest"), "")
	os.Symlink(filepath.Join(root, "runs"), filepath.Join(root, "link"))
	for _, out := range []string{in, in + "/", filepath.Join(root, "link", "tiny"), filepath.Join(root, "runs"), root} {
		var re *RefusedError
		if err := CheckNotInput(out, in); !errors.As(err, &re) {
			t.Errorf("out %s: %v, want refused", out, err)
		}
	}
	for _, out := range []string{filepath.Join(in, "ptq"), filepath.Join(root, "runs", "tiny-ptq")} {
		if err := CheckNotInput(out, in); err != nil {
			t.Errorf("out %s: %v", out, err)
		}
	}
}
