package waitfor

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	var polls atomic.Int32
	True(t, "the third poll", func() bool { return polls.Add(1) >= 3 })
	if n := polls.Load(); n != 3 {
		t.Errorf("polled %d times, want 3", n)
	}
}

// recorder is a testing.TB whose Fatalf records the message and stops the
// calling goroutine, as the real one does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic(r)
}

func TestWithinFailsNamingWhat(t *testing.T) {
	r := &recorder{TB: t}
	start := time.Now()
	func() {
		defer func() {
			if p := recover(); p != r {
				t.Fatalf("Within did not fail: %v", p)
			}
		}()
		Within(r, 30*time.Millisecond, "the light to turn green", func() bool { return false })
	}()
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Errorf("gave up after %v, before its limit", took)
	}
	if r.msg != "not within 30ms: the light to turn green" {
		t.Errorf("message %q", r.msg)
	}
}

func TestNoErrorNamesTheLastError(t *testing.T) {
	var polls int
	NoError(t, Timeout, "the second poll", func() error {
		if polls++; polls < 2 {
			return errors.New("not yet")
		}
		return nil
	})
	r := &recorder{TB: t}
	func() {
		defer func() {
			if p := recover(); p != r {
				t.Fatalf("NoError did not fail: %v", p)
			}
		}()
		NoError(r, 20*time.Millisecond, "the door to open", func() error { return errors.New("locked") })
	}()
	if r.msg != "not within 20ms: the door to open: locked" {
		t.Errorf("message %q", r.msg)
	}
}

func TestGoroutineIn(t *testing.T) {
	parked := make(chan struct{})
	defer close(parked)
	go func() { parkHere(parked) }()
	True(t, "the goroutine parked in parkHere", func() bool { return GoroutineIn("[chan receive]", "waitfor.parkHere(") })
	if GoroutineIn("waitfor.parkHere(", "no.such.Function(") {
		t.Error("GoroutineIn matched a call no stack has")
	}
}

//go:noinline
func parkHere(c chan struct{}) { <-c }
