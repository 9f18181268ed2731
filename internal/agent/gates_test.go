package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/ledger"
)

// Which gates a revision must pass: those of the deployments it adds or
// changes, and of those it drops; not those of deployments it leaves as
// they are.
func TestGatesBetween(t *testing.T) {
	dep := func(name string, gen int64, gates ...string) hubv1.DeploymentRevision {
		return hubv1.DeploymentRevision{Name: name, Generation: gen, Gates: gates}
	}
	for _, tc := range []struct {
		name          string
		applied, next []hubv1.DeploymentRevision
		want          []string
	}{
		{"first install", nil, []hubv1.DeploymentRevision{dep("nav", 1, "parked"), dep("radio", 1)}, []string{"parked"}},
		{"no change", []hubv1.DeploymentRevision{dep("nav", 1, "parked")}, []hubv1.DeploymentRevision{dep("nav", 1, "parked")}, nil},
		{"a gated deployment changes", []hubv1.DeploymentRevision{dep("nav", 1, "parked"), dep("radio", 1)},
			[]hubv1.DeploymentRevision{dep("nav", 2, "parked", "battery>=30"), dep("radio", 1)}, []string{"parked", "battery>=30"}},
		{"only an ungated deployment changes", []hubv1.DeploymentRevision{dep("nav", 1, "parked"), dep("radio", 1)},
			[]hubv1.DeploymentRevision{dep("nav", 1, "parked"), dep("radio", 2)}, nil},
		{"the new generation's gates count, not the old", []hubv1.DeploymentRevision{dep("nav", 1, "parked")},
			[]hubv1.DeploymentRevision{dep("nav", 2, "ignition=off")}, []string{"ignition=off"}},
		{"a dropped deployment's gates", []hubv1.DeploymentRevision{dep("nav", 1, "parked"), dep("radio", 1, "!moving")},
			[]hubv1.DeploymentRevision{dep("nav", 1, "parked")}, []string{"!moving"}},
		{"each gate once", []hubv1.DeploymentRevision{dep("old", 1, "parked")},
			[]hubv1.DeploymentRevision{dep("nav", 1, "parked", "window 02:00-05:00"), dep("radio", 1, "window 02:00-05:00 ", "parked")},
			[]string{"parked", "window 02:00-05:00"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, gatesBetween(tc.applied, tc.next)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// After a rollback the cluster runs the rolled-back deployment's last
// healthy generation: a revision that brings the failed generation again
// changes it, and must pass its gates. The cloud half passes none.
func TestGatesAfterRollback(t *testing.T) {
	nav := func(gen int64) hubv1.DeploymentRevision {
		return hubv1.DeploymentRevision{Name: "nav", Generation: gen, Gates: []string{"parked"}}
	}
	radio := func(gen int64) hubv1.DeploymentRevision {
		return hubv1.DeploymentRevision{Name: "radio", Generation: gen}
	}
	next := &hubv1.DesiredState{Deployments: []hubv1.DeploymentRevision{nav(2), radio(2)}}
	for _, tc := range []struct {
		name string
		rec  ledger.Record
		cfg  GateConfig
		want []string
	}{
		{"no rollback", ledger.Record{AppliedDeployments: []hubv1.DeploymentRevision{nav(2), radio(1)}}, GateConfig{}, nil},
		{"nav rolled back to generation 1", ledger.Record{
			AppliedDeployments: []hubv1.DeploymentRevision{nav(2), radio(1)}, RolledBack: []string{"nav"},
			LastHealthy: &ledger.Snapshot{Deployments: []hubv1.DeploymentRevision{nav(1), radio(1)}},
		}, GateConfig{}, []string{"parked"}},
		{"rolled back to nothing", ledger.Record{
			AppliedDeployments: []hubv1.DeploymentRevision{nav(2), radio(1)}, RolledBack: []string{"nav"},
		}, GateConfig{}, []string{"parked"}},
		{"the cloud half", ledger.Record{}, GateConfig{Ignore: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Half{cfg: HalfConfig{Gates: tc.cfg}, rec: tc.rec}
			if diff := cmp.Diff(tc.want, h.gatesFor(next)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
