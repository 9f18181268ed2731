package system

import (
	"context"
	"fmt"
	"slices"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// cutOff is step 4: car-lo's link to the hub is cut; meanwhile the
// deployment changes twice. car-hi follows each change; car-lo keeps what
// it runs; when its link returns it goes straight to the newest revision.
func (d *run) cutOff(ctx context.Context) error {
	d.con.printf("\n== step 4: car-lo loses its link to the hub during a rollout, and comes back ==\n")
	var tw hubv1.Twin
	if err := d.hub.get(ctx, "/v1/vehicles/"+loVehicle, &tw); err != nil {
		return err
	}
	last, _ := desiredOf(tw, hubv1.HalfVehicle)
	logPath := d.agents[loVehicle].Log
	before, err := acceptedRevisions(logPath)
	if err != nil {
		return err
	}
	d.relays[loVehicle].Cut()
	d.con.say("car-lo's link to the hub is CUT: its agent keeps running revision %d and cannot reach the hub", last.Revision)

	var issued []int64 // car-lo's vehicle revisions the hub issued while it was away
	for i, model := range []string{"detector-v2", "detector-v3"} {
		gen := int64(3 + i)
		if _, err := d.hub.misaki(ctx, d.con, false, "deploy", "update", deployName, "--set", "model="+model); err != nil {
			return err
		}
		if _, err := d.waitHalf(ctx, hiVehicle, hubv1.HalfVehicle, gen); err != nil {
			d.chk.add("car-hi converged to each change while car-lo was cut off", false, err.Error())
			return err
		}
		prev := last.Revision
		if len(issued) > 0 {
			prev = issued[len(issued)-1]
		}
		err := poll(ctx, d.cfg.Timeout, d.hub.Proc, func() error {
			var tw hubv1.Twin
			if err := d.hub.get(ctx, "/v1/vehicles/"+loVehicle, &tw); err != nil {
				return err
			}
			if ds, _ := desiredOf(tw, hubv1.HalfVehicle); ds.Revision > prev {
				issued = append(issued, ds.Revision)
				return nil
			}
			return fmt.Errorf("the hub issued car-lo no revision above %d for generation %d", prev, gen)
		})
		if err != nil {
			return err
		}
		d.con.say("the hub signed revision %d for car-lo (generation %d); car-lo cannot fetch it", issued[len(issued)-1], gen)
	}
	d.chk.add("car-hi converged to each change while car-lo was cut off", true, "generations 3 and 4, model detector-v2 then detector-v3")

	model, err := d.deploymentEnv(ctx, loVehicle, appNS, "camera-uploader", "MODEL")
	during, rerr := acceptedRevisions(logPath)
	err = errs(err, rerr)
	during = tail(during, len(before))
	ok := err == nil && model == "detector-v1" && len(during) == 0
	d.chk.add("car-lo kept running what it had while cut off", ok,
		firstErr(err, fmt.Sprintf("MODEL=%s on cluster car-lo, revisions accepted while cut: %v", model, during)))

	d.relays[loVehicle].Restore()
	back := time.Now()
	d.con.say("car-lo's link is back: its agent reaches the hub at its next retry (its backoff grew while the link was down)")
	newest := issued[len(issued)-1]
	_, err = d.waitHalf(ctx, loVehicle, hubv1.HalfVehicle, 4)
	if err == nil {
		_, err = d.waitHalf(ctx, loVehicle, hubv1.HalfCloud, 4)
	}
	if err != nil {
		d.chk.add("car-lo converged to the newest revision when its link returned, never an intermediate one", false, err.Error())
		return err
	}
	after, err := acceptedRevisions(logPath)
	if err == nil {
		model, err = d.deploymentEnv(ctx, loVehicle, appNS, "camera-uploader", "MODEL")
	}
	got := tail(after, len(before))
	ok = err == nil && slices.Equal(got, []int64{newest}) && model == "detector-v3"
	d.chk.add("car-lo converged to the newest revision when its link returned, never an intermediate one", ok,
		firstErr(err, fmt.Sprintf("issued while away %v; accepted %v; MODEL=%s; %s after the link returned", issued, got, model, since(back))))

	// The rollouts: generation 3's was superseded by 4's, whose last wave
	// (car-lo, online but unreachable for the hub's online window) held it
	// until car-lo answered.
	r4, err := d.waitRollout(ctx, 4, hubv1.RolloutCompleted)
	var r3 hubv1.Rollout
	if err == nil {
		r3, err = d.rollout(ctx, 3)
	}
	if err == nil && r3.Phase != hubv1.RolloutSuperseded {
		err = fmt.Errorf("the rollout of generation 3 is %s, want %s", r3.Phase, hubv1.RolloutSuperseded)
	}
	d.chk.add("the rollout of generation 4 superseded 3's and completed once car-lo answered", err == nil,
		firstErr(err, fmt.Sprintf("generation 3 %s; generation 4 %s: %s", r3.Phase, r4.Phase, rolloutLine(r4))))
	_, err = d.hub.misaki(ctx, d.con, false, "rollout", "show", deployName)
	return err
}

// tail is s after its first n elements.
func tail(s []int64, n int) []int64 {
	if len(s) < n {
		return nil
	}
	return s[n:]
}
