package uuidv7

import (
	"slices"
	"testing"
	"time"
)

func TestFormatAndTime(t *testing.T) {
	now := time.Now()
	s := New()
	if len(s) != 36 || s[14] != '7' || !slices.Contains([]byte("89ab"), s[19]) {
		t.Fatalf("%q is not a UUID version 7 of variant 10", s)
	}
	got, ok := Time(s)
	if !ok || got.Sub(now.Truncate(time.Millisecond)).Abs() > time.Second {
		t.Fatalf("Time(%q) = %v, %v; made at %v", s, got, ok, now)
	}
	for _, bad := range []string{"", "0190a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b", "0190a1b2-c3d4-7e5f-ca6b-7c8d9e0f1a2b", "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2g"} {
		if _, ok := Time(bad); ok {
			t.Errorf("Time(%q) accepted", bad)
		}
	}
}

// UUIDs made in a row increase, including past 4,096 in one millisecond,
// and each is new.
func TestIncreasing(t *testing.T) {
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var g generator
	prev := ""
	seen := map[string]bool{}
	for i := range 10_000 {
		s := g.next(at) // the clock stands still
		if s <= prev || seen[s] {
			t.Fatalf("uuid %d: %q after %q", i, s, prev)
		}
		prev, seen[s] = s, true
	}
	if got, _ := Time(prev); got.Before(at) || got.After(at.Add(10*time.Millisecond)) {
		t.Fatalf("after 10,000 in one millisecond the time is %v", got)
	}
	if s := g.next(at.Add(-500 * time.Millisecond)); s <= prev {
		t.Fatalf("a clock stepped back by half a second: %q after %q", s, prev)
	}
	s := g.next(at.Add(-time.Hour))
	if got, _ := Time(s); !got.Equal(at.Add(-time.Hour)) {
		t.Fatalf("a clock stepped back by an hour: the UUID's time is %v, want the clock's", got)
	}
}
