package truststate

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/trust"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

type hub struct {
	dir  string
	keys *trust.Keys
}

func newHub(t *testing.T) *hub {
	t.Helper()
	dir := t.TempDir()
	if err := trust.Init(dir, t0, trust.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	h := &hub{dir: dir}
	h.reload(t)
	return h
}

func (h *hub) reload(t *testing.T) {
	t.Helper()
	k, err := trust.LoadKeys(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	h.keys = k
}

func (h *hub) root(t *testing.T, n int64) []byte {
	t.Helper()
	b, err := h.keys.RootVersion(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *hub) doc(t *testing.T, vehicle, half string, rev int64) hubv1.Desired {
	t.Helper()
	d, err := h.keys.Sign(context.Background(), hubv1.DesiredState{
		Vehicle: vehicle, Half: half, Revision: rev, IssuedAt: t0, Expires: t0.Add(24 * time.Hour),
		Deployments: []hubv1.DeploymentRevision{}, Placement: []hubv1.ComponentPlacement{},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// open starts a gate for car-1 on root 1 in a fresh dir.
func open(t *testing.T, h *hub) (string, *Gate) {
	t.Helper()
	dir := t.TempDir()
	g, err := Open(dir, "car-1", h.root(t, 1), t0)
	if err != nil {
		t.Fatal(err)
	}
	return dir, g
}

// accept accepts a vehicle-half document or fails the test.
func accept(t *testing.T, g *Gate, d hubv1.Desired) {
	t.Helper()
	if _, err := g.Accept(d, hubv1.HalfVehicle, t0); err != nil {
		t.Fatalf("accept revision %d: %v", d.Revision, err)
	}
}

func TestAcceptPersistsAndRefusesRollback(t *testing.T) {
	h := newHub(t)
	dir, g := open(t, h)
	accept(t, g, h.doc(t, "car-1", hubv1.HalfVehicle, 1))
	// After a restart the gate remembers revision 1.
	g, err := Open(dir, "car-1", nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Accepted(hubv1.HalfVehicle); got.Revision != 1 || got.Digest == "" {
		t.Fatalf("accepted after reopen: %+v", got)
	}
	if _, err := g.Accept(h.doc(t, "car-1", hubv1.HalfVehicle, 1), hubv1.HalfVehicle, t0); !errors.Is(err, trust.ErrRollback) {
		t.Fatalf("revision 1 again: %v", err)
	}
	if _, err := g.Accept(h.doc(t, "car-1", hubv1.HalfVehicle, 2), hubv1.HalfVehicle, t0); err != nil {
		t.Fatalf("revision 2: %v", err)
	}
	// Halves count separately.
	if _, err := g.Accept(h.doc(t, "car-1", hubv1.HalfCloud, 1), hubv1.HalfCloud, t0); err != nil {
		t.Fatalf("cloud revision 1: %v", err)
	}
}

// A refused document changes nothing, on disk or in memory.
func TestRefusalChangesNothing(t *testing.T) {
	h := newHub(t)
	dir, g := open(t, h)
	accept(t, g, h.doc(t, "car-1", hubv1.HalfVehicle, 1))
	before, _ := os.ReadFile(filepath.Join(dir, FileName))
	tampered := h.doc(t, "car-1", hubv1.HalfVehicle, 5)
	tampered.Envelope.Payload = bytes.Replace(tampered.Envelope.Payload, []byte(`"revision":5`), []byte(`"revision":6`), 1)
	for name, tc := range map[string]struct {
		d    hubv1.Desired
		want error
	}{
		"other vehicle": {h.doc(t, "car-2", hubv1.HalfVehicle, 2), trust.ErrVehicle},
		"tampered":      {tampered, trust.ErrSignature},
		"expired":       {h.doc(t, "car-1", hubv1.HalfVehicle, 3), trust.ErrExpired},
	} {
		now := t0
		if name == "expired" {
			now = t0.Add(48 * time.Hour)
		}
		if _, err := g.Accept(tc.d, hubv1.HalfVehicle, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	after, _ := os.ReadFile(filepath.Join(dir, FileName))
	if !bytes.Equal(before, after) || g.Accepted(hubv1.HalfVehicle).Revision != 1 {
		t.Fatal("a refusal changed the trust state")
	}
}

// A write that fails leaves the document not accepted.
func TestWriteFailureAcceptsNothing(t *testing.T) {
	h := newHub(t)
	dir, g := open(t, h)
	g.fp = func(op framelog.Op, path string) error { return errors.New("disk full") }
	if _, err := g.Accept(h.doc(t, "car-1", hubv1.HalfVehicle, 1), hubv1.HalfVehicle, t0); err == nil {
		t.Fatal("accepted without a durable record")
	}
	g.fp = nil
	if g.Accepted(hubv1.HalfVehicle).Revision != 0 {
		t.Fatal("accepted in memory though the write failed")
	}
	if again, err := Open(dir, "car-1", nil, t0); err != nil || again.Accepted(hubv1.HalfVehicle).Revision != 0 {
		t.Fatalf("on disk after the failed write: %v", err)
	}
	if _, err := g.Accept(h.doc(t, "car-1", hubv1.HalfVehicle, 1), hubv1.HalfVehicle, t0); err != nil {
		t.Fatalf("after the disk recovered: %v", err)
	}
}

// After a key rotation, the new root is needed and is kept across restarts.
func TestRootRotation(t *testing.T) {
	h := newHub(t)
	dir, g := open(t, h)
	if _, err := trust.Rotate(h.dir, "targets", t0); err != nil {
		t.Fatal(err)
	}
	h.reload(t)
	d := h.doc(t, "car-1", hubv1.HalfVehicle, 1)
	if _, err := g.Accept(d, hubv1.HalfVehicle, t0); err == nil {
		t.Fatal("a document signed by the new key accepted under root 1")
	}
	if err := g.UpdateRoot(h.root(t, 2), t0); err != nil {
		t.Fatal(err)
	}
	g, err := Open(dir, "car-1", nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if g.RootVersion() != 2 {
		t.Fatalf("root version after reopen: %d", g.RootVersion())
	}
	if _, err := g.Accept(d, hubv1.HalfVehicle, t0); err != nil {
		t.Fatalf("under root 2: %v", err)
	}
}

// A damaged state file is an error, never a silent fresh start.
func TestDamagedStateRefused(t *testing.T) {
	h := newHub(t)
	dir := t.TempDir()
	if _, err := Open(dir, "car-1", h.root(t, 1), t0); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, FileName)
	b, _ := os.ReadFile(p)
	b[len(b)-3] ^= 0xff
	os.WriteFile(p, b, 0o600)
	if _, err := Open(dir, "car-1", h.root(t, 1), t0); err == nil {
		t.Fatal("opened a damaged state")
	}
}
