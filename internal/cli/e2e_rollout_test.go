package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
)

// simCar is a simulated agent (simCar in internal/hub/rollout_test.go
// has the idea): it fetches its newest vehicle-half revision, without
// waiting, and reports it Healthy, or Failed when fail says so for the
// deployment generation it carries, with the deployments it carries.
type simCar struct {
	v    *hubtest.Vehicle
	rev  int64
	gens map[string]int64 // deployment → generation applied
	fail func(gen int64) bool
}

func (c *simCar) sync(t *testing.T, h *hubtest.Hub) {
	t.Helper()
	code, d := h.Desired(t, c.v, hubv1.HalfVehicle, c.rev, 0)
	if code != http.StatusOK {
		return
	}
	var s hubv1.DesiredState
	if err := json.Unmarshal(d.Envelope.Payload, &s); err != nil || s.Vehicle != c.v.ID || s.Revision != d.Revision {
		t.Fatalf("%s: desired revision %d: payload for %s revision %d (%v)", c.v.ID, d.Revision, s.Vehicle, s.Revision, err)
	}
	c.rev, c.gens = d.Revision, map[string]int64{}
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: d.Revision, Phase: hubv1.PhaseHealthy, AgentVersion: "test", Deployments: s.Deployments}
	for _, dr := range s.Deployments {
		c.gens[dr.Name] = dr.Generation
		if c.fail != nil && c.fail(dr.Generation) {
			rep.Phase = hubv1.PhaseFailed
			rep.Failure = &hubv1.Failure{Revision: d.Revision, Reason: dr.Name + " not ready by 5m", Deployments: []string{dr.Name}}
		}
	}
	if code, body := h.Do(t, c.v.Client, "", http.MethodPut, "/v1/vehicles/"+c.v.ID+"/reported", rep, nil); code != http.StatusNoContent {
		t.Fatalf("%s: report: %d %s", c.v.ID, code, body)
	}
}

// rolloutUntil syncs every car and reads the rollout with the CLI (-o
// json) until cond holds, for at most a minute.
func rolloutUntil(t *testing.T, h *hubtest.Hub, cars []*simCar, dep string, gen int64, what string, cond func(hubv1.Rollout) bool) hubv1.Rollout {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, c := range cars {
			c.sync(t, h)
		}
		var ro hubv1.Rollout
		okJSON(t, &ro, "rollout", "show", dep, fmt.Sprint(gen))
		if cond(ro) {
			return ro
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after 60s rollout %s/%d is %s %q, waves %+v, counts %v", what, dep, gen, ro.Phase, ro.Reason, ro.Waves, ro.Counts)
		}
		time.Sleep(100 * time.Millisecond) // the poll's pace; the deadline bounds it
	}
}

// field finds "Key:  value" in describe output.
func field(out, key string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `: +(.*)$`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestRolloutsEndToEnd drives a rollout through the CLI against the real
// hub with simulated vehicles: a deployment with a canary, a wave and a
// gate from flags; its waves; an operator's pause and resume; a failure
// that pauses it by itself, shown with the vehicle and why; a resume that
// rollout watch follows to completion; a newer generation aborted; deploy
// versions and rollbacks; the policy changed and dropped by deploy update;
// and bad rollout flags refused naming the flag.
func TestRolloutsEndToEnd(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	t.Setenv("MISAKI_CONFIG", filepath.Join(h.DataDir, "misaki.yaml"))
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	ok(t, "repo", "add", "charts", repo)
	big := hubv1.ResourceList{"cpu": "16", "memory": "64Gi"} // everything runs on the vehicle: one half to report
	var cars []*simCar
	for i := range 4 {
		cars = append(cars, &simCar{v: h.Enrol(t, fmt.Sprintf("car-%d", i+1), map[string]string{"fleet": "eu"}, big)})
	}
	create := []string{"deploy", "create", "shuttle", "--chart", "charts/shuttle", "--version", "1.0.0", "-l", "fleet=eu"}

	// Bad rollout flags: refused before anything is written, naming the flag.
	fails(t, 2, []string{`--wave "ten": want a size (5 or 10%) or selector:<selector>`}, append(create, "--wave", "ten")...)
	fails(t, 2, []string{"a wave by label selector is selector:tier=a"}, append(create, "--canary", "tier=a")...)
	fails(t, 1, []string{`"lots"`, "(field: rollout.failureThreshold, flag --failure-threshold)"}, append(create, "--failure-threshold", "lots")...)
	fails(t, 1, []string{"(field: rollout.gates[1], flag --gate)"}, append(create, "--gate", "parked", "--gate", "battery>>3")...)
	fails(t, 1, []string{"(field: rollout.waves, flag --wave)", "cumulative"}, append(create, "--wave", "50%", "--wave", "25%")...)
	fails(t, 1, []string{"(field: rollout.bakeTime, flag --bake-time)"}, append(create, "--bake-time", "soon")...)
	fails(t, 1, []string{"not found"}, "rollout", "show", "shuttle")

	// A canary of one vehicle, a wave up to half of them, then the rest.
	out := ok(t, append(create, "--canary", "1", "--wave", "50%", "--failure-threshold", "0", "--gate", "parked")...)
	if !strings.HasPrefix(out, "deployment/shuttle created") {
		t.Errorf("deploy create: %q", out)
	}
	out = ok(t, "deploy", "show", "shuttle")
	if !strings.Contains(out, "Rollout:            waves: canary=1, wave-2=50%, then the rest\n"+
		"                    max unavailable no cap, bake time 0, wave deadline 24h, failure threshold 0\n"+
		"                    gates: parked\n") {
		t.Errorf("deploy show: no rollout policy:\n%s", out)
	}
	var dep hubv1.Deployment
	okJSON(t, &dep, "deploy", "show", "shuttle")
	wantPolicy := &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "50%"}}, FailureThreshold: "0", Gates: []string{"parked"}}
	if diff := cmp.Diff(wantPolicy, dep.Rollout); diff != "" {
		t.Errorf("stored policy (-want +got):\n%s", diff)
	}

	// The hub splits the four vehicles: canary 1, wave-2 1 (up to 2), rest 2.
	rolloutUntil(t, h, nil, "shuttle", 1, "split", func(ro hubv1.Rollout) bool { return len(ro.Waves) == 3 })
	out = ok(t, "rollout", "show", "shuttle")
	if !hasRow(out, "0", "canary", "1") || !hasRow(out, "1", "wave-2", "1") || !hasRow(out, "2", "rest", "2", "2 pending") ||
		field(out, "Phase") != "Progressing" || field(out, "Generation") != "1 (a new deployment)" {
		t.Errorf("rollout show:\n%s", out)
	}

	// An operator's pause, before the canary answers.
	if out := ok(t, "rollout", "pause", "shuttle", "--reason", "checking the canary"); out != "rollout/shuttle/1 paused\n" {
		t.Errorf("rollout pause: %q", out)
	}
	out = ok(t, "rollout", "show", "shuttle", "1")
	if field(out, "Phase") != "Paused" || !regexp.MustCompile(`^paused by \S+: checking the canary$`).MatchString(field(out, "Reason")) {
		t.Errorf("rollout show after pause:\n%s", out)
	}
	if out := ok(t, "rollout", "list", "--active"); !hasRow(out, "shuttle", "1", "Paused") {
		t.Errorf("rollout list --active:\n%s", out)
	}
	fails(t, 1, []string{"rollout shuttle/1 is Paused: only a Progressing rollout can be paused", "(field: phase)"}, "rollout", "pause", "shuttle")
	if out := ok(t, "rollout", "resume", "shuttle", "1", "--reason", "looked fine"); out != "rollout/shuttle/1 resumed\n" {
		t.Errorf("rollout resume: %q", out)
	}

	// wave-2's vehicle fails: the rollout pauses by itself, and show names
	// the vehicle and why.
	var wave2 hubv1.List[hubv1.RolloutVehicle]
	okJSON(t, &wave2, "rollout", "vehicles", "shuttle", "1", "--wave", "wave-2")
	if len(wave2.Items) != 1 || wave2.Items[0].Wave != 1 {
		t.Fatalf("rollout vehicles --wave wave-2: %+v", wave2.Items)
	}
	bad := wave2.Items[0].Vehicle
	for _, c := range cars {
		if c.v.ID == bad {
			c.fail = func(gen int64) bool { return gen == 1 }
		}
	}
	ro := rolloutUntil(t, h, cars, "shuttle", 1, "auto-pause", func(ro hubv1.Rollout) bool {
		return ro.Phase == hubv1.RolloutPaused && ro.Counts[hubv1.VehicleFailed] == 1
	})
	out = ok(t, "rollout", "show", "shuttle")
	failedRow := regexp.MustCompile(`\nFailed vehicles:\nVEHICLE +WAVE +REASON\n` + regexp.QuoteMeta(bad) + ` +wave-2 +vehicle half revision \d+: shuttle not ready by 5m\n`)
	if !strings.Contains(field(out, "Reason"), bad) || !failedRow.MatchString(out) {
		t.Errorf("rollout show after the failure (reason %q):\n%s", ro.Reason, out)
	}
	if out := ok(t, "rollout", "vehicles", "shuttle", "1", "--state", "failed"); !hasRow(out, bad, "wave-2", "yes", "failed") {
		t.Errorf("rollout vehicles --state failed:\n%s", out)
	}
	fails(t, 2, []string{"--state broken: want pending, offline"}, "rollout", "vehicles", "shuttle", "--state", "broken")
	fails(t, 1, []string{"--wave late: rollout shuttle/1 has no wave late (its waves: canary, wave-2, rest)"}, "rollout", "vehicles", "shuttle", "--wave", "late")

	// Resumed, the failure tolerated: rollout watch follows it to the end
	// while the cars answer.
	if out := ok(t, "rollout", "resume", "shuttle"); out != "rollout/shuttle/1 resumed (1 failed vehicle tolerated)\n" {
		t.Errorf("rollout resume: %q", out)
	}
	var watchOut, watchErr bytes.Buffer
	watched := make(chan int, 1)
	go func() {
		watched <- Run(context.Background(), []string{"rollout", "watch", "shuttle", "--interval", "100ms", "--timeout", "60s"}, &watchOut, &watchErr)
	}()
	var code int
	for done := false; !done; {
		for _, c := range cars {
			c.sync(t, h)
		}
		select {
		case code = <-watched:
			done = true
		case <-time.After(100 * time.Millisecond): // the cars' pace; watch's --timeout bounds the loop
		}
	}
	if testing.Verbose() {
		t.Logf("$ misaki rollout watch shuttle --interval 100ms --timeout 60s\n%s%s(exit %d)", watchOut.String(), watchErr.String(), code)
	}
	lines := strings.Split(strings.TrimSuffix(watchOut.String(), "\n"), "\n")
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ rollout/shuttle/1 `)
	if code != 0 || len(lines) < 2 || !strings.Contains(lines[len(lines)-1], "Completed: waves 3/3 done; 4 vehicles: 3 healthy, 1 failed") {
		t.Errorf("rollout watch: exit %d, stderr %q, stdout:\n%s", code, watchErr.String(), watchOut.String())
	}
	for i, l := range lines {
		if !stamp.MatchString(l) {
			t.Errorf("rollout watch line %q: want a time and the rollout", l)
		}
		if i > 0 && l[21:] == lines[i-1][21:] {
			t.Errorf("rollout watch printed %q twice in a row", l[21:])
		}
	}
	if out := ok(t, "rollout", "list"); !hasRow(out, "shuttle", "1", "Completed", "3/3", "4", "3", "0", "1", "0") {
		t.Errorf("rollout list:\n%s", out)
	}
	if code, out, errOut := misaki(t, "rollout", "list", "--active"); code != 0 || out != "" || errOut != "No rollouts found.\n" {
		t.Errorf("rollout list --active with none: exit %d, %q, %q", code, out, errOut)
	}
	code, page, pageErr := misaki(t, "rollout", "vehicles", "shuttle", "1", "--limit", "1")
	if code != 0 || strings.Count(page, "\n") != 2 || !strings.Contains(pageErr, "--after ") {
		t.Errorf("rollout vehicles --limit 1: exit %d\n%s%s", code, page, pageErr)
	}
	var all hubv1.List[hubv1.RolloutVehicle]
	okJSON(t, &all, "rollout", "vehicles", "shuttle", "1", "--limit", "1", "--all")
	if len(all.Items) != 4 || all.Next != "" {
		t.Errorf("rollout vehicles --limit 1 --all: %+v", all)
	}
	fails(t, 1, []string{"rollout shuttle/1 is Completed: only a Progressing or Paused rollout can be aborted"}, "rollout", "abort", "shuttle")

	// Generation 2, aborted after its canary took it.
	if out := ok(t, "deploy", "update", "shuttle", "--set", "replicas=2"); out != "deployment/shuttle updated (generation 2)\n" {
		t.Errorf("deploy update: %q", out)
	}
	rolloutUntil(t, h, cars, "shuttle", 2, "generation 2 canary", func(ro hubv1.Rollout) bool { return len(ro.Waves) > 0 && ro.Waves[0].Done != nil })
	out = ok(t, "rollout", "abort", "shuttle", "--reason", "wrong values")
	if out != "rollout/shuttle/2 aborted: the vehicles it released go back to the generation they ran before\n" {
		t.Errorf("rollout abort: %q", out)
	}
	out = ok(t, "rollout", "show", "shuttle")
	if field(out, "Phase") != "Aborted" || !strings.HasSuffix(field(out, "Reason"), ": wrong values") || field(out, "Generation") != "2 (from generation 1)" {
		t.Errorf("rollout show after abort:\n%s", out)
	}
	fails(t, 1, []string{"only a Paused rollout can be resumed"}, "rollout", "resume", "shuttle", "2")
	fails(t, 1, []string{"rollout shuttle/2 Aborted: aborted by", "wrong values"}, "rollout", "watch", "shuttle", "--interval", "100ms")
	fails(t, 2, []string{`generation "two": want a number from 1`}, "rollout", "show", "shuttle", "two")

	// Back to generation 1's spec as generation 3, then to the one before
	// the current (generation 2's) as generation 4.
	out = ok(t, "deploy", "rollback", "shuttle", "--to", "1")
	if out != "deployment/shuttle rolled back: generation 3 has the spec of generation 1 (chart charts/shuttle 1.0.0)\n" {
		t.Errorf("deploy rollback --to 1: %q", out)
	}
	var vs hubv1.List[hubv1.Deployment]
	okJSON(t, &vs, "deploy", "versions", "shuttle")
	if len(vs.Items) != 3 || vs.Items[0].Generation != 3 || vs.Items[0].Values != nil || vs.Items[1].Values == nil || !cmp.Equal(vs.Items[0].Rollout, wantPolicy) {
		t.Errorf("deploy versions -o json: %+v", vs.Items)
	}
	out = ok(t, "deploy", "rollback", "shuttle")
	if out != "deployment/shuttle rolled back: generation 4 has the spec of generation 2 (chart charts/shuttle 1.0.0)\n" {
		t.Errorf("deploy rollback: %q", out)
	}
	out = ok(t, "deploy", "versions", "shuttle")
	if !hasRow(out, "GENERATION", "CHART", "VERSION", "SELECTOR", "ROLLOUT", "UPDATED", "BY") ||
		!hasRow(out, "4", "charts/shuttle", "1.0.0", "fleet=eu", "Progressing") || !hasRow(out, "3", "charts/shuttle", "1.0.0", "fleet=eu", "Superseded") ||
		!hasRow(out, "2", "charts/shuttle", "1.0.0", "fleet=eu", "Aborted") || !hasRow(out, "1", "charts/shuttle", "1.0.0", "fleet=eu", "Completed") {
		t.Errorf("deploy versions:\n%s", out)
	}
	fails(t, 1, []string{"(field: generation)"}, "deploy", "rollback", "shuttle", "--to", "9")
	fails(t, 2, []string{"--to 0: want a generation from 1"}, "deploy", "rollback", "shuttle", "--to", "0")

	// deploy update changes only the rollout flags given; --clear-rollout
	// drops the policy.
	ok(t, "deploy", "update", "shuttle", "--wave", "25%", "--wave", "late=selector:fleet=eu", "--gate", "", "--max-unavailable", "1")
	dep = hubv1.Deployment{}
	okJSON(t, &dep, "deploy", "show", "shuttle")
	want := &hubv1.RolloutPolicy{Canary: &hubv1.Wave{Size: "1"}, Waves: []hubv1.Wave{{Size: "25%"}, {Name: "late", Selector: "fleet=eu"}}, MaxUnavailable: "1", FailureThreshold: "0"}
	if diff := cmp.Diff(want, dep.Rollout); diff != "" || dep.Generation != 5 {
		t.Errorf("generation %d, policy after deploy update (-want +got):\n%s", dep.Generation, diff)
	}
	ok(t, "deploy", "update", "shuttle", "--clear-rollout")
	if out := ok(t, "deploy", "show", "shuttle"); field(out, "Rollout") != "none: every targeted vehicle at once, no gates" {
		t.Errorf("deploy show after --clear-rollout:\n%s", out)
	}
	if out := ok(t, "rollout", "list", "--deployment", "shuttle", "--limit", "2"); !hasRow(out, "shuttle", "6", "Progressing") || !hasRow(out, "shuttle", "5", "Superseded") || hasRow(out, "shuttle", "4") {
		t.Errorf("rollout list --deployment shuttle --limit 2:\n%s", out)
	}
}
