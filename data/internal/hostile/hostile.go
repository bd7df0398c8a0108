// Package hostile checks that a parser refuses hostile inputs: an error
// naming what is wrong, never a panic, and bounded allocation.
//
// It imports only the standard library, so that every package under data
// may use it in its tests.
package hostile

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// MaxAlloc bounds what one hostile input may make a parser allocate (the
// fault suite's figure is peak RSS under 200 MB per file).
const MaxAlloc = 200 << 20

// Case is one hostile input.
type Case struct {
	Name string
	B    []byte
	Want string // in the error ("" any error)
}

// Cases converts a package's own cases (whose fields its fuzz tests read
// for seeds) to Cases.
func Cases[C interface{ Case() Case }](cs []C) []Case {
	out := make([]Case, len(cs))
	for i, c := range cs {
		out[i] = c.Case()
	}
	return out
}

// Check runs parse on each case under recover and fails t where it
// panics, returns no error or one without the case's Want, or allocates
// over MaxAlloc. It stops at once when there are fewer than atLeast cases.
func Check(t testing.TB, cases []Case, atLeast int, parse func([]byte) error) {
	t.Helper()
	if len(cases) < atLeast {
		t.Fatalf("%d cases, want at least %d", len(cases), atLeast)
	}
	for _, c := range cases {
		var err error
		n := Allocated(func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: panic %v", c.Name, r)
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			err = parse(c.B)
		})
		if err == nil || !strings.Contains(err.Error(), c.Want) {
			t.Errorf("%s: error %v, want one saying %q", c.Name, err, c.Want)
		}
		if n > MaxAlloc {
			t.Errorf("%s: %d MB allocated", c.Name, n>>20)
		}
		if testing.Verbose() {
			t.Logf("%s: %d KB allocated: %v", c.Name, n>>10, err)
		}
	}
}

// Allocated runs f and returns the bytes the process allocated meanwhile.
func Allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
