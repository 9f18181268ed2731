package rollout

import (
	"testing"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

func TestObserve(t *testing.T) {
	at := func(half string, gen int64, phase string) hubv1.Reported {
		r := hubv1.Reported{Half: half, AppliedRevision: 7, Phase: phase}
		if gen > 0 {
			r.Deployments = []hubv1.DeploymentRevision{{Name: "other", Generation: 9}, {Name: "web", Generation: gen}}
		}
		return r
	}
	failed := func(r hubv1.Reported, deps ...string) hubv1.Reported {
		r.Failure = &hubv1.Failure{Revision: 7, Reason: "web not ready by 5m", Deployments: deps}
		return r
	}
	waiting := at(hubv1.HalfVehicle, 1, hubv1.PhaseWaiting)
	waiting.Waiting = 8
	waiting.Gates = []hubv1.GateState{{Name: "parked", Holds: false, Reason: "parked is false"}, {Name: "battery>=30", Holds: true}}
	refused := at(hubv1.HalfVehicle, 1, hubv1.PhaseHealthy)
	refused.Refused = &hubv1.Refusal{Revision: 8, Reason: "expired"}
	for _, tc := range []struct {
		name    string
		present bool
		online  bool
		reports []hubv1.Reported
		want    Observation
	}{
		{"no report, online", true, true, nil, Observation{hubv1.VehicleApplying, "no report yet"}},
		{"no report, offline", true, false, nil, Observation{hubv1.VehicleOffline, "no report yet"}},
		{"healthy", true, true, []hubv1.Reported{at(hubv1.HalfVehicle, 2, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleHealthy, ""}},
		{"healthy while offline", true, false, []hubv1.Reported{at(hubv1.HalfVehicle, 2, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleHealthy, ""}},
		{"both halves healthy", true, true, []hubv1.Reported{at(hubv1.HalfVehicle, 2, hubv1.PhaseHealthy), at(hubv1.HalfCloud, 2, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleHealthy, ""}},
		{"cloud half behind", true, true, []hubv1.Reported{at(hubv1.HalfVehicle, 2, hubv1.PhaseHealthy), at(hubv1.HalfCloud, 1, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleApplying, "vehicle half revision 7 Healthy, cloud half revision 7 Healthy"}},
		{"progressing", true, true, []hubv1.Reported{at(hubv1.HalfVehicle, 2, hubv1.PhaseProgressing)}, Observation{hubv1.VehicleApplying, "vehicle half revision 7 Progressing"}},
		{"old generation", true, true, []hubv1.Reported{at(hubv1.HalfVehicle, 1, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleApplying, "vehicle half revision 7 Healthy"}},
		{"old generation, offline", true, false, []hubv1.Reported{at(hubv1.HalfVehicle, 1, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleOffline, "not seen within the online window"}},
		{"failed, this deployment", true, true, []hubv1.Reported{failed(at(hubv1.HalfVehicle, 2, hubv1.PhaseFailed), "web")}, Observation{hubv1.VehicleFailed, "vehicle half revision 7: web not ready by 5m"}},
		{"failed, whole revision", true, true, []hubv1.Reported{failed(at(hubv1.HalfVehicle, 2, hubv1.PhaseFailed))}, Observation{hubv1.VehicleFailed, "vehicle half revision 7: web not ready by 5m"}},
		{"failed, another deployment", true, true, []hubv1.Reported{failed(at(hubv1.HalfVehicle, 2, hubv1.PhaseFailed), "other")}, Observation{hubv1.VehicleApplying, "vehicle half revision 7 Failed"}},
		{"waiting for a gate", true, true, []hubv1.Reported{waiting}, Observation{hubv1.VehicleWaiting, "revision 8 waits for parked: parked is false"}},
		{"refused", true, true, []hubv1.Reported{refused}, Observation{hubv1.VehicleFailed, "vehicle half refused revision 8: expired"}},
		{"newer generation", true, true, []hubv1.Reported{at(hubv1.HalfVehicle, 3, hubv1.PhaseProgressing)}, Observation{hubv1.VehicleSuperseded, "vehicle half runs generation 3"}},
		{"removed", false, true, []hubv1.Reported{at(hubv1.HalfVehicle, 0, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleHealthy, ""}},
		{"not removed yet", false, true, []hubv1.Reported{at(hubv1.HalfVehicle, 1, hubv1.PhaseHealthy)}, Observation{hubv1.VehicleApplying, "vehicle half revision 7 Healthy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Observe("web", 2, tc.present, tc.online, tc.reports); got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
