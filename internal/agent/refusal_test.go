package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/trust"
)

// injector is the agent's hub with a man in the middle: a document put in
// next is answered instead of the hub's.
type injector struct {
	agent.Hub
	mu   sync.Mutex
	next *hubv1.Desired
}

func (i *injector) inject(d hubv1.Desired) {
	i.mu.Lock()
	i.next = &d
	i.mu.Unlock()
}

func (i *injector) Desired(ctx context.Context, vehicle, half string, after int64, wait time.Duration) (*hubv1.Desired, error) {
	deadline := time.Now().Add(wait)
	for {
		i.mu.Lock()
		d := i.next
		i.next = nil
		i.mu.Unlock()
		if d != nil {
			return d, nil
		}
		if time.Now().After(deadline) {
			return nil, nil
		}
		// Short polls of the real hub, so an injected document is
		// answered within 100ms.
		got, err := i.Hub.Desired(ctx, vehicle, half, after, 0)
		if got != nil || err != nil {
			return got, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// offsetClock is the real clock moved by d.
type offsetClock struct {
	clock.Real
	d time.Duration
}

func (c offsetClock) Now() time.Time { return time.Now().Add(c.d) }

// resourceVersions reads what changes when someone writes each gadget
// object: its generation where it has one (a Deployment's status, which
// its controller keeps writing after a rollout, does not move it), else
// its resourceVersion.
func (e *env) resourceVersions() map[objID]string {
	out := map[objID]string{}
	for _, o := range gadgetObjects {
		u, err := e.get(o.apiVersion, o.kind, o.ns, o.name)
		switch {
		case err != nil:
		case u.GetGeneration() != 0:
			out[o] = fmt.Sprintf("generation %d", u.GetGeneration())
		default:
			out[o] = u.GetResourceVersion()
		}
	}
	return out
}

func (e *env) unchanged(before map[objID]string) {
	e.t.Helper()
	after := e.resourceVersions()
	for o, rv := range before {
		if after[o] != rv {
			e.t.Errorf("%s %s/%s changed (%s → %s)", o.kind, o.ns, o.name, rv, after[o])
		}
	}
}

// refused waits for the report of a refusal of rev whose reason has want.
func refused(rev int64, want string) func(hubv1.Reported) error {
	return func(r hubv1.Reported) error {
		if r.Refused == nil || r.Refused.Revision != rev || !strings.Contains(r.Refused.Reason, want) {
			return fmt.Errorf("refused %+v, want revision %d refused for %q", r.Refused, rev, want)
		}
		return nil
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Documents the agent must refuse: tampered bytes, another vehicle's, an
// older revision replayed, one signed by a rotated-out key, an expired one.
// Each is reported with its reason and the cluster does not change. Root
// rotations are followed.
func TestRefusals(t *testing.T) {
	e := newEnv(t)
	e.deploy(map[string]any{"message": "one"}, nil)
	rev1 := e.desiredRevision(0)
	_, d1 := e.hub.Desired(t, e.vehicle, hubv1.HalfVehicle, 0, 0)
	inj := &injector{Hub: e.hubClient()}
	a := e.start(agentOpts{hub: inj})
	e.reported(90*time.Second, phase(rev1, hubv1.PhaseHealthy))
	e.deploy(map[string]any{"message": "two"}, nil)
	rev2 := e.desiredRevision(rev1)
	e.reported(90*time.Second, phase(rev2, hubv1.PhaseHealthy))
	_, d2 := e.hub.Desired(t, e.vehicle, hubv1.HalfVehicle, rev1, 0)
	before := e.resourceVersions()

	// The injected documents carry revisions no higher than the hub's next
	// one: the agent asks the hub for revisions above the last it was
	// handed, accepted or not.
	t.Run("tampered", func(t *testing.T) {
		bad := *d2
		bad.Envelope.Payload = []byte(strings.Replace(string(d2.Envelope.Payload), `"two"`, `"evil"`, -1))
		bad.Digest = digest(bad.Envelope.Payload)
		inj.inject(bad)
		e.reported(30*time.Second, refused(bad.Revision, "(signature)"))
		// The signed bytes, with a digest that is not theirs.
		bad2 := *d2
		bad2.Digest = digest([]byte("other bytes"))
		inj.inject(bad2)
		e.reported(30*time.Second, refused(bad2.Revision, "(digest)"))
	})
	t.Run("another vehicle's", func(t *testing.T) {
		other := e.hub.Enrol(t, "car-2", map[string]string{"fleet": "test"}, hubv1.ResourceList{"cpu": "4", "memory": "8Gi"})
		code, d := e.hub.Desired(t, other, hubv1.HalfVehicle, 0, 30*time.Second)
		if code != http.StatusOK {
			t.Fatalf("car-2's desired state: %d", code)
		}
		inj.inject(*d)
		e.reported(30*time.Second, refused(d.Revision, "(vehicle)"))
	})
	t.Run("older revision replayed", func(t *testing.T) {
		inj.inject(*d1)
		e.reported(30*time.Second, refused(rev1, "(rollback)"))
	})
	e.unchanged(before)

	// A root rotation: the agent walks to root 2 and takes the revision
	// the hub re-signs.
	keysDir := filepath.Join(e.hub.DataDir, "keys")
	oldKeys, _ := filepath.Glob(filepath.Join(keysDir, "keys", "targets-*.pem"))
	if len(oldKeys) != 1 {
		t.Fatalf("targets keys %v", oldKeys)
	}
	oldKey := filepath.Join(t.TempDir(), "old-targets.pem")
	b, err := os.ReadFile(oldKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldKey, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var rot hubv1.RotateResult
	e.hub.Admin(t, http.StatusOK, "POST", "/v1/keys/rotate", hubv1.RotateRequest{Role: "targets"}, &rot)
	rev3 := e.desiredRevision(rev2)
	e.reported(90*time.Second, phase(rev3, hubv1.PhaseHealthy))
	if got := a.half.RootVersion(); got != rot.RootVersion {
		t.Fatalf("agent root version %d after the rotation, want %d", got, rot.RootVersion)
	}
	before = e.resourceVersions()

	t.Run("rotated-out key", func(t *testing.T) {
		signer, err := trust.LoadFileSigner(oldKey)
		if err != nil {
			t.Fatal(err)
		}
		root1, err := e.hubClient().Root(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := trust.NewKeys([][]byte{root1}, signer)
		if err != nil {
			t.Fatal(err)
		}
		var st hubv1.DesiredState
		if err := json.Unmarshal(d2.Envelope.Payload, &st); err != nil {
			t.Fatal(err)
		}
		st.Revision, st.IssuedAt, st.Expires = rev3, time.Now().UTC(), time.Now().Add(24*time.Hour).UTC()
		forged, err := keys.Sign(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		inj.inject(forged)
		e.reported(30*time.Second, refused(forged.Revision, "(signature)"))
	})
	e.unchanged(before)

	t.Run("root key rotation", func(t *testing.T) {
		var rot hubv1.RotateResult
		e.hub.Admin(t, http.StatusOK, "POST", "/v1/keys/rotate", hubv1.RotateRequest{Role: "root"}, &rot)
		rev4 := e.desiredRevision(rev3)
		e.reported(90*time.Second, phase(rev4, hubv1.PhaseHealthy))
		if got := a.half.RootVersion(); got != rot.RootVersion {
			t.Fatalf("agent root version %d after the root rotation, want %d", got, rot.RootVersion)
		}
	})

	for reason, want := range map[string]float64{"signature": 2, "digest": 1, "vehicle": 1, "rollback": 1} {
		if got := a.counter(t, "misaki_agent_refusals_total", map[string]string{"half": "vehicle", "reason": reason}); got != want {
			t.Errorf("misaki_agent_refusals_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}

	// Expired: the agent's clock is 30 days ahead of the hub's 14-day
	// documents. It keeps running what it has and applies nothing new.
	a.stop()
	before = e.resourceVersions()
	accepted := a.half.Accepted()
	b2 := e.start(agentOpts{hub: inj, clock: offsetClock{d: 30 * 24 * time.Hour}})
	e.deploy(map[string]any{"message": "three"}, nil)
	rev5 := e.desiredRevision(accepted)
	e.reported(30*time.Second, refused(rev5, "(expired)"))
	e.unchanged(before)
	if got := b2.half.Accepted(); got != accepted {
		t.Errorf("accepted revision %d after an expired document, want %d", got, accepted)
	}
}
