package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// simFleet runs simulated agents against a real hub: each enrolled
// vehicle long-polls both halves of its desired state (the cloud half with
// a cloud-agent token, as the cloud agent does) and reports every object
// healthy, or the revision Failed when it carries a deployment the test
// told the vehicle to fail. While the fleet is held, agents take new
// revisions but do not report them.
type simFleet struct {
	h     *hubtest.Hub
	cloud *hubclient.Client

	mu   sync.Mutex          // guards the fields below
	fail map[string][]string // vehicle → deployments it fails
	hold chan struct{}       // non-nil: reports wait until it is closed
}

func newSimFleet(t *testing.T, h *hubtest.Hub) *simFleet {
	var tok hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "sim-cloud", Scope: "cloud-agent"}, &tok)
	cloud := hubclient.New(h.URL, h.CA, nil)
	cloud.Token = tok.Token
	return &simFleet{h: h, cloud: cloud, fail: map[string][]string{}}
}

// Fail makes vehicle fail every revision that carries deployment.
func (f *simFleet) Fail(vehicle, deployment string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[vehicle] = append(f.fail[vehicle], deployment)
}

// Hold stops reports until Release.
func (f *simFleet) Hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hold == nil {
		f.hold = make(chan struct{})
	}
}

// Release lets held reports go.
func (f *simFleet) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hold != nil {
		close(f.hold)
		f.hold = nil
	}
}

func (f *simFleet) waitHold(ctx context.Context) {
	f.mu.Lock()
	h := f.hold
	f.mu.Unlock()
	if h != nil {
		select {
		case <-h:
		case <-ctx.Done():
		}
	}
}

// Start enrols vehicle id and runs its agents until the test ends.
func (f *simFleet) Start(t *testing.T, id string, labels map[string]string, alloc hubv1.ResourceList) {
	v := f.h.Enrol(t, id, labels, alloc)
	c := hubclient.New(f.h.URL, f.h.CA, &v.Cert)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.agent(ctx, t, c, id, hubv1.HalfVehicle) }()
	go func() { defer wg.Done(); f.agent(ctx, t, f.cloud, id, hubv1.HalfCloud) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	// The first call makes the vehicle seen (online) before any revision.
	if err := c.Report(ctx, id, hubv1.Reported{Half: hubv1.HalfVehicle, Facts: &hubv1.Facts{KubernetesVersion: "v1.37.2", Arch: "arm64"}, AgentVersion: "sim"}); err != nil {
		t.Fatalf("%s: first report: %v", id, err)
	}
}

func (f *simFleet) agent(ctx context.Context, t *testing.T, c *hubclient.Client, id, half string) {
	var after int64
	for ctx.Err() == nil {
		d, err := c.Desired(ctx, id, half, after, 20*time.Second)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				t.Logf("sim %s/%s: desired: %v", id, half, err)
			}
			return
		}
		if d == nil {
			continue
		}
		var st hubv1.DesiredState
		if err := json.Unmarshal(d.Envelope.Payload, &st); err != nil {
			t.Errorf("sim %s/%s: payload: %v", id, half, err)
			return
		}
		f.waitHold(ctx)
		if ctx.Err() != nil {
			return
		}
		objs, err := hubclient.Statuses(st.Objects, hubv1.StateHealthy)
		if err != nil {
			t.Errorf("sim %s/%s: %v", id, half, err)
			return
		}
		rep := hubv1.Reported{Half: half, AppliedRevision: d.Revision, Phase: hubv1.PhaseHealthy, Objects: objs, Deployments: st.Deployments, AgentVersion: "sim"}
		if half == hubv1.HalfVehicle {
			rep.Facts = &hubv1.Facts{KubernetesVersion: "v1.37.2", Arch: "arm64"}
		}
		if failed := f.failing(id, st); len(failed) > 0 && half == hubv1.HalfVehicle {
			rep.Phase = hubv1.PhaseFailed
			rep.Failure = &hubv1.Failure{Revision: d.Revision, Reason: "not ready within 1m: Deployment " + failed[0] + "-api 0 of 1 replicas ready", Deployments: failed}
			for i := range rep.Objects {
				if rep.Objects[i].Kind == "Deployment" {
					rep.Objects[i].State, rep.Objects[i].Reason = hubv1.StateProgressing, "0 of 1 replicas ready"
				}
			}
		}
		if err := c.Report(ctx, id, rep); err != nil {
			if ctx.Err() == nil {
				t.Errorf("sim %s/%s: report: %v", id, half, err)
			}
			return
		}
		after = d.Revision
	}
}

func (f *simFleet) failing(id string, st hubv1.DesiredState) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, d := range st.Deployments {
		if slices.Contains(f.fail[id], d.Name) {
			out = append(out, d.Name)
		}
	}
	return out
}

// register adds n vehicles that never enrol (offline), named prefix-NNN.
func register(t *testing.T, h *hubtest.Hub, prefix string, n int, labels map[string]string) {
	for i := 1; i <= n; i++ {
		h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: fmt.Sprintf("%s-%03d", prefix, i), Labels: labels}, nil)
	}
}
