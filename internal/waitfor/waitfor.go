// Package waitfor is how tests wait for a state that the code under test
// reaches without announcing it (a server ready, a timer armed, a probe
// dialled, a row written): they poll a condition, never sleep for a fixed
// time. One package, so that every test polls the same way and a failure
// names what did not happen (True, Within), and why when the check can say
// (NoError). GoroutineIn is the condition for "the code under test is now
// waiting there".
//
// Polls start 1 ms apart and back off to 20 ms: a condition that holds
// soon is seen at once, and an expensive one (an HTTP request, a SQL
// query) is not run in a tight loop. The limit is generous, because the
// suite runs under the race detector on a loaded 2-core machine; it costs
// nothing when the condition holds.
package waitfor

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Timeout is how long True waits.
const Timeout = 10 * time.Second

// The poll interval: first, and its cap.
const (
	firstPoll = time.Millisecond
	maxPoll   = 20 * time.Millisecond
)

// True polls cond until it holds, and fails t, naming what, if it does
// not hold within Timeout.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Timeout, what, cond)
}

// Within is True with another limit.
func Within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(limit, cond) {
		t.Fatalf("not within %v: %s", limit, what)
	}
}

// NoError is Within for a check that says why it does not hold yet: it
// polls f until it returns nil, and the failure ends with f's last error.
func NoError(t testing.TB, limit time.Duration, what string, f func() error) {
	t.Helper()
	var last error
	if !poll(limit, func() bool { last = f(); return last == nil }) {
		t.Fatalf("not within %v: %s: %v", limit, what, last)
	}
}

// poll calls cond until it holds (true) or limit has passed (false).
func poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for wait := firstPoll; !cond(); wait = min(2*wait, maxPoll) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
	return true
}

// GoroutineIn reports whether some goroutine's stack has every one of
// calls in it (function names as runtime.Stack prints them, or its state
// from the header, such as "[chan receive]"): where code
// under test waits, when it is waiting there. Use it as True's condition.
func GoroutineIn(calls ...string) bool {
	buf := make([]byte, 1<<20)
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if !slices.ContainsFunc(calls, func(c string) bool { return !strings.Contains(g, c) }) {
			return true
		}
	}
	return false
}
