package server

import (
	"testing"
	"time"
)

func TestTrimmer(t *testing.T) {
	type check struct {
		held   int
		bytes  int64
		active int64
		trim   bool
	}
	cases := []struct {
		name   string
		checks []check // one per trimCheck
	}{
		{"large burst drains, then quiet", []check{
			{held: 1500, bytes: 1 << 20}, {held: 200}, {active: 300}, // released, forwarding
			{active: 10}, {}, {trim: true}, {}, {}, // quiet 2 s: once
		}},
		{"small burst is left to the GC", []check{
			{held: 999, bytes: 1 << 20}, {}, {}, {}, {},
		}},
		{"large bytes count as a burst", []check{
			{held: 3, bytes: 20 << 20}, {}, {}, {trim: true},
		}},
		{"traffic resets the quiet time", []check{
			{held: 2000}, {}, {active: 65}, {}, {}, {trim: true},
		}},
		{"each burst trims once", []check{
			{held: 2000}, {}, {}, {trim: true}, {held: 1000}, {}, {}, {trim: true}, {}, {},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var tr trimmer
			now := time.Unix(1_700_000_000, 0)
			for i, c := range tc.checks {
				_, _, got := tr.observe(now, c.held, c.bytes, c.active)
				if got != c.trim {
					t.Fatalf("check %d (%+v): trim = %v, want %v", i, c, got, c.trim)
				}
				now = now.Add(trimCheck)
			}
		})
	}
}
