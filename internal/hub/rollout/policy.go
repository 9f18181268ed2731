package rollout

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// DefaultWaveDeadline is how long a wave waits for answers when the policy
// does not say.
const DefaultWaveDeadline = 24 * time.Hour

// maxDuration caps bake times and deadlines: a typo of "300h" for "30m"
// should be an error, not a rollout that never moves.
const maxDuration = 30 * 24 * time.Hour

// Policy is a parsed hubv1.RolloutPolicy.
type Policy struct {
	// Waves are the canary (named "canary") and the policy's waves, in
	// order; Split adds a last wave for the vehicles none of them took.
	Waves []WaveSpec
	// MaxUnavailable caps the current wave's vehicles updating at once;
	// zero: no cap.
	MaxUnavailable Quantity
	Bake           time.Duration
	Deadline       time.Duration
	// Threshold is the failures tolerated; its percentage is of the
	// vehicles released so far.
	Threshold Quantity
	Gates     []string
}

// WaveSpec is one wave of a policy: by selector, or by cumulative size.
type WaveSpec struct {
	Name     string
	Selector labels.Selector // nil: by Size
	Size     Quantity
}

// Quantity is a count ("5") or a percentage ("10%").
type Quantity struct {
	N       int
	Percent bool
}

// IsZero reports whether q is unset (a count of zero).
func (q Quantity) IsZero() bool { return q.N == 0 && !q.Percent }

// Of is q of total: a count as is, a percentage rounded up (1% of 10
// vehicles is 1 vehicle, not 0).
func (q Quantity) Of(total int) int {
	if !q.Percent {
		return q.N
	}
	return (q.N*total + 99) / 100
}

// Floor is q of total, a percentage rounded down (a failure threshold of
// 10% tolerates no failure among the first 9 vehicles).
func (q Quantity) Floor(total int) int {
	if !q.Percent {
		return q.N
	}
	return q.N * total / 100
}

func (q Quantity) String() string {
	if q.Percent {
		return strconv.Itoa(q.N) + "%"
	}
	return strconv.Itoa(q.N)
}

// ParseQuantity parses "5" or "10%" (a percentage from 0 to 100).
func ParseQuantity(s string) (Quantity, error) {
	num, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	n, err := strconv.Atoi(num)
	switch {
	case err != nil:
		return Quantity{}, fmt.Errorf("%q is neither a count (5) nor a percentage (10%%)", s)
	case n < 0:
		return Quantity{}, fmt.Errorf("%q is negative", s)
	case pct && n > 100:
		return Quantity{}, fmt.Errorf("%q is above 100%%", s)
	}
	return Quantity{N: n, Percent: pct}, nil
}

// GateParser checks a gate expression; the hub passes the agent's own
// parser (internal/agent/gate) so both read gates alike.
type GateParser func(string) error

// ParsePolicy parses and checks p (nil: one wave of every vehicle, no
// gates). Errors name the field at fault, from "rollout.".
func ParsePolicy(p *hubv1.RolloutPolicy, gate GateParser) (Policy, error) {
	out := Policy{Deadline: DefaultWaveDeadline}
	if p == nil {
		return out, nil
	}
	if p.Canary != nil {
		w, err := parseWave("rollout.canary", *p.Canary)
		if err != nil {
			return Policy{}, err
		}
		if w.Name == "" {
			w.Name = "canary"
		}
		out.Waves = append(out.Waves, w)
	}
	names := map[string]bool{}
	for i, w := range p.Waves {
		field := fmt.Sprintf("rollout.waves[%d]", i)
		ws, err := parseWave(field, w)
		if err != nil {
			return Policy{}, err
		}
		if ws.Name == "" {
			ws.Name = fmt.Sprintf("wave-%d", len(out.Waves)+1)
		}
		out.Waves = append(out.Waves, ws)
	}
	for i, w := range out.Waves {
		if names[w.Name] {
			return Policy{}, &FieldError{Field: "rollout.waves", Msg: fmt.Sprintf("wave name %q is used twice", w.Name)}
		}
		names[w.Name] = true
		if w.Selector == nil && i > 0 {
			// Sizes are cumulative, so they must not shrink.
			for j := i - 1; j >= 0; j-- {
				prev := out.Waves[j]
				if prev.Selector == nil && prev.Size.Percent == w.Size.Percent && prev.Size.N > w.Size.N {
					return Policy{}, &FieldError{Field: "rollout.waves", Msg: fmt.Sprintf("wave %q size %s is below the earlier wave %q's %s: sizes are cumulative", w.Name, w.Size, prev.Name, prev.Size)}
				}
			}
		}
	}
	var err error
	if p.MaxUnavailable != "" {
		if out.MaxUnavailable, err = ParseQuantity(p.MaxUnavailable); err != nil {
			return Policy{}, &FieldError{Field: "rollout.maxUnavailable", Msg: err.Error()}
		}
		if out.MaxUnavailable.N == 0 {
			return Policy{}, &FieldError{Field: "rollout.maxUnavailable", Msg: "0 would never release a vehicle: leave it empty for no cap"}
		}
	}
	if p.FailureThreshold != "" {
		if out.Threshold, err = ParseQuantity(p.FailureThreshold); err != nil {
			return Policy{}, &FieldError{Field: "rollout.failureThreshold", Msg: err.Error()}
		}
	}
	if out.Bake, err = duration("rollout.bakeTime", p.BakeTime, 0); err != nil {
		return Policy{}, err
	}
	if out.Deadline, err = duration("rollout.waveDeadline", p.WaveDeadline, DefaultWaveDeadline); err != nil {
		return Policy{}, err
	}
	if out.Deadline == 0 {
		return Policy{}, &FieldError{Field: "rollout.waveDeadline", Msg: "must be above 0"}
	}
	for i, g := range p.Gates {
		if gate == nil {
			break
		}
		if err := gate(g); err != nil {
			return Policy{}, &FieldError{Field: fmt.Sprintf("rollout.gates[%d]", i), Msg: err.Error()}
		}
	}
	out.Gates = p.Gates
	return out, nil
}

func parseWave(field string, w hubv1.Wave) (WaveSpec, error) {
	out := WaveSpec{Name: w.Name}
	switch {
	case (w.Selector == "") == (w.Size == ""):
		return out, &FieldError{Field: field, Msg: "give exactly one of selector and size"}
	case w.Selector != "":
		sel, err := labels.Parse(w.Selector)
		if err != nil {
			return out, &FieldError{Field: field + ".selector", Msg: fmt.Sprintf("%q does not parse: %v", w.Selector, err)}
		}
		out.Selector = sel
	default:
		q, err := ParseQuantity(w.Size)
		if err != nil {
			return out, &FieldError{Field: field + ".size", Msg: err.Error()}
		}
		out.Size = q
	}
	return out, nil
}

func duration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, &FieldError{Field: field, Msg: fmt.Sprintf("%q is not a duration such as 30m", s)}
	case d < 0:
		return 0, &FieldError{Field: field, Msg: fmt.Sprintf("%q is negative", s)}
	case d > maxDuration:
		return 0, &FieldError{Field: field, Msg: fmt.Sprintf("%q is above the 720h limit", s)}
	}
	return d, nil
}

// FieldError is a policy error naming the field at fault.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }
