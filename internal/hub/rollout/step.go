package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Observation is where one vehicle is with the rollout's generation, as
// its reports say (Observe computes it).
type Observation struct {
	// State is one of the hubv1.Vehicle* states other than pending.
	State  string
	Reason string
}

// Result is what one Step decided.
type Result struct {
	Rollout hubv1.Rollout
	// Vehicles are every vehicle record, updated; Changed the ones whose
	// record differs from the input (what to store).
	Vehicles []hubv1.RolloutVehicle
	Changed  []hubv1.RolloutVehicle
	// Released are the vehicles that may now run the generation: their
	// desired state must be recomputed.
	Released []string
	// Events say what changed, for the hub's log.
	Events []string
}

// answered: the vehicle said how the generation went (or moved past it).
func answered(state string) bool {
	return state == hubv1.VehicleHealthy || state == hubv1.VehicleFailed || state == hubv1.VehicleSuperseded
}

// busy: released, online and still updating: what MaxUnavailable caps.
func busy(state string) bool {
	return state == hubv1.VehicleApplying || state == hubv1.VehicleWaiting
}

// Step advances a rollout at now: it updates each vehicle's state from
// obs (a vehicle missing from obs is offline), pauses the rollout when
// failures pass the threshold, releases the current wave's vehicles within
// MaxUnavailable, closes a wave when its vehicles answered or its deadline
// passed, starts the next after the bake time, and completes the rollout
// after the last wave. A rollout that is not Progressing only has its
// vehicles' states and counts updated.
//
// A wave is done when every vehicle in it is released and each answered
// (healthy, failed or superseded) or is offline, with at least one
// answer; or at its deadline, when the vehicles not yet released are
// released (they take the generation when they can) and the wave is done
// if any vehicle answered, else the rollout pauses: nobody has tried the
// generation. Offline vehicles never hold a wave up: they get the newest
// generation they are allowed when they return.
//
// Step is pure: same input, same output.
func Step(r hubv1.Rollout, pol Policy, vehicles []hubv1.RolloutVehicle, obs map[string]Observation, now time.Time) Result {
	res := Result{Rollout: r}
	r = cloneRollout(r)
	vs := slices.Clone(vehicles)
	changed := map[int]bool{}
	observe := func(i int) {
		v := &vs[i]
		state, reason := hubv1.VehiclePending, ""
		if v.Released {
			o, ok := obs[v.Vehicle]
			if !ok {
				o = Observation{State: hubv1.VehicleOffline, Reason: "no report"}
			}
			state, reason = o.State, o.Reason
		}
		if v.State != state || v.Reason != reason {
			v.State, v.Reason = state, reason
			changed[i] = true
		}
	}
	for i := range vs {
		observe(i)
	}
	release := func(i int) {
		vs[i].Released = true
		changed[i] = true
		res.Released = append(res.Released, vs[i].Vehicle)
		observe(i)
	}
	if r.Phase == hubv1.RolloutProgressing {
		advance(&r, pol, vs, release, now, &res.Events)
	}
	count(&r, vs)
	if r.Phase == hubv1.RolloutProgressing {
		if reason := overThreshold(r, pol, vs); reason != "" {
			r.Phase, r.Reason = hubv1.RolloutPaused, reason
			res.Events = append(res.Events, "paused: "+reason)
		}
	}
	res.Rollout = r
	res.Vehicles = vs
	for i := range vs {
		if changed[i] {
			res.Changed = append(res.Changed, vs[i])
		}
	}
	return res
}

// advance releases and closes waves; it stops at the first wave not done
// (or baking), and completes the rollout after the last.
func advance(r *hubv1.Rollout, pol Policy, vs []hubv1.RolloutVehicle, release func(int), now time.Time, events *[]string) {
	for w := range r.Waves {
		wave := &r.Waves[w]
		if wave.Done != nil {
			continue
		}
		if wave.Started == nil {
			if w > 0 {
				if bake := r.Waves[w-1].BakeUntil; bake != nil && now.Before(*bake) {
					return
				}
			}
			wave.Started = ptr(now)
			*events = append(*events, fmt.Sprintf("wave %s started (%d vehicles)", wave.Name, wave.Vehicles))
		}
		if failedBeyond(*r, pol, vs) {
			return // the threshold check pauses the rollout
		}
		limit := pol.MaxUnavailable.Of(total(r))
		if !pol.MaxUnavailable.IsZero() && limit < 1 {
			limit = 1
		}
		var n, updating, ans, unreleased int
		for i := range vs {
			if vs[i].Wave != w {
				continue
			}
			n++
			if !vs[i].Released {
				if pol.MaxUnavailable.IsZero() || updating < limit {
					release(i)
				} else {
					unreleased++
					continue
				}
			}
			switch {
			case busy(vs[i].State):
				updating++
			case answered(vs[i].State):
				ans++
			}
		}
		deadline := wave.Started.Add(pol.Deadline)
		switch {
		case n == 0:
		case unreleased == 0 && updating == 0 && ans > 0:
		case !now.Before(deadline):
			for i := range vs {
				if vs[i].Wave == w && !vs[i].Released {
					release(i)
				}
			}
			if ans == 0 {
				r.Phase = hubv1.RolloutPaused
				r.Reason = fmt.Sprintf("wave %s: none of its %d vehicles answered within %s (resume to go on without them)", wave.Name, n, pol.Deadline)
				*events = append(*events, "paused: "+r.Reason)
				return
			}
			*events = append(*events, fmt.Sprintf("wave %s: deadline passed with %d of %d vehicles answered", wave.Name, ans, n))
		default:
			return
		}
		closeWave(r, w, pol, now)
		*events = append(*events, fmt.Sprintf("wave %s done", wave.Name))
	}
	r.Phase, r.Reason = hubv1.RolloutCompleted, ""
	*events = append(*events, "completed")
}

func closeWave(r *hubv1.Rollout, w int, pol Policy, now time.Time) {
	wave := &r.Waves[w]
	wave.Done = ptr(now)
	if w < len(r.Waves)-1 && pol.Bake > 0 && wave.Vehicles > 0 {
		wave.BakeUntil = ptr(now.Add(pol.Bake))
	}
}

func total(r *hubv1.Rollout) int {
	n := 0
	for _, w := range r.Waves {
		n += w.Vehicles
	}
	return n
}

// failedBeyond reports whether more vehicles failed than the threshold
// tolerates (beyond those tolerated at the last resume).
func failedBeyond(r hubv1.Rollout, pol Policy, vs []hubv1.RolloutVehicle) bool {
	failed, released := 0, 0
	for _, v := range vs {
		if v.Released {
			released++
		}
		if v.State == hubv1.VehicleFailed {
			failed++
		}
	}
	return failed-r.Tolerated > pol.Threshold.Floor(released)
}

// overThreshold is the pause reason when failures pass the threshold, or "".
func overThreshold(r hubv1.Rollout, pol Policy, vs []hubv1.RolloutVehicle) string {
	if !failedBeyond(r, pol, vs) {
		return ""
	}
	var failed []string
	released, nFailed := 0, 0
	for _, v := range vs {
		if v.Released {
			released++
		}
		if v.State == hubv1.VehicleFailed {
			failed = append(failed, v.Vehicle+" ("+v.Reason+")")
			nFailed++
		}
	}
	more := ""
	if len(failed) > 3 {
		more = fmt.Sprintf(" and %d more", len(failed)-3)
		failed = failed[:3]
	}
	allowed := pol.Threshold.String()
	if r.Tolerated > 0 {
		allowed += fmt.Sprintf(" beyond the %d tolerated at resume", r.Tolerated)
	}
	return fmt.Sprintf("%d of %d released vehicles failed, more than the failure threshold %s: %s%s",
		nFailed, released, allowed, strings.Join(failed, ", "), more)
}

// count fills the rollout's and each wave's counts per state.
func count(r *hubv1.Rollout, vs []hubv1.RolloutVehicle) {
	r.Counts = map[string]int{}
	for w := range r.Waves {
		r.Waves[w].Counts = map[string]int{}
	}
	for _, v := range vs {
		r.Counts[v.State]++
		if v.Wave >= 0 && v.Wave < len(r.Waves) {
			r.Waves[v.Wave].Counts[v.State]++
		}
	}
}

// Resume sets a paused rollout going again: failures so far are tolerated
// (the threshold counts new ones), and a wave whose deadline passed
// without answers is closed, so the rollout goes on without them.
func Resume(r hubv1.Rollout, pol Policy, now time.Time) hubv1.Rollout {
	r = cloneRollout(r)
	r.Phase, r.Reason = hubv1.RolloutProgressing, ""
	r.Tolerated = r.Counts[hubv1.VehicleFailed]
	for w := range r.Waves {
		wave := &r.Waves[w]
		if wave.Done != nil {
			continue
		}
		if wave.Started != nil && !now.Before(wave.Started.Add(pol.Deadline)) {
			closeWave(&r, w, pol, now)
		}
		break
	}
	return r
}

func cloneRollout(r hubv1.Rollout) hubv1.Rollout {
	r.Waves = slices.Clone(r.Waves)
	for i := range r.Waves {
		r.Waves[i].Counts = clone(r.Waves[i].Counts)
	}
	r.Counts = clone(r.Counts)
	return r
}

func clone(m map[string]int) map[string]int {
	if m == nil {
		return nil
	}
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func ptr[T any](v T) *T { return &v }
