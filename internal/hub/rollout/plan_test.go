package rollout

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// car is a simulated vehicle: how it answers once released.
type car struct {
	labels map[string]string
	// offlineUntil: offline (no answer) until this many minutes in.
	offlineUntil int
	// fails: answers failed instead of healthy.
	fails bool
	// gateUntil: waits for a gate until this many minutes in.
	gateUntil int
	// slow: minutes from release to an answer (default 1).
	slow int
	// joinAt: the selector starts matching it at this minute (0: from the start).
	joinAt int
	// newer: runs a newer generation from this minute on.
	newer int
}

type scenario struct {
	name   string
	policy *hubv1.RolloutPolicy
	cars   map[string]car
	// minutes to run, one Step per minute.
	minutes int
	// resumeAt: minutes at which an operator resumes a paused rollout.
	resumeAt []int
}

func fleet(n int, mod func(i int, c *car)) map[string]car {
	out := map[string]car{}
	for i := range n {
		c := car{labels: map[string]string{"fleet": "eu"}}
		if mod != nil {
			mod(i, &c)
		}
		out[fmt.Sprintf("car-%02d", i+1)] = c
	}
	return out
}

var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func scenarios() []scenario {
	return []scenario{
		{name: "no-policy", cars: fleet(5, nil), minutes: 4},
		{name: "canary-and-percentage-waves", minutes: 40, cars: fleet(20, nil), policy: &hubv1.RolloutPolicy{
			Canary:   &hubv1.Wave{Size: "1"},
			Waves:    []hubv1.Wave{{Size: "10%"}, {Name: "half", Size: "50%"}},
			BakeTime: "10m",
		}},
		{name: "selector-waves", minutes: 12, cars: fleet(8, func(i int, c *car) {
			if i == 3 {
				c.labels["canary"] = "true"
			}
			if i%2 == 0 {
				c.labels["region"] = "north"
			}
		}), policy: &hubv1.RolloutPolicy{
			Canary: &hubv1.Wave{Selector: "canary=true"},
			Waves:  []hubv1.Wave{{Name: "north", Selector: "region=north"}},
		}},
		{name: "max-unavailable", minutes: 12, cars: fleet(7, func(i int, c *car) { c.slow = 2 }), policy: &hubv1.RolloutPolicy{
			MaxUnavailable: "2",
		}},
		{name: "threshold-pause-resume", minutes: 16, resumeAt: []int{6}, cars: fleet(10, func(i int, c *car) {
			c.fails = i == 2 || i == 5 || i == 7 || i == 8
		}), policy: &hubv1.RolloutPolicy{
			Canary:           &hubv1.Wave{Size: "2"},
			Waves:            []hubv1.Wave{{Size: "50%"}},
			FailureThreshold: "1",
		}},
		{name: "threshold-percentage", minutes: 10, cars: fleet(10, func(i int, c *car) {
			c.fails = i == 0 || i == 4
		}), policy: &hubv1.RolloutPolicy{
			Waves:            []hubv1.Wave{{Size: "50%"}},
			FailureThreshold: "20%",
		}},
		{name: "offline-vehicles", minutes: 30, cars: fleet(6, func(i int, c *car) {
			if i == 1 || i == 4 {
				c.offlineUntil = 25
			}
		}), policy: &hubv1.RolloutPolicy{
			Canary: &hubv1.Wave{Size: "2"},
			Waves:  []hubv1.Wave{{Size: "50%"}},
		}},
		{name: "canary-offline-deadline", minutes: 12, resumeAt: []int{8}, cars: fleet(4, func(i int, c *car) {
			c.offlineUntil = 10
		}), policy: &hubv1.RolloutPolicy{
			Canary:       &hubv1.Wave{Size: "1"},
			WaveDeadline: "5m",
		}},
		{name: "gates", minutes: 14, cars: fleet(4, func(i int, c *car) {
			c.gateUntil = []int{3, 0, 20, 6}[i]
		}), policy: &hubv1.RolloutPolicy{
			Canary:       &hubv1.Wave{Size: "2"},
			WaveDeadline: "8m",
			Gates:        []string{"parked"},
		}},
		{name: "late-join-and-superseded", minutes: 8, cars: fleet(4, func(i int, c *car) {
			if i == 3 {
				c.joinAt = 4
			}
			if i == 1 {
				c.newer = 1
			}
		}), policy: &hubv1.RolloutPolicy{
			Canary:   &hubv1.Wave{Size: "1"},
			BakeTime: "2m",
		}},
	}
}

// TestScenarios runs each scenario one Step a minute and compares the
// log of decisions with testdata/<name>.golden (-update rewrites them).
func TestScenarios(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			got := run(t, sc)
			path := filepath.Join("testdata", sc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", path, diff)
			}
		})
	}
}

func run(t *testing.T, sc scenario) string {
	t.Helper()
	pol, err := ParsePolicy(sc.policy, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(sc.cars))
	for id := range sc.cars {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var targets []Target
	for _, id := range ids {
		if sc.cars[id].joinAt == 0 {
			targets = append(targets, Target{ID: id, Labels: sc.cars[id].labels})
		}
	}
	r := hubv1.Rollout{Deployment: "uploader", Generation: 2, From: 1, Phase: hubv1.RolloutProgressing}
	var vs []hubv1.RolloutVehicle
	r.Waves, vs = Split(r.Deployment, pol, targets)
	var b strings.Builder
	fmt.Fprintf(&b, "split:")
	for w, wave := range r.Waves {
		var members []string
		for _, v := range vs {
			if v.Wave == w {
				members = append(members, v.Vehicle)
			}
		}
		fmt.Fprintf(&b, " %s=[%s]", wave.Name, strings.Join(members, " "))
	}
	b.WriteString("\n")
	released := map[string]int{} // vehicle → minute released
	last := ""
	for m := 0; m <= sc.minutes; m++ {
		now := t0.Add(time.Duration(m) * time.Minute)
		for _, id := range ids {
			if c := sc.cars[id]; c.joinAt == m && m > 0 {
				vs = append(vs, Join(&r, id))
				fmt.Fprintf(&b, "%02d join %s\n", m, id)
			}
		}
		if slices.Contains(sc.resumeAt, m) && r.Phase == hubv1.RolloutPaused {
			r = Resume(r, pol, now)
			fmt.Fprintf(&b, "%02d resume (tolerating %d)\n", m, r.Tolerated)
		}
		// The runner observes every vehicle: one not released yet is
		// seen as it would be if released now.
		obs := map[string]Observation{}
		for _, v := range vs {
			at, ok := released[v.Vehicle]
			if !ok {
				at = m
			}
			obs[v.Vehicle] = behave(sc.cars[v.Vehicle], m, at)
		}
		res := Step(r, pol, vs, obs, now)
		for _, id := range res.Released {
			released[id] = m
		}
		r, vs = res.Rollout, res.Vehicles
		// Each vehicle's state after the step, as the next observation
		// would find it (released vehicles answer from the next minute).
		// A line per minute in which something changed.
		line := fmt.Sprintf("%-11s %s", r.Phase, waves(r))
		if len(res.Released) > 0 {
			line += fmt.Sprintf(" released=[%s]", strings.Join(res.Released, " "))
		}
		if line != last {
			fmt.Fprintf(&b, "%02d %s\n", m, line)
			last = line
		}
		for _, e := range res.Events {
			fmt.Fprintf(&b, "   %s\n", e)
		}
	}
	return b.String()
}

// behave is what a car released at minute at reports at minute m.
func behave(c car, m, at int) Observation {
	slow := max(c.slow, 1)
	switch {
	case c.newer > 0 && m >= c.newer:
		return Observation{hubv1.VehicleSuperseded, "vehicle half runs generation 3"}
	case m < c.offlineUntil:
		return Observation{hubv1.VehicleOffline, "not seen within the online window"}
	case m < c.gateUntil:
		return Observation{hubv1.VehicleWaiting, "revision 7 waits for parked: parked is false"}
	case m < max(at, c.offlineUntil, c.gateUntil)+slow:
		return Observation{hubv1.VehicleApplying, "vehicle half revision 6 Applying"}
	case c.fails:
		return Observation{hubv1.VehicleFailed, "vehicle half revision 7: web not ready by 5m"}
	}
	return Observation{hubv1.VehicleHealthy, ""}
}

func waves(r hubv1.Rollout) string {
	var parts []string
	for _, w := range r.Waves {
		mark := "."
		switch {
		case w.Done != nil && w.BakeUntil != nil:
			mark = "baked-until-" + w.BakeUntil.Sub(t0).String()
		case w.Done != nil:
			mark = "done"
		case w.Started != nil:
			mark = "on"
		}
		var counts []string
		for _, s := range []string{hubv1.VehiclePending, hubv1.VehicleOffline, hubv1.VehicleApplying, hubv1.VehicleWaiting, hubv1.VehicleHealthy, hubv1.VehicleFailed, hubv1.VehicleSuperseded} {
			if n := w.Counts[s]; n > 0 {
				counts = append(counts, fmt.Sprintf("%s:%d", s, n))
			}
		}
		parts = append(parts, fmt.Sprintf("%s(%s %s)", w.Name, mark, strings.Join(counts, ",")))
	}
	out := strings.Join(parts, " ")
	if r.Reason != "" {
		out += " reason=" + r.Reason
	}
	return out
}
