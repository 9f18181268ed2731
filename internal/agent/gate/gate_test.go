package gate

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Gate
		canon    string
	}{
		{"truthy", "parked", Gate{Op: Truthy, Key: "parked"}, "parked"},
		{"falsy", "!moving", Gate{Op: Falsy, Key: "moving"}, "!moving"},
		{"falsy with a space", "! moving", Gate{Op: Falsy, Key: "moving"}, "!moving"},
		{"key characters", "can.bus_state-1", Gate{Op: Truthy, Key: "can.bus_state-1"}, "can.bus_state-1"},
		{"equal", "ignition=off", Gate{Op: Eq, Key: "ignition", Value: "off"}, "ignition=off"},
		{"double equal", "ignition==off", Gate{Op: Eq, Key: "ignition", Value: "off"}, "ignition=off"},
		{"not equal", "gear!=D", Gate{Op: Ne, Key: "gear", Value: "D"}, "gear!=D"},
		{"value with spaces inside", "mode = eco plus ", Gate{Op: Eq, Key: "mode", Value: "eco plus"}, "mode=eco plus"},
		{"at least", "battery>=30", Gate{Op: Ge, Key: "battery", N: 30}, "battery>=30"},
		{"spaces around the operator", "  battery >= 30  ", Gate{Op: Ge, Key: "battery", N: 30}, "battery>=30"},
		{"at most", "speed<=0.5", Gate{Op: Le, Key: "speed", N: 0.5}, "speed<=0.5"},
		{"above", "temp>-10", Gate{Op: Gt, Key: "temp", N: -10}, "temp>-10"},
		{"below", "load<1e3", Gate{Op: Lt, Key: "load", N: 1000}, "load<1000"},
		{"window", "window 02:00-05:00", Gate{Op: Window, From: 120, To: 300}, "window 02:00-05:00"},
		{"window across midnight", "window 22:00-04:30", Gate{Op: Window, From: 1320, To: 270}, "window 22:00-04:30"},
		{"window, one-digit hour and spaces", "window\t2:05 - 3:00", Gate{Op: Window, From: 125, To: 180}, "window 02:05-03:00"},
		{"a key named window", "window", Gate{Op: Truthy, Key: "window"}, "window"},
		{"a key named window compared", "window = open", Gate{Op: Eq, Key: "window", Value: "open"}, "window=open"},
		{"a key named window, numeric", "window >= 2", Gate{Op: Ge, Key: "window", N: 2}, "window>=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, g); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
			}
			if s := g.String(); s != tc.canon {
				t.Errorf("String() = %q, want %q", s, tc.canon)
			}
			again, err := Parse(g.String())
			if err != nil || again != g {
				t.Errorf("Parse(String()) = %+v, %v; want %+v", again, err, g)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "  ", `gate "  ": empty`},
		{"no key", "=off", `gate "=off": no key`},
		{"bad key character", "park ed", `"ed" after key park: want an operator`},
		{"question mark", "parked?", `"?" after key parked`},
		{"negated comparison", "!gear=P", "! takes a bare key"},
		{"double negation", "!!parked", "no key"},
		{"nothing after the operator", "battery>=", "nothing after >="},
		{"not a number", "battery>=full", `>= needs a number, not "full"`},
		{"infinity", "battery>=Inf", "needs a number"},
		{"NaN", "battery<NaN", "needs a number"},
		{"value with an operator", "a=b=c", `value "b=c" has = ! < or >`},
		{"triple equal", "a===b", `value "=b"`},
		{"control character", "a=b\x01", "control character"},
		{"window hour", "window 24:00-02:00", "hours are 00-23"},
		{"window minute", "window 02:60-03:00", "minutes 00-59"},
		{"window, one-digit minute", "window 02:0-03:00", "want window HH:MM-HH:MM"},
		{"window without an end", "window 02:00", "want window HH:MM-HH:MM (window 02:00-05:00)"},
		{"window, signs", "window +2:00-03:00", `"+2:00-03:00" after key window`},
		{"empty window", "window 03:00-03:00", "window 03:00-03:00 is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error saying %q", tc.in, g, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "gate ") {
				t.Errorf("Parse(%q): %v; want it to name the gate and say %q", tc.in, err, tc.want)
			}
		})
	}
}

// state decodes a JSON object as a Source does.
func state(t *testing.T, js string) State {
	t.Helper()
	m, _, err := decode([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return State{Values: m}
}

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestEval(t *testing.T) {
	// 12:05 UTC in June: 14:05 in Berlin (CEST), 21:05 in Tokyo, 08:05 in
	// New York (EDT).
	now := time.Date(2026, 6, 15, 12, 5, 0, 0, time.UTC)
	berlin, tokyo := zone(t, "Europe/Berlin"), zone(t, "Asia/Tokyo")
	st := state(t, `{"parked": true, "moving": false, "ignition": "off", "gear": "P", "battery": 22,
		"soc": "64.5", "doors": "yes", "alarm": 0, "charging": "TRUE", "label": "", "modes": ["a"], "nothing": null,
		"flag": "True", "text": "full"}`)
	for _, tc := range []struct {
		name, gate string
		st         State
		holds      bool
		reason     string
	}{
		{"truthy true", "parked", st, true, "parked is true"},
		{"truthy false", "moving", st, false, "moving is false"},
		{"truthy missing", "asleep", st, false, "asleep is not set"},
		{"truthy null", "nothing", st, false, "nothing is not set"},
		{"truthy yes", "doors", st, true, "doors is yes"},
		{"truthy TRUE string", "charging", st, true, "charging is TRUE"},
		{"truthy zero", "alarm", st, false, "alarm is 0"},
		{"truthy number", "battery", st, true, "battery is 22"},
		{"truthy other string", "ignition", st, false, "ignition is off"},
		{"truthy empty string", "label", st, false, `label is ""`},
		{"falsy false", "!moving", st, true, "moving is false"},
		{"falsy missing", "!asleep", st, true, "asleep is not set"},
		{"falsy true", "!parked", st, false, "parked is true"},
		{"equal", "ignition=off", st, true, "ignition is off"},
		{"equal fails", "ignition=on", st, false, "ignition is off, needs =on"},
		{"equal is case-sensitive for strings", "gear=p", st, false, "gear is P, needs =p"},
		{"equal boolean any case", "parked==TRUE", st, true, "parked is true"},
		{"equal boolean false", "moving=False", st, true, "moving is false"},
		{"equal number text", "battery=22", st, true, "battery is 22"},
		{"equal missing", "ignition=off", State{}, false, "ignition is not set, needs =off"},
		{"not equal", "gear!=D", st, true, "gear is P"},
		{"not equal fails", "gear!=P", st, false, "gear is P, needs !=P"},
		{"not equal missing does not hold", "mode!=sport", st, false, "mode is not set, needs !=sport"},
		{"at least fails", "battery>=30", st, false, "battery is 22, needs >=30"},
		{"at least", "battery>=22", st, true, "battery is 22"},
		{"above equal fails", "battery>22", st, false, "battery is 22, needs >22"},
		{"below", "battery<22.5", st, true, "battery is 22"},
		{"at most", "battery<=21", st, false, "battery is 22, needs <=21"},
		{"numeric string", "soc>=60", st, true, "soc is 64.5"},
		{"numeric missing", "fuel>=10", st, false, "fuel is not set, needs >=10"},
		{"numeric not a number", "text>=10", st, false, "text is full, not a number (needs >=10)"},
		{"numeric boolean", "parked>=1", st, false, "parked is true, not a number (needs >=1)"},
		{"not a scalar", "modes", st, false, "modes is not a scalar (an array)"},
		{"not a scalar, negated", "!modes", st, false, "modes is not a scalar (an array)"},
		{"window in UTC by default", "window 12:00-13:00", State{}, true, "local time 12:05 UTC is inside 12:00-13:00"},
		{"window in the agent's zone", "window 02:00-05:00", State{Zone: berlin}, false, "local time 14:05 Europe/Berlin is outside 02:00-05:00"},
		{"window in the agent's zone, inside", "window 14:00-14:06", State{Zone: berlin}, true, "local time 14:05 Europe/Berlin is inside 14:00-14:06"},
		{"window end excluded", "window 14:00-14:05", State{Zone: berlin}, false, "local time 14:05 Europe/Berlin is outside 14:00-14:05"},
		{"the state's zone wins", "window 21:00-22:00", State{Values: map[string]any{"timezone": "Asia/Tokyo"}, Zone: berlin}, true, "local time 21:05 Asia/Tokyo is inside 21:00-22:00"},
		{"wrap: inside before midnight", "window 21:00-04:00", State{Zone: tokyo}, true, "local time 21:05 Asia/Tokyo is inside 21:00-04:00"},
		{"wrap: outside", "window 22:00-04:00", State{Zone: tokyo}, false, "local time 21:05 Asia/Tokyo is outside 22:00-04:00"},
		{"wrap: inside after midnight", "window 22:00-09:00", State{Values: map[string]any{"timezone": "America/New_York"}}, true, "local time 08:05 America/New_York is inside 22:00-09:00"},
		{"wrap: start included", "window 08:05-01:00", State{Values: map[string]any{"timezone": "America/New_York"}}, true, "local time 08:05 America/New_York is inside 08:05-01:00"},
		{"unknown zone", "window 02:00-05:00", State{Values: map[string]any{"timezone": "Mars/Olympus"}}, false, `timezone "Mars/Olympus" is not a known time zone`},
		{"zone not a string", "window 02:00-05:00", State{Values: map[string]any{"timezone": json.Number("2")}}, false, "timezone 2 is not a time zone name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse(tc.gate)
			if err != nil {
				t.Fatal(err)
			}
			holds, reason := g.Eval(tc.st, now)
			if holds != tc.holds || reason != tc.reason {
				t.Errorf("%s: %v %q, want %v %q", tc.gate, holds, reason, tc.holds, tc.reason)
			}
		})
	}
}

// The same gates at the same instant hold in one time zone and not in
// another, across midnight too.
func TestWindowTwoZones(t *testing.T) {
	now := time.Date(2026, 1, 10, 1, 30, 0, 0, time.UTC) // 02:30 in Berlin (CET), 10:30 in Tokyo
	night, err := Parse("window 22:00-04:00")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		zone  string
		holds bool
	}{{"Europe/Berlin", true}, {"Asia/Tokyo", false}, {"UTC", true}, {"America/Los_Angeles", false}} {
		t.Run(tc.zone, func(t *testing.T) {
			if holds, reason := night.Eval(State{Zone: zone(t, tc.zone)}, now); holds != tc.holds {
				t.Errorf("%v (%s), want %v", holds, reason, tc.holds)
			}
		})
	}
}

func TestEvalAll(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 5, 0, 0, time.UTC)
	st := state(t, `{"parked": true, "battery": 50}`)
	got := EvalAll([]string{"parked", "battery>=30", "battery>>1"}, st, nil, now)
	want := []Result{
		{Gate: "parked", Holds: true, Reason: "parked is true"},
		{Gate: "battery>=30", Holds: true, Reason: "battery is 50"},
		{Gate: "battery>>1", Reason: `gate "battery>>1": > needs a number, not ">1"`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if All(got) || !All(got[:2]) || !All(nil) {
		t.Errorf("All: wrong")
	}
	// A state that could not be read fails every gate, with the reason.
	readErr := errors.New("vehicle state is stale (updated 2026-06-15T11:00:00Z, 1h5m0s ago; max age 2m0s)")
	for _, r := range EvalAll([]string{"parked", "!moving", "window 00:00-23:59"}, State{}, readErr, now) {
		if r.Holds || r.Reason != readErr.Error() {
			t.Errorf("%+v: want not holding, with the read error", r)
		}
	}
}

// FuzzParse: Parse never panics, and what it accepts, String writes in a
// form Parse reads back to the same gate and the same string.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"parked", "!moving", "ignition=off", "ignition==off", "gear!=D", "battery>=30", "battery <= 30.5",
		"temp>-1e3", "x<0x1p4", "window 02:00-05:00", "window 22:00-04:00", "window", "window = 2", "window 2:00-3:00",
		"", "!", "=", "a=", "a=b=c", "a===b", "!!a", "window 24:00-01:00", "window 01:00-01:00", "a=\xff", "a= b\u00a0",
		"k=\u2028v", "battery>=1e999", "a>=NaN", "\tparked\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := Parse(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "gate ") {
				t.Fatalf("Parse(%q): error %q does not name the gate", s, err)
			}
			return
		}
		out := g.String()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, whose String %q does not parse: %v", s, g, out, err)
		}
		if again != g {
			t.Fatalf("Parse(%q) = %+v; Parse(%q) = %+v", s, g, out, again)
		}
		if again.String() != out {
			t.Fatalf("String of %q: %q, then %q", s, out, again.String())
		}
		g.Eval(State{Values: map[string]any{g.Key: "1"}}, time.Unix(0, 0)) // must not panic either
	})
}
