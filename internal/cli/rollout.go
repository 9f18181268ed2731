package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var rolloutCommands = []*command{
	{
		group: "rollout", name: "list", aliases: []string{"ls"},
		summary: "List rollouts, newest first",
		help: `The rollouts of every deployment (or of --deployment's), newest first, at
most --limit; --active lists only Progressing and Paused ones. WAVES is
the waves done of all; VEHICLES the vehicles the rollout targets, then how
many are healthy, updating (applying, or waiting for a vehicle-state
gate), failed and offline (the others are pending or superseded: misaki
rollout show has every state). REASON says why a rollout is paused,
aborted or superseded.

Examples:
  misaki rollout list --active
  misaki rollout list --deployment shuttle -o json`,
		run: rolloutList,
	},
	{
		group: "rollout", name: "show", aliases: []string{"get", "describe", "status"}, args: "<deployment> [generation]",
		summary: "Show a rollout: phase and why, its waves and their vehicles per state, failed vehicles",
		help: `Without a generation, the deployment's newest rollout. Prints the phase
and why (a pause by the failure threshold names the vehicle that failed
and its reason), the policy, the vehicles per state, then a row per wave:
its vehicles per state, when it started, when it was done and when the
next wave may start (BAKE-UNTIL); then the failed vehicles and why (the
first 50: misaki rollout vehicles <deployment> --state failed --all lists
every one). -o json or -o yaml print the rollout as the hub serves it.
docs/rollouts.md says what each phase and state means.

Examples:
  misaki rollout show shuttle
  misaki rollout show shuttle 3 -o yaml`,
		run: rolloutShow,
	},
	{
		group: "rollout", name: "vehicles", args: "<deployment> [generation]",
		summary: "List a rollout's vehicles: wave, released, state and why",
		help: `Without a generation, the deployment's newest rollout. One page at a time
(--limit per page); the command says how to get the next, and --all
follows every page. --wave is a wave's index (0 is the first) or its name
(canary, wave-2, rest, ...). The states: pending (not released yet),
offline (released, not seen), applying, waiting (for a vehicle-state
gate), healthy, failed, superseded (runs a newer generation).

Examples:
  misaki rollout vehicles shuttle --state failed --all
  misaki rollout vehicles shuttle 3 --wave canary`,
		run: rolloutVehicles,
	},
	{
		group: "rollout", name: "pause", args: "<deployment> [generation]",
		summary: "Pause a rollout: no more vehicles are released",
		help: `Only a Progressing rollout can be paused; the vehicles already released
keep the new generation. Without a generation, the deployment's newest
rollout. --reason goes into the rollout's reason and the audit log.

Example:
  misaki rollout pause shuttle --reason 'battery drain on the canary'`,
		run: rolloutAction("pause"),
	},
	{
		group: "rollout", name: "resume", args: "<deployment> [generation]",
		summary: "Resume a paused rollout",
		help: `Resumes a Paused rollout, paused by an operator or by its failure
threshold: the failures so far are tolerated (the threshold counts the
ones after), and a wave past its deadline is closed. Without a
generation, the deployment's newest rollout.

Example:
  misaki rollout resume shuttle --reason 'car-7 has a known sensor fault'`,
		run: rolloutAction("resume"),
	},
	{
		group: "rollout", name: "abort", args: "<deployment> [generation]",
		summary: "Abort a rollout: the vehicles it released go back",
		help: `Stops a Progressing or Paused rollout for good: the vehicles it released
go back to the generation they ran before. A completed rollout is undone
with misaki deploy rollback instead. Without a generation, the
deployment's newest rollout.

Example:
  misaki rollout abort shuttle --reason 'wrong values'`,
		run: rolloutAction("abort"),
	},
	{
		group: "rollout", name: "watch", args: "<deployment> [generation]",
		summary: "Follow a rollout until it ends, a line per change",
		help: `Reads the rollout every --interval and prints a line when its phase,
reason, waves or vehicle counts change, until the rollout ends: exit 0
when it completes, 1 when it is aborted or superseded, or when --timeout
passes first. A paused rollout is followed on (it may be resumed); Ctrl-C
stops. Without a generation, the deployment's newest rollout. -o json
prints the rollout at each change as one JSON object per line, -o yaml
as YAML documents.

Example:
  misaki deploy update shuttle --version 1.1.0 && misaki rollout watch shuttle --timeout 2h`,
		run: rolloutWatch,
	},
}

// displayStates are the vehicle states of a rollout in the order counts
// print them.
var displayStates = []string{
	hubv1.VehicleHealthy, hubv1.VehicleApplying, hubv1.VehicleWaiting, hubv1.VehicleFailed,
	hubv1.VehicleOffline, hubv1.VehiclePending, hubv1.VehicleSuperseded,
}

// failedShown is how many failed vehicles rollout show lists.
const failedShown = 50

// rolloutArgs reads "<deployment> [generation]"; generation 0 is the
// deployment's newest rollout.
func rolloutArgs(pos []string) (string, int64, error) {
	if len(pos) < 2 {
		return pos[0], 0, nil
	}
	g, err := strconv.ParseInt(pos[1], 10, 64)
	if err != nil || g < 1 {
		return "", 0, usagef("generation %q: want a number from 1", pos[1])
	}
	return pos[0], g, nil
}

func rolloutPath(dep string, gen int64) string {
	return "/v1/deployments/" + pathEscape(dep) + "/rollouts/" + strconv.FormatInt(gen, 10)
}

// rollout reads deployment dep's rollout of generation gen, or its
// newest for 0.
func (c *client) rollout(ctx context.Context, dep string, gen int64) (hubv1.Rollout, error) {
	var ro hubv1.Rollout
	if gen > 0 {
		err := c.get(ctx, rolloutPath(dep, gen), nil, &ro)
		return ro, err
	}
	var l hubv1.List[hubv1.Rollout]
	if err := c.get(ctx, "/v1/deployments/"+pathEscape(dep)+"/rollouts", url.Values{"limit": {"1"}}, &l); err != nil {
		return ro, err
	}
	if len(l.Items) == 0 {
		return ro, fmt.Errorf("deployment %s has no rollout", dep)
	}
	return l.Items[0], nil
}

func rolloutList(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	dep := fs.String("deployment", "", "only this `deployment`'s rollouts")
	active := fs.Bool("active", false, "only Progressing and Paused rollouts")
	limit := fs.Int("limit", 50, "at most this many rollouts (newest first)")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *limit < 1 {
		return usagef("--limit %d: want 1 or more", *limit)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var l hubv1.List[hubv1.Rollout]
	switch {
	case *active:
		// Few rollouts are active at once: read them all, then keep the
		// deployment's (its own list has no active filter).
		l, err = listAll[hubv1.Rollout](ctx, c, "/v1/rollouts", url.Values{"active": {"true"}}, 1000, 0)
		if *dep != "" {
			l.Items = slices.DeleteFunc(l.Items, func(ro hubv1.Rollout) bool { return ro.Deployment != *dep })
		}
		l.Items = l.Items[:min(len(l.Items), *limit)]
	case *dep != "":
		l, err = listAll[hubv1.Rollout](ctx, c, "/v1/deployments/"+pathEscape(*dep)+"/rollouts", nil, min(*limit, 1000), *limit)
	default:
		l, err = listAll[hubv1.Rollout](ctx, c, "/v1/rollouts", nil, min(*limit, 1000), *limit)
	}
	if err != nil {
		return err
	}
	return showList(e, l, "rollouts", rolloutHeader, e.rolloutRow)
}

var rolloutHeader = []string{"DEPLOYMENT", "GENERATION", "PHASE", "WAVES", "VEHICLES", "HEALTHY", "UPDATING", "FAILED", "OFFLINE", "AGE", "REASON"}

func (e *env) rolloutRow(ro hubv1.Rollout) []string {
	n := ro.Counts
	return []string{ro.Deployment, fmt.Sprint(ro.Generation), ro.Phase, wavesDone(ro), fmt.Sprint(vehicleTotal(n)),
		fmt.Sprint(n[hubv1.VehicleHealthy]), fmt.Sprint(n[hubv1.VehicleApplying] + n[hubv1.VehicleWaiting]),
		fmt.Sprint(n[hubv1.VehicleFailed]), fmt.Sprint(n[hubv1.VehicleOffline]), e.since(ro.Created), orDash(truncate(ro.Reason, 60))}
}

// wavesDone is "done/all", or "-" before the hub split the vehicles.
func wavesDone(ro hubv1.Rollout) string {
	if len(ro.Waves) == 0 {
		return "-"
	}
	done := 0
	for _, w := range ro.Waves {
		if w.Done != nil {
			done++
		}
	}
	return fmt.Sprintf("%d/%d", done, len(ro.Waves))
}

func vehicleTotal(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// stateCounts is "4 healthy, 1 failed, 1 offline": the states with
// vehicles, in displayStates order (others after, sorted); "" for none.
func stateCounts(counts map[string]int) string {
	var out []string
	add := func(st string) {
		if n := counts[st]; n > 0 {
			out = append(out, fmt.Sprintf("%d %s", n, st))
		}
	}
	for _, st := range displayStates {
		add(st)
	}
	for _, st := range slices.Sorted(maps.Keys(counts)) {
		if !slices.Contains(displayStates, st) {
			add(st)
		}
	}
	return strings.Join(out, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// truncate cuts s to at most n runes, marking the cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// waveName is the name of a rollout's wave i, or its index.
func waveName(ro hubv1.Rollout, i int) string {
	if i >= 0 && i < len(ro.Waves) && ro.Waves[i].Name != "" {
		return ro.Waves[i].Name
	}
	return strconv.Itoa(i)
}

func rolloutShow(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags(), args, 1, 2)
	if err != nil {
		return err
	}
	dep, gen, err := rolloutArgs(pos)
	if err != nil {
		return err
	}
	ro, err := c.rollout(ctx, dep, gen)
	if err != nil {
		return err
	}
	if e.g.output != "table" {
		return e.show(ro, nil)
	}
	var failed hubv1.List[hubv1.RolloutVehicle]
	if ro.Counts[hubv1.VehicleFailed] > 0 {
		q := url.Values{"state": {hubv1.VehicleFailed}, "limit": {strconv.Itoa(failedShown)}}
		if err := c.get(ctx, rolloutPath(dep, ro.Generation)+"/vehicles", q, &failed); err != nil {
			return err
		}
	}
	return e.writeRollout(e.stdout, ro, failed)
}

// writeRollout prints a rollout as rollout show does: its fields, a row
// per wave, and failed, its failed vehicles (a first page).
func (e *env) writeRollout(w io.Writer, ro hubv1.Rollout, failed hubv1.List[hubv1.RolloutVehicle]) error {
	f := &fields{}
	f.add("Deployment", ro.Deployment)
	gen := fmt.Sprintf("%d (from generation %d)", ro.Generation, ro.From)
	if ro.From == 0 {
		gen = fmt.Sprintf("%d (a new deployment)", ro.Generation)
	}
	f.add("Generation", gen)
	f.add("Phase", ro.Phase)
	f.add("Reason", ro.Reason)
	f.add("Policy", describePolicy(&ro.Policy))
	vehicles := fmt.Sprint(vehicleTotal(ro.Counts))
	if s := stateCounts(ro.Counts); s != "" {
		vehicles += ": " + s
	}
	f.add("Vehicles", vehicles)
	if ro.Tolerated > 0 {
		f.add("Tolerated", fmt.Sprintf("%d failed at the last resume (the threshold counts failures beyond them)", ro.Tolerated))
	}
	created := e.ago(&ro.Created)
	if ro.CreatedBy != "" {
		created += " by " + ro.CreatedBy
	}
	f.add("Created", created)
	f.add("Updated", e.ago(&ro.Updated))
	if err := f.write(w); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nWaves:")
	if len(ro.Waves) == 0 {
		fmt.Fprintln(w, "  <none yet: the hub splits the targeted vehicles when it first steps the rollout>")
	} else {
		t := newTable("WAVE", "NAME", "VEHICLES", "STATES", "STARTED", "DONE", "BAKE-UNTIL")
		for i, wv := range ro.Waves {
			t.add(strconv.Itoa(i), wv.Name, strconv.Itoa(wv.Vehicles), orDash(stateCounts(wv.Counts)),
				e.relative(wv.Started), e.relative(wv.Done), e.relative(wv.BakeUntil))
		}
		if err := t.write(w); err != nil {
			return err
		}
	}

	if len(failed.Items) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nFailed vehicles:")
	t := newTable("VEHICLE", "WAVE", "REASON")
	for _, v := range failed.Items {
		t.add(v.Vehicle, waveName(ro, v.Wave), v.Reason)
	}
	if err := t.write(w); err != nil {
		return err
	}
	if failed.Next != "" {
		_, err := fmt.Fprintf(w, "More failed vehicles: misaki rollout vehicles %s %d --state failed --all lists every one.\n",
			ro.Deployment, ro.Generation)
		return err
	}
	return nil
}

func rolloutVehicles(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state := fs.String("state", "", "only vehicles in this `state`: pending, offline, applying, waiting, healthy, failed or superseded")
	wave := fs.String("wave", "", "only the vehicles of this `wave`: its index (0 is the first) or name")
	released := fs.Bool("released", false, "only the vehicles released to the rollout's generation")
	limit := fs.Int("limit", 100, "vehicles per page, 1 to 1000")
	all := fs.Bool("all", false, "follow every page")
	after := fs.String("after", "", "start after this `cursor` (the next page of an earlier list)")
	pos, err := e.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	dep, gen, err := rolloutArgs(pos)
	if err != nil {
		return err
	}
	if *state != "" && !slices.Contains(displayStates, *state) {
		return usagef("--state %s: want pending, offline, applying, waiting, healthy, failed or superseded", *state)
	}
	if *limit < 1 || *limit > 1000 {
		return usagef("--limit %d: want 1 to 1000", *limit)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	// The rollout names the waves (and is the newest without a generation).
	ro, err := c.rollout(ctx, dep, gen)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *wave != "" {
		i, err := waveIndex(ro, *wave)
		if err != nil {
			return err
		}
		q.Set("wave", strconv.Itoa(i))
	}
	if *state != "" {
		q.Set("state", *state)
	}
	if *released {
		q.Set("released", "true")
	}
	if *after != "" {
		q.Set("after", *after)
	}
	path := rolloutPath(dep, ro.Generation) + "/vehicles"
	var l hubv1.List[hubv1.RolloutVehicle]
	if *all {
		l, err = listAll[hubv1.RolloutVehicle](ctx, c, path, q, *limit, 0)
	} else {
		q.Set("limit", strconv.Itoa(*limit))
		err = c.get(ctx, path, q, &l)
	}
	if err != nil {
		return err
	}
	err = showList(e, l, "vehicles", []string{"VEHICLE", "WAVE", "RELEASED", "STATE", "REASON"},
		func(v hubv1.RolloutVehicle) []string {
			return []string{v.Vehicle, waveName(ro, v.Wave), yesNo(v.Released), v.State, orDash(v.Reason)}
		})
	if err == nil && l.Next != "" && e.g.output == "table" {
		fmt.Fprintf(e.stderr, "More vehicles: add --after %s for the next page, or --all.\n", l.Next)
	}
	return err
}

// waveIndex reads --wave: an index, or the name of one of ro's waves.
func waveIndex(ro hubv1.Rollout, s string) (int, error) {
	if i, err := strconv.Atoi(s); err == nil {
		if i < 0 || len(ro.Waves) > 0 && i >= len(ro.Waves) {
			return 0, fmt.Errorf("--wave %d: rollout %s/%d has waves 0 to %d", i, ro.Deployment, ro.Generation, len(ro.Waves)-1)
		}
		return i, nil
	}
	var names []string
	for i, w := range ro.Waves {
		if w.Name == s {
			return i, nil
		}
		names = append(names, w.Name)
	}
	if len(names) == 0 {
		return 0, fmt.Errorf("--wave %s: rollout %s/%d has no waves yet", s, ro.Deployment, ro.Generation)
	}
	return 0, fmt.Errorf("--wave %s: rollout %s/%d has no wave %s (its waves: %s)", s, ro.Deployment, ro.Generation, s, strings.Join(names, ", "))
}

// rolloutAction is the run of rollout pause, resume or abort.
func rolloutAction(action string) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		fs := e.flags()
		reason := fs.String("reason", "", "why: it goes into the rollout's reason and the audit log")
		pos, err := e.parse(fs, args, 1, 2)
		if err != nil {
			return err
		}
		dep, gen, err := rolloutArgs(pos)
		if err != nil {
			return err
		}
		c, err := e.hub()
		if err != nil {
			return err
		}
		if gen == 0 {
			ro, err := c.rollout(ctx, dep, 0)
			if err != nil {
				return err
			}
			gen = ro.Generation
		}
		var got hubv1.Rollout
		if err := c.do(ctx, http.MethodPost, rolloutPath(dep, gen)+"/"+action, nil, hubv1.RolloutAction{Reason: *reason}, &got); err != nil {
			return err
		}
		var done string
		switch action {
		case "pause":
			done = "paused"
		case "resume":
			done = "resumed"
			if got.Tolerated > 0 {
				done += fmt.Sprintf(" (%d failed %s tolerated)", got.Tolerated, plural(got.Tolerated, "vehicle", "vehicles"))
			}
		case "abort":
			done = "aborted: the vehicles it released go back to the generation they ran before"
		}
		return e.showLine(got, "rollout/%s/%d %s", got.Deployment, got.Generation, done)
	}
}

func rolloutWatch(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	interval := fs.Duration("interval", 2*time.Second, "how often to read the rollout")
	timeout := fs.Duration("timeout", 0, "give up after this `duration`, exit 1 (0: wait until the rollout ends)")
	pos, err := e.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	dep, gen, err := rolloutArgs(pos)
	if err != nil {
		return err
	}
	if *interval <= 0 {
		return usagef("--interval %s: want a positive duration", *interval)
	}
	if *timeout < 0 {
		return usagef("--timeout %s: want a positive duration, or 0 for none", *timeout)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	wctx := ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	// stopped is the end of a watch the context ended: Ctrl-C is the
	// user's way out, --timeout a failure.
	stopped := func(ro hubv1.Rollout) error {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("rollout %s/%d still %s after --timeout %s", dep, ro.Generation, ro.Phase, *timeout)
	}
	ro, err := c.rollout(wctx, dep, gen)
	if err != nil {
		if wctx.Err() != nil {
			return stopped(hubv1.Rollout{Generation: gen, Phase: "unread"})
		}
		return err
	}
	gen = ro.Generation
	var last, lastErr string
	for {
		if line := watchLine(ro); line != last {
			last = line
			if err := e.watchPrint(ro, line); err != nil {
				return err
			}
		}
		switch ro.Phase {
		case hubv1.RolloutCompleted:
			return nil
		case hubv1.RolloutAborted, hubv1.RolloutSuperseded:
			return fmt.Errorf("rollout %s/%d %s: %s", dep, gen, ro.Phase, orDash(ro.Reason))
		}
		t := time.NewTimer(*interval)
		select {
		case <-wctx.Done():
			t.Stop()
			return stopped(ro)
		case <-t.C:
		}
		var next hubv1.Rollout
		err := c.get(wctx, rolloutPath(dep, gen), nil, &next)
		var ae *apiError
		switch {
		case wctx.Err() != nil:
			return stopped(ro)
		case errors.As(err, &ae) && ae.status < 500:
			return err // gone, or no longer allowed: waiting will not help
		case err != nil:
			// The hub restarting, say: try again at the next tick.
			if msg := describe(err); msg != lastErr {
				lastErr = msg
				fmt.Fprintf(e.stderr, "warning: %s (retrying every %s)\n", msg, *interval)
			}
			continue
		}
		ro, lastErr = next, ""
	}
}

// watchLine is what rollout watch prints for ro, without the time: it
// prints again when this changes.
func watchLine(ro hubv1.Rollout) string {
	s := fmt.Sprintf("rollout/%s/%d %s: waves %s done", ro.Deployment, ro.Generation, ro.Phase, wavesDone(ro))
	for i, w := range ro.Waves {
		if w.Done != nil {
			continue
		}
		switch {
		case w.Started != nil:
			s += "; " + w.Name + " releasing"
		case i > 0 && ro.Waves[i-1].BakeUntil != nil:
			s += fmt.Sprintf("; %s after %s", w.Name, ro.Waves[i-1].BakeUntil.UTC().Format(time.RFC3339))
		}
		break
	}
	s += fmt.Sprintf("; %d vehicles", vehicleTotal(ro.Counts))
	if c := stateCounts(ro.Counts); c != "" {
		s += ": " + c
	}
	if ro.Reason != "" {
		s += " (" + ro.Reason + ")"
	}
	return s
}

// watchPrint prints one change: the time and line, or ro as -o asks.
func (e *env) watchPrint(ro hubv1.Rollout, line string) error {
	switch e.g.output {
	case "json":
		b, err := json.Marshal(ro)
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		_, err = e.stdout.Write(append(b, '\n'))
		return err
	case "yaml":
		b, err := yaml.Marshal(ro)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = fmt.Fprintf(e.stdout, "---\n%s", b)
		return err
	}
	_, err := fmt.Fprintf(e.stdout, "%s %s\n", e.now().UTC().Format(time.RFC3339), line)
	return err
}
