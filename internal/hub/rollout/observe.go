package rollout

import (
	"fmt"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Observe says where a released vehicle is with generation gen of
// deployment dep, from its reports (one per half; the vehicle half is
// needed, the cloud half counts when there is one). present is whether
// that generation's selector targets the vehicle: false means the rollout
// removes the deployment from it, and the vehicle is at the generation
// once its applied revision no longer has the deployment.
//
// The vehicle is healthy when every half runs the generation and is
// Healthy; failed when a half runs it and failed it (or refused the
// revision that would bring it); superseded when a half runs a newer
// generation; offline when the hub has not seen it within its online
// window; waiting when its agent waits for a vehicle-state gate; applying
// otherwise.
func Observe(dep string, gen int64, present, online bool, reports []hubv1.Reported) Observation {
	var vehicle *hubv1.Reported
	for i := range reports {
		if reports[i].Half == hubv1.HalfVehicle {
			vehicle = &reports[i]
		}
	}
	if vehicle == nil {
		if !online {
			return Observation{hubv1.VehicleOffline, "no report yet"}
		}
		return Observation{hubv1.VehicleApplying, "no report yet"}
	}
	at := true
	for _, r := range reports {
		g := generationOf(r, dep)
		if g > gen {
			return Observation{hubv1.VehicleSuperseded, fmt.Sprintf("%s half runs generation %d", r.Half, g)}
		}
		if present && g != gen || !present && g != 0 {
			at = false
		}
	}
	if at {
		for _, r := range reports {
			if r.Phase == hubv1.PhaseFailed && r.Failure != nil && (len(r.Failure.Deployments) == 0 || contains(r.Failure.Deployments, dep)) {
				return Observation{hubv1.VehicleFailed, fmt.Sprintf("%s half revision %d: %s", r.Half, r.Failure.Revision, r.Failure.Reason)}
			}
		}
		healthy := true
		for _, r := range reports {
			if r.Phase != hubv1.PhaseHealthy {
				healthy = false
			}
		}
		if healthy {
			return Observation{hubv1.VehicleHealthy, ""}
		}
	} else {
		for _, r := range reports {
			if r.Refused != nil && r.Refused.Revision > r.AppliedRevision {
				return Observation{hubv1.VehicleFailed, fmt.Sprintf("%s half refused revision %d: %s", r.Half, r.Refused.Revision, r.Refused.Reason)}
			}
		}
	}
	if !online {
		return Observation{hubv1.VehicleOffline, "not seen within the online window"}
	}
	for _, r := range reports {
		if r.Phase == hubv1.PhaseWaiting {
			return Observation{hubv1.VehicleWaiting, waitingFor(r)}
		}
	}
	var phases []string
	for _, r := range reports {
		phase := r.Phase
		if phase == "" {
			phase = "no phase"
		}
		phases = append(phases, fmt.Sprintf("%s half revision %d %s", r.Half, r.AppliedRevision, phase))
	}
	return Observation{hubv1.VehicleApplying, strings.Join(phases, ", ")}
}

// generationOf is the deployment's generation in the report's applied
// revision (0: not there).
func generationOf(r hubv1.Reported, dep string) int64 {
	for _, d := range r.Deployments {
		if d.Name == dep {
			return d.Generation
		}
	}
	return 0
}

func waitingFor(r hubv1.Reported) string {
	var gates []string
	for _, g := range r.Gates {
		if !g.Holds {
			s := g.Name
			if g.Reason != "" {
				s += ": " + g.Reason
			}
			gates = append(gates, s)
		}
	}
	if len(gates) == 0 {
		return fmt.Sprintf("revision %d waits for its gates", r.Waiting)
	}
	return fmt.Sprintf("revision %d waits for %s", r.Waiting, strings.Join(gates, "; "))
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
