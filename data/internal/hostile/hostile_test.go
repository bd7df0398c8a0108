package hostile

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// recorder keeps what Check reports instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestCheck: a panic, a nil error, an error without the wanted text and an
// allocation over MaxAlloc are each reported; a refusal naming the fault
// is not.
func TestCheck(t *testing.T) {
	cases := []Case{
		{"refused", []byte("ok"), "bad ok"},
		{"panics", []byte("panic"), ""},
		{"accepted", []byte("nil"), ""},
		{"says other", []byte("other"), "length 7"},
		{"allocates", []byte("alloc"), "bad"},
	}
	var sink []byte
	r := &recorder{TB: t}
	Check(r, cases, 5, func(b []byte) error {
		switch string(b) {
		case "panic":
			panic("index out of range")
		case "nil":
			return nil
		case "alloc":
			sink = make([]byte, MaxAlloc+1)
		}
		return errors.New("bad " + string(b))
	})
	_ = sink
	want := []string{"panics: panic index out of range", `accepted: error <nil>, want one saying ""`, `says other: error bad other, want one saying "length 7"`, "allocates: 200 MB allocated"}
	if got := strings.Join(r.errs, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("reported\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}
