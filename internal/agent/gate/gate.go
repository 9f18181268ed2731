// Package gate parses and evaluates vehicle-state gates (issue 19): the
// conditions a rollout may put on a vehicle, such as "parked",
// "ignition=off", "battery>=30" or "window 02:00-05:00", which the agent
// checks against the vehicle's state before it applies a revision that
// changes the deployment. The hub checks the gates an operator writes
// with this same parser, so the package imports no Kubernetes packages.
//
// The grammar, one gate per string (whitespace around the whole and
// around an operator is ignored):
//
//	key                 the value is truthy: true, "true", "yes", "on", a number other than 0
//	!key                the value is not truthy, or not set
//	key=value           the value's text is value (key==value is the same;
//	key!=value          booleans compare case-insensitively)
//	key>=N  key<=N      the value is a number (or a string holding one)
//	key>N   key<N       that compares so with N
//	window HH:MM-HH:MM  the vehicle's local time is in [start, end); a
//	                    window may wrap midnight (22:00-04:00)
//
// A key is one or more of a-z A-Z 0-9 _ . -; a value is text without
// = ! < or >. A gate whose key is not set does not hold, except !key.
//
// The state is a JSON object of scalars (State) that a Source reads: a
// file the vehicle's integrator writes (File) or a URL the vehicle serves
// (HTTP). Sources fail on a state older than their maximum age, and a
// state that cannot be read makes every gate fail (EvalAll): the gates
// fail closed.
package gate

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Op is a gate's operator.
type Op uint8

// Operators.
const (
	Truthy Op = iota + 1 // key
	Falsy                // !key
	Eq                   // key=value
	Ne                   // key!=value
	Ge                   // key>=N
	Le                   // key<=N
	Gt                   // key>N
	Lt                   // key<N
	Window               // window HH:MM-HH:MM
)

// symbols are the comparison operators as written, longest first (the
// order Parse tries them in).
var symbols = []struct {
	s  string
	op Op
}{{"==", Eq}, {"!=", Ne}, {">=", Ge}, {"<=", Le}, {"=", Eq}, {">", Gt}, {"<", Lt}}

func (op Op) symbol() string {
	switch op {
	case Eq:
		return "="
	case Ne:
		return "!="
	case Ge:
		return ">="
	case Le:
		return "<="
	case Gt:
		return ">"
	case Lt:
		return "<"
	}
	return ""
}

// Gate is one parsed gate. Gates are comparable: two gates that read
// alike are ==.
type Gate struct {
	Op Op
	// Key is the state member the gate reads (not for Window).
	Key string
	// Value is the text Eq and Ne compare with.
	Value string
	// N is the number Ge, Le, Gt and Lt compare with.
	N float64
	// From and To are a Window's bounds, in minutes after midnight: it
	// holds from From up to, not including, To, across midnight when
	// From > To.
	From, To int
}

// Parse reads one gate. Its errors name the gate and what is wrong.
func Parse(s string) (Gate, error) {
	g, msg := parse(strings.TrimSpace(s))
	if msg != "" {
		return Gate{}, fmt.Errorf("gate %q: %s", s, msg)
	}
	return g, nil
}

const keyHelp = "a key is one or more of a-z A-Z 0-9 _ . -"

func parse(in string) (Gate, string) {
	if in == "" {
		return Gate{}, "empty"
	}
	if rest, ok := strings.CutPrefix(in, "window"); ok && rest != "" && isSpace(rest[0]) {
		if r := strings.TrimSpace(rest); r != "" && r[0] >= '0' && r[0] <= '9' {
			return parseWindow(r)
		}
	}
	neg := false
	if rest, ok := strings.CutPrefix(in, "!"); ok {
		neg, in = true, strings.TrimLeft(rest, " \t")
	}
	n := 0
	for n < len(in) && isKeyByte(in[n]) {
		n++
	}
	key, rest := in[:n], strings.TrimSpace(in[n:])
	if key == "" {
		return Gate{}, "no key: " + keyHelp
	}
	if rest == "" {
		if neg {
			return Gate{Op: Falsy, Key: key}, ""
		}
		return Gate{Op: Truthy, Key: key}, ""
	}
	if neg {
		return Gate{}, "! takes a bare key (!moving), not a comparison"
	}
	for _, sym := range symbols {
		v, ok := strings.CutPrefix(rest, sym.s)
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" {
			return Gate{}, fmt.Sprintf("nothing after %s", sym.s)
		}
		g := Gate{Op: sym.op, Key: key}
		switch sym.op {
		case Eq, Ne:
			if strings.ContainsAny(v, "=!<>") {
				return Gate{}, fmt.Sprintf("value %q has = ! < or >", v)
			}
			for _, r := range v {
				if r < ' ' || r == 0x7f {
					return Gate{}, fmt.Sprintf("value %q has a control character", v)
				}
			}
			g.Value = v
		default:
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return Gate{}, fmt.Sprintf("%s needs a number, not %q", sym.s, v)
			}
			g.N = f
		}
		return g, ""
	}
	return Gate{}, fmt.Sprintf("%q after key %s: want an operator (= == != >= <= > <), or a key alone; %s", rest, key, keyHelp)
}

func parseWindow(r string) (Gate, string) {
	bad := fmt.Sprintf("want window HH:MM-HH:MM (window 02:00-05:00), not %q", "window "+r)
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return Gate{}, bad
	}
	from, ok1 := parseClock(strings.TrimSpace(a))
	to, ok2 := parseClock(strings.TrimSpace(b))
	if !ok1 || !ok2 {
		return Gate{}, bad + "; hours are 00-23, minutes 00-59"
	}
	if from == to {
		return Gate{}, fmt.Sprintf("window %s-%s is empty: its start and end are the same", hhmm(from), hhmm(to))
	}
	return Gate{Op: Window, From: from, To: to}, ""
}

// parseClock reads H:MM or HH:MM as minutes after midnight.
func parseClock(s string) (int, bool) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) < 1 || len(h) > 2 || len(m) != 2 || !digits(h) || !digits(m) {
		return 0, false
	}
	hh, _ := strconv.Atoi(h)
	mm, _ := strconv.Atoi(m)
	if hh > 23 || mm > 59 {
		return 0, false
	}
	return hh*60 + mm, true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'
}

func isKeyByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '.' || b == '-'
}

func hhmm(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

// String is the gate in its canonical form, which Parse reads back to
// the same gate.
func (g Gate) String() string {
	switch g.Op {
	case Truthy:
		return g.Key
	case Falsy:
		return "!" + g.Key
	case Eq, Ne:
		return g.Key + g.Op.symbol() + g.Value
	case Ge, Le, Gt, Lt:
		return g.Key + g.Op.symbol() + strconv.FormatFloat(g.N, 'g', -1, 64)
	case Window:
		return "window " + g.window()
	}
	return fmt.Sprintf("gate(op %d)", g.Op)
}

func (g Gate) window() string { return hhmm(g.From) + "-" + hhmm(g.To) }

// State is the vehicle's state: a JSON object of scalars, as a Source
// read it, and the zone its window gates read the time in.
type State struct {
	// Values are the object's members as encoding/json decodes them with
	// UseNumber: string, bool, json.Number, nil. Anything else (an object,
	// an array) is not a scalar, and a gate on it does not hold.
	Values map[string]any
	// Zone is the vehicle's time zone when Values has no "timezone" (the
	// agent's --timezone); nil: UTC.
	Zone *time.Location
}

// Location is the zone window gates read the local time in: the state's
// "timezone" member (an IANA name such as Europe/Berlin), else Zone, else
// UTC.
func (s State) Location() (*time.Location, error) {
	if v, ok := s.Values["timezone"]; ok && v != nil {
		name, ok := v.(string)
		if !ok || name == "" {
			return nil, fmt.Errorf("timezone %s is not a time zone name", show(v))
		}
		loc, err := time.LoadLocation(name)
		if err != nil {
			return nil, fmt.Errorf("timezone %q is not a known time zone", name)
		}
		return loc, nil
	}
	if s.Zone != nil {
		return s.Zone, nil
	}
	return time.UTC, nil
}

// Eval reports whether g holds in st at now, and why, in a few words
// ("parked is false", "battery is 22, needs >=30", "local time 14:05
// Europe/Berlin is outside 02:00-05:00").
func (g Gate) Eval(st State, now time.Time) (holds bool, reason string) {
	if g.Op == Window {
		loc, err := st.Location()
		if err != nil {
			return false, err.Error()
		}
		t := now.In(loc)
		m := t.Hour()*60 + t.Minute()
		in := g.From <= m && m < g.To
		if g.From > g.To {
			in = m >= g.From || m < g.To
		}
		where := "outside"
		if in {
			where = "inside"
		}
		return in, fmt.Sprintf("local time %s %s is %s %s", t.Format("15:04"), loc, where, g.window())
	}
	v := st.Values[g.Key]
	need := g.Op.symbol()
	switch g.Op {
	case Eq, Ne:
		need += g.Value
	default:
		need += strconv.FormatFloat(g.N, 'g', -1, 64)
	}
	if v == nil {
		if g.Op == Falsy {
			return true, g.Key + " is not set"
		}
		if g.Op == Truthy {
			return false, g.Key + " is not set"
		}
		return false, fmt.Sprintf("%s is not set, needs %s", g.Key, need)
	}
	text, ok := scalar(v)
	if !ok {
		return false, fmt.Sprintf("%s is not a scalar (%s)", g.Key, kind(v))
	}
	is := fmt.Sprintf("%s is %s", g.Key, show(v))
	switch g.Op {
	case Truthy:
		return truthy(v), is
	case Falsy:
		return !truthy(v), is
	case Eq, Ne:
		same := text == g.Value
		if _, isBool := v.(bool); isBool {
			same = strings.EqualFold(text, g.Value)
		}
		if same == (g.Op == Eq) {
			return true, is
		}
		return false, is + ", needs " + need
	}
	n, ok := number(v)
	if !ok {
		return false, fmt.Sprintf("%s, not a number (needs %s)", is, need)
	}
	var yes bool
	switch g.Op {
	case Ge:
		yes = n >= g.N
	case Le:
		yes = n <= g.N
	case Gt:
		yes = n > g.N
	case Lt:
		yes = n < g.N
	default:
		return false, fmt.Sprintf("unknown operator %d", g.Op)
	}
	if yes {
		return true, is
	}
	return false, is + ", needs " + need
}

// scalar is v's text form: a string as is, a number as written, a
// boolean as true or false.
func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	case float64: // a State built without UseNumber
		return strconv.FormatFloat(x, 'g', -1, 64), true
	}
	return "", false
}

func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case string:
		switch strings.ToLower(x) {
		case "true", "yes", "on":
			return true
		}
		return false
	}
	n, ok := number(v)
	return ok && n != 0
}

// number is v as a finite number: a JSON number, or a string holding one.
func number(v any) (float64, bool) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = strings.TrimSpace(x)
	case float64:
		return x, !math.IsInf(x, 0) && !math.IsNaN(x)
	default:
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// show is a value as a reason shows it: text unquoted unless it is empty
// or has spaces.
func show(v any) string {
	s, ok := scalar(v)
	if !ok {
		return kind(v)
	}
	if _, isString := v.(string); isString && (s == "" || strings.ContainsAny(s, " \t\n")) {
		return strconv.Quote(s)
	}
	return s
}

func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// Result is one gate as evaluated.
type Result struct {
	// Gate is the gate as written.
	Gate   string
	Holds  bool
	Reason string
}

// EvalAll evaluates each gate (as written) in st at now. A gate that
// does not parse does not hold, and when readErr is set (the state could
// not be read, or is stale) no gate holds and each says readErr: the
// gates fail closed.
func EvalAll(gates []string, st State, readErr error, now time.Time) []Result {
	out := make([]Result, 0, len(gates))
	for _, s := range gates {
		r := Result{Gate: s}
		g, err := Parse(s)
		switch {
		case err != nil:
			r.Reason = err.Error()
		case readErr != nil:
			r.Reason = readErr.Error()
		default:
			r.Holds, r.Reason = g.Eval(st, now)
		}
		out = append(out, r)
	}
	return out
}

// All reports whether every result holds.
func All(rs []Result) bool {
	for _, r := range rs {
		if !r.Holds {
			return false
		}
	}
	return true
}
