package cli

import (
	"cmp"
	"flag"
	"fmt"
	"regexp"
	"slices"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// The rollout policy's flags, shared by deploy create, update and
// preview. A wave is written as the flags take it and deploy show prints
// it: a size ("1", "10%") or "selector:<label selector>", either after
// "name=". A label selector holds '=' but a wave name does not, so a
// value that starts with "selector:" has no name, and otherwise the name
// ends at the first '='.

const rolloutFlagsHelp = `Rollout policy (docs/rollouts.md has what it means): --canary and each
--wave is a wave, by size or by label selector, optionally named:
  1  5%  selector:tier=test  early=25%  eu=selector:fleet=eu
Sizes are cumulative (--wave 25% --wave 50%: up to a quarter of the
targeted vehicles, then up to half); the vehicles no wave took come last.
The canary is named canary, the others wave-N unless named. At most
--max-unavailable (5 or 10%) of a wave update at once; --bake-time (30m)
is the wait after a wave before the next; --wave-deadline (default 24h)
bounds a wave's wait for answers; more than --failure-threshold (2 or 5%
of those released; default 0) failed vehicles pause the rollout. --gate
(repeated) is a vehicle-state condition the agent checks before it
applies: parked, '!moving', ignition=off, 'battery>=30',
'window 02:00-05:00'.`

// rolloutFlagNames are the flags that change a rollout policy.
var rolloutFlagNames = []string{"canary", "wave", "max-unavailable", "bake-time", "wave-deadline", "failure-threshold", "gate"}

// rolloutFlags are the rollout policy flags.
type rolloutFlags struct {
	canary                                                   string
	waves, gates                                             multiString
	maxUnavailable, bakeTime, waveDeadline, failureThreshold string
	clear                                                    bool // update and preview only
}

func (r *rolloutFlags) register(fs *flag.FlagSet, change bool) {
	fs.StringVar(&r.canary, "canary", "", "the first `wave`: a size (1, 5%) or selector:<selector>, optionally name=... (\"\": no canary)")
	fs.Var(&r.waves, "wave", "a `wave` after the canary, in order: a size (25%, 10) or selector:<selector>, optionally name=...; may be repeated")
	fs.StringVar(&r.maxUnavailable, "max-unavailable", "", "vehicles of a wave updating at once, at most: a `count` or a percentage (5, 10%) (\"\": no cap)")
	fs.StringVar(&r.bakeTime, "bake-time", "", "the wait after a wave is done before the next starts: a `duration` such as 30m (\"\": none)")
	fs.StringVar(&r.waveDeadline, "wave-deadline", "", "how long a wave waits for its vehicles to answer: a `duration` (\"\": 24h)")
	fs.StringVar(&r.failureThreshold, "failure-threshold", "", "failed vehicles tolerated before the rollout pauses: a `count` or a percentage of those released (\"\": 0)")
	fs.Var(&r.gates, "gate", "a vehicle-state `condition` the agent checks before it applies, such as parked or 'battery>=30'; may be repeated")
	if change {
		fs.BoolVar(&r.clear, "clear-rollout", false, "drop the rollout policy (with other rollout flags: a new policy of those alone)")
	}
}

// apply changes dep's rollout policy as the flags given on fs say: only
// what they name changes; --wave and --gate replace all the waves or
// gates (an empty value alone drops them); --clear-rollout starts from no
// policy. A policy left empty is none.
func (r *rolloutFlags) apply(fs *flag.FlagSet, dep *hubv1.Deployment) error {
	changed := r.clear
	for _, name := range rolloutFlagNames {
		changed = changed || given(fs, name)
	}
	if !changed {
		return nil
	}
	var p hubv1.RolloutPolicy
	if dep.Rollout != nil && !r.clear {
		p = *dep.Rollout
		if p.Canary != nil {
			c := *p.Canary
			p.Canary = &c
		}
		p.Waves, p.Gates = slices.Clone(p.Waves), slices.Clone(p.Gates)
	}
	if given(fs, "canary") {
		p.Canary = nil
		if strings.TrimSpace(r.canary) != "" {
			w, err := parseWave("--canary", r.canary)
			if err != nil {
				return err
			}
			p.Canary = &w
		}
	}
	if given(fs, "wave") {
		p.Waves = nil
		for _, s := range r.waves {
			if strings.TrimSpace(s) == "" {
				continue
			}
			w, err := parseWave("--wave", s)
			if err != nil {
				return err
			}
			p.Waves = append(p.Waves, w)
		}
	}
	// The hub checks these, naming the field (rollout.bakeTime, ...);
	// the error then names the flag too (flagForField).
	for _, f := range []struct {
		name string
		val  string
		to   *string
	}{
		{"max-unavailable", r.maxUnavailable, &p.MaxUnavailable},
		{"bake-time", r.bakeTime, &p.BakeTime},
		{"wave-deadline", r.waveDeadline, &p.WaveDeadline},
		{"failure-threshold", r.failureThreshold, &p.FailureThreshold},
	} {
		if given(fs, f.name) {
			*f.to = strings.TrimSpace(f.val)
		}
	}
	if given(fs, "gate") {
		p.Gates = nil
		for _, g := range r.gates {
			if g = strings.TrimSpace(g); g != "" {
				p.Gates = append(p.Gates, g)
			}
		}
	}
	dep.Rollout = &p
	if p.Canary == nil && len(p.Waves) == 0 && p.MaxUnavailable == "" && p.BakeTime == "" &&
		p.WaveDeadline == "" && p.FailureThreshold == "" && len(p.Gates) == 0 {
		dep.Rollout = nil
	}
	return nil
}

var sizeRE = regexp.MustCompile(`^[0-9]+%?$`)

// parseWave parses a --canary or --wave value: [name=]size or
// [name=]selector:<selector>.
func parseWave(flagName, s string) (hubv1.Wave, error) {
	s = strings.TrimSpace(s)
	var w hubv1.Wave
	spec := s
	if !strings.HasPrefix(s, "selector:") {
		if name, rest, ok := strings.Cut(s, "="); ok {
			if name == "" {
				return w, usagef("%s %q: the wave's name before '=' is empty", flagName, s)
			}
			w.Name, spec = name, rest
		}
	}
	if sel, ok := strings.CutPrefix(spec, "selector:"); ok {
		if strings.TrimSpace(sel) == "" {
			return w, usagef("%s %q: selector: needs a label selector, such as selector:fleet=eu", flagName, s)
		}
		w.Selector = sel
		return w, nil
	}
	if !sizeRE.MatchString(spec) {
		hint := ""
		if w.Name != "" {
			hint = fmt.Sprintf("; a wave by label selector is selector:%s", s)
		}
		return w, usagef("%s %q: want a size (5 or 10%%) or selector:<selector>, optionally after name=%s", flagName, s, hint)
	}
	w.Size = spec
	return w, nil
}

// formatWave writes w as the flags take it.
func formatWave(w hubv1.Wave) string {
	spec := w.Size
	if w.Selector != "" {
		spec = "selector:" + w.Selector
	}
	if w.Name != "" {
		return w.Name + "=" + spec
	}
	return spec
}

// waveNames are the names the hub gives a policy's waves (canary, then
// wave-N counting the canary, unless named), before the last one, rest.
func waveNames(p hubv1.RolloutPolicy) []string {
	var names []string
	if p.Canary != nil {
		names = append(names, cmp.Or(p.Canary.Name, "canary"))
	}
	for _, w := range p.Waves {
		names = append(names, cmp.Or(w.Name, fmt.Sprintf("wave-%d", len(names)+1)))
	}
	return names
}

// describePolicy is a rollout policy in three lines: the waves (named as
// the hub names them, sized as the flags take them), the pacing, the
// gates.
func describePolicy(p *hubv1.RolloutPolicy) string {
	if p == nil {
		return "none: every targeted vehicle at once, no gates"
	}
	names := waveNames(*p)
	all := p.Waves
	if p.Canary != nil {
		all = append([]hubv1.Wave{*p.Canary}, p.Waves...)
	}
	var waves []string
	for i, w := range all {
		w.Name = names[i]
		waves = append(waves, formatWave(w))
	}
	lines := []string{"waves: one, of every targeted vehicle"}
	if len(waves) > 0 {
		lines[0] = "waves: " + strings.Join(waves, ", ") + ", then the rest"
	}
	lines = append(lines, fmt.Sprintf("max unavailable %s, bake time %s, wave deadline %s, failure threshold %s",
		cmp.Or(p.MaxUnavailable, "no cap"), cmp.Or(p.BakeTime, "0"), cmp.Or(p.WaveDeadline, "24h"), cmp.Or(p.FailureThreshold, "0")))
	if len(p.Gates) == 0 {
		lines = append(lines, "gates: none")
	} else {
		lines = append(lines, "gates: "+strings.Join(p.Gates, ", "))
	}
	return strings.Join(lines, "\n")
}

// flagForField is the flag that sets a rollout policy field the hub
// names in an error ("rollout.waves[0].size": --wave), or "".
func flagForField(field string) string {
	rest, ok := strings.CutPrefix(field, "rollout.")
	if !ok {
		return ""
	}
	key := rest
	if i := strings.IndexAny(rest, ".["); i >= 0 {
		key = rest[:i]
	}
	return map[string]string{
		"canary":           "--canary",
		"waves":            "--wave",
		"maxUnavailable":   "--max-unavailable",
		"bakeTime":         "--bake-time",
		"waveDeadline":     "--wave-deadline",
		"failureThreshold": "--failure-threshold",
		"gates":            "--gate",
	}[key]
}
