package ledger

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/apply"
	"github.com/misaki-io/misaki/internal/framelog"
)

func TestSaveAndOpen(t *testing.T) {
	dir := t.TempDir()
	l, rec, err := Open(dir, hubv1.HalfVehicle)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Target != nil || len(rec.Inventory) != 0 {
		t.Fatalf("a new ledger is not empty: %+v", rec)
	}
	want := Record{
		Target:             &hubv1.Desired{Vehicle: "car-1", Half: hubv1.HalfVehicle, Revision: 4, Digest: "sha256:ab"},
		Phase:              hubv1.PhaseWaiting,
		Applied:            []json.RawMessage{json.RawMessage(`{"kind":"ConfigMap"}`)},
		AppliedRevision:    3,
		AppliedDeployments: []hubv1.DeploymentRevision{{Name: "gadget", Generation: 2, Gates: []string{"parked"}}},
		RolledBack:         []string{"gadget"},
		LastHealthy: &Snapshot{Revision: 3, Objects: []json.RawMessage{json.RawMessage(`{"kind":"ConfigMap"}`)},
			Deployments: []hubv1.DeploymentRevision{{Name: "gadget", Generation: 2}}},
		Inventory: []apply.Ref{{APIVersion: "v1", Kind: "ConfigMap", Namespace: "a", Name: "b"}},
	}
	if err := l.Save(want); err != nil {
		t.Fatal(err)
	}
	_, got, err := Open(dir, hubv1.HalfVehicle)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reopened (-want +got):\n%s", diff)
	}
	// The other half has its own file.
	if _, other, err := Open(dir, hubv1.HalfCloud); err != nil || other.Target != nil {
		t.Errorf("cloud half: %+v, %v", other, err)
	}
}

// A record written before the applied deployments were kept opens, with
// none.
func TestOpenOlderRecord(t *testing.T) {
	dir := t.TempDir()
	old := `{"target":{"vehicle":"car-1","half":"vehicle","revision":3},"phase":"Healthy","applied":[{"kind":"ConfigMap"}],` +
		`"appliedRevision":3,"lastHealthy":{"revision":3,"objects":[{"kind":"ConfigMap"}]}}`
	if err := framelog.WriteRecord(filepath.Join(dir, "ledger-vehicle"), nil, frameRecord, []byte(old)); err != nil {
		t.Fatal(err)
	}
	_, rec, err := Open(dir, hubv1.HalfVehicle)
	if err != nil {
		t.Fatal(err)
	}
	if rec.AppliedRevision != 3 || rec.Phase != hubv1.PhaseHealthy || rec.AppliedDeployments != nil || rec.RolledBack != nil || rec.LastHealthy == nil || rec.LastHealthy.Deployments != nil {
		t.Errorf("older record: %+v", rec)
	}
}

// A damaged ledger stops the agent: starting empty would forget what to
// prune.
func TestDamagedIsAnError(t *testing.T) {
	dir := t.TempDir()
	l, _, err := Open(dir, hubv1.HalfVehicle)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Save(Record{Phase: hubv1.PhaseHealthy, Inventory: []apply.Ref{{APIVersion: "v1", Kind: "ConfigMap", Name: "x"}}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, damage := range []func([]byte) []byte{
		func(b []byte) []byte { c := append([]byte(nil), b...); c[len(c)-3] ^= 0xff; return c },
		func(b []byte) []byte { return b[:len(b)/2] },
		func(b []byte) []byte { return nil },
	} {
		if err := os.WriteFile(l.Path(), damage(b), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Open(dir, hubv1.HalfVehicle); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("a damaged ledger opened: %v", err)
		}
	}
}

func TestInventorySets(t *testing.T) {
	cm := func(name, version string) apply.Ref {
		return apply.Ref{APIVersion: version, Kind: "ConfigMap", Namespace: "n", Name: name}
	}
	dep := apply.Ref{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "n", Name: "a"}
	inv := Set([]apply.Ref{cm("b", "v1"), dep, cm("a", "v1"), cm("a", "v1")})
	if len(inv) != 3 || inv[0].Name != "a" || inv[0].Kind != "ConfigMap" {
		t.Fatalf("Set: %v", inv)
	}
	// The same object under another version is one object; the newer
	// version wins.
	dep2 := apply.Ref{APIVersion: "apps/v2", Kind: "Deployment", Namespace: "n", Name: "a"}
	u := Union(inv, []apply.Ref{dep2})
	if len(u) != 3 {
		t.Fatalf("Union: %v", u)
	}
	for _, r := range u {
		if r.Kind == "Deployment" && r.APIVersion != "apps/v2" {
			t.Errorf("Union kept %s", r.APIVersion)
		}
	}
	stale := Minus(u, []apply.Ref{cm("a", "v1"), dep})
	if diff := cmp.Diff([]apply.Ref{cm("b", "v1")}, stale); diff != "" {
		t.Errorf("Minus (-want +got):\n%s", diff)
	}
	if ContentHash([]json.RawMessage{json.RawMessage(`{"a":1}`), json.RawMessage(`{}`)}) == ContentHash([]json.RawMessage{json.RawMessage(`{"a":1}{}`)}) {
		t.Error("ContentHash joins objects ambiguously")
	}
}
