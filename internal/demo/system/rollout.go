package system

import (
	"context"
	"fmt"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// canaryFlag makes the high-spec vehicle the video pipeline's canary wave;
// every other vehicle is the last wave ("rest"), released once the
// canary answered.
const canaryFlag = "selector:spec=high"

// rollout reads the rollout of generation gen of the deployment.
func (d *run) rollout(ctx context.Context, gen int64) (hubv1.Rollout, error) {
	var r hubv1.Rollout
	err := d.hub.get(ctx, fmt.Sprintf("/v1/deployments/%s/rollouts/%d", deployName, gen), &r)
	return r, err
}

// waitRollout waits until the rollout of generation gen is in phase.
func (d *run) waitRollout(ctx context.Context, gen int64, phase string) (hubv1.Rollout, error) {
	var r hubv1.Rollout
	err := poll(ctx, d.cfg.Timeout, d.hub.Proc, func() error {
		var err error
		if r, err = d.rollout(ctx, gen); err != nil {
			return err
		}
		if r.Phase != phase {
			return fmt.Errorf("rollout of generation %d is %s (%s), want %s", gen, r.Phase, rolloutLine(r), phase)
		}
		return nil
	})
	return r, err
}

// checkCanaryFirst judges the rollout of generation gen: completed, with
// the high-spec vehicle alone in the canary wave and the low-spec one
// released only after the canary wave was done.
func (d *run) checkCanaryFirst(ctx context.Context, gen int64) {
	name := fmt.Sprintf("rollout of generation %d completed: car-hi as the canary, then car-lo", gen)
	r, err := d.waitRollout(ctx, gen, hubv1.RolloutCompleted)
	if err != nil {
		d.chk.add(name, false, err.Error())
		return
	}
	var vs hubv1.List[hubv1.RolloutVehicle]
	if err := d.hub.get(ctx, fmt.Sprintf("/v1/deployments/%s/rollouts/%d/vehicles", deployName, gen), &vs); err != nil {
		d.chk.add(name, false, err.Error())
		return
	}
	wave := map[string]int{}
	for _, v := range vs.Items {
		wave[v.Vehicle] = v.Wave
	}
	var problems []string
	if len(r.Waves) != 2 || r.Waves[0].Name != "canary" {
		problems = append(problems, fmt.Sprintf("waves %s, want canary then rest", rolloutLine(r)))
	} else {
		c, rest := r.Waves[0], r.Waves[1]
		if c.Done == nil || rest.Started == nil || rest.Started.Before(*c.Done) {
			problems = append(problems, "the last wave started before the canary was done")
		}
	}
	if w, ok := wave[hiVehicle]; !ok || w != 0 {
		problems = append(problems, "car-hi is not in the canary wave")
	}
	if w, ok := wave[loVehicle]; !ok || w != 1 {
		problems = append(problems, "car-lo is not in the second wave")
	}
	detail := rolloutLine(r)
	if len(problems) > 0 {
		detail += ": " + strings.Join(problems, "; ")
	}
	d.chk.add(name, len(problems) == 0, detail)
}

// rolloutLine summarises a rollout's waves: "canary 1 healthy (done),
// rest 1 applying".
func rolloutLine(r hubv1.Rollout) string {
	var ws []string
	for _, w := range r.Waves {
		s := fmt.Sprintf("%s %d", w.Name, w.Vehicles)
		for _, st := range []string{hubv1.VehiclePending, hubv1.VehicleOffline, hubv1.VehicleApplying, hubv1.VehicleWaiting,
			hubv1.VehicleHealthy, hubv1.VehicleFailed, hubv1.VehicleSuperseded} {
			if n := w.Counts[st]; n > 0 {
				s += fmt.Sprintf(" %s×%d", st, n)
			}
		}
		if w.Done != nil {
			s += " (done)"
		}
		ws = append(ws, s)
	}
	if len(ws) == 0 {
		return "no waves yet"
	}
	return strings.Join(ws, ", ")
}

// rolloutSummary is the live summary's part for the deployment's newest
// rollout.
func (d *run) rolloutSummary(ctx context.Context) string {
	var dep hubv1.Deployment
	if err := d.hub.get(ctx, "/v1/deployments/"+deployName, &dep); err != nil {
		return ""
	}
	r, err := d.rollout(ctx, dep.Generation)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("rollout gen %d %s: %s", r.Generation, r.Phase, rolloutLine(r))
}
