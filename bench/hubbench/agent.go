package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hubclient"
	"github.com/misaki-io/misaki/internal/trust"
)

// The fleet's vehicles are alike: the same labels, facts and allocatable,
// so one render serves them all while placement still runs per vehicle
// (the planner's 4 CPUs do not fit in 2: it goes to the cloud half).
var (
	fleetLabels = map[string]string{"fleet": "bench"}
	allocatable = hubv1.ResourceList{"cpu": "2", "memory": "4Gi", "ephemeral-storage": "20Gi"}
	facts       = hubv1.Facts{
		KubernetesVersion: "v1.37.2",
		APIVersions:       []string{"v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "mesh.misaki.io/v1alpha1"},
		CRDs:              []string{"routes.mesh.misaki.io"},
		Arch:              "arm64",
	}
)

// vehicle is one simulated vehicle: its identity and its hubclient.Client
// for the replica it talks to, with its own certificate and its own
// connection.
type vehicle struct {
	id string
	c  *hubclient.Client
}

// enrol creates the vehicle, makes a bootstrap token and enrols with a
// fresh P-256 key and CSR, as an agent does.
func enrol(ctx context.Context, op *operator, url, id string) (*vehicle, error) {
	v := hubv1.Vehicle{ID: id, Labels: fleetLabels, Allocatable: allocatable, Facts: facts}
	if err := op.do(ctx, http.StatusCreated, "POST", url+"/v1/vehicles", v, nil); err != nil {
		return nil, err
	}
	var tok hubv1.BootstrapToken
	if err := op.do(ctx, http.StatusCreated, "POST", url+"/v1/vehicles/"+id+"/tokens", nil, &tok); err != nil {
		return nil, err
	}
	tc, _, _, err := op.vehicle(url).EnrolNew(ctx, tok.Token)
	if err != nil {
		return nil, fmt.Errorf("enrol %s: %w", id, err)
	}
	return &vehicle{id: id, c: agentClient(url, op.pool, tc)}, nil
}

// agentClient is a vehicle's hubclient.Client: HTTP/1.1 on one connection
// of its own with its certificate, as the published figures were measured
// (docs/benchmarks.md), not hubclient.New's HTTP/2.
func agentClient(url string, roots *x509.CertPool, cert tls.Certificate) *hubclient.Client {
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	return &hubclient.Client{URL: url, HTTP: &http.Client{
		Timeout: 5 * time.Minute, // above the long-poll's wait
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}},
			Protocols:           h1,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
		},
	}}
}

// connect opens the vehicle's connection (a TLS handshake with its
// certificate) with a request that needs none, so the long-polls start on
// open connections.
func (v *vehicle) connect(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", v.c.URL+"/healthz", nil)
	resp, err := v.c.HTTP.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}

// phase is one rollout the fleet waits for: every vehicle fetching and
// reporting a revision of deployment generation gen. Each agent writes
// only its own index; n counts the vehicles done and done closes at the
// last.
type phase struct {
	gen      int64
	fetched  []time.Time // when the long-poll answered the revision
	reported []time.Time // when the report of it was accepted
	n        atomic.Int64
	done     chan struct{}
}

func newPhase(gen int64, vehicles int) *phase {
	return &phase{gen: gen, fetched: make([]time.Time, vehicles), reported: make([]time.Time, vehicles), done: make(chan struct{})}
}

// fleet runs the agents.
type fleet struct {
	vehicles []*vehicle
	verifier *trust.Verifier // nil: no verification
	wait     time.Duration   // the long-poll's wait
	phase    atomic.Pointer[phase]

	payload  atomic.Int64                       // bytes of the newest signed payload
	sample   atomic.Pointer[hubv1.DesiredState] // the newest verified state
	polls    atomic.Int64                       // long-polls answered (200 and 304)
	verified atomic.Int64
	errs     atomic.Int64
	errMu    sync.Mutex // guards lastErr
	lastErr  error
}

func (f *fleet) fail(err error) {
	f.errs.Add(1)
	f.errMu.Lock()
	f.lastErr = err
	f.errMu.Unlock()
}

// LastError is the newest error an agent hit.
func (f *fleet) LastError() error {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.lastErr
}

// run is vehicle i's agent: long-poll, verify, report, until ctx ends. An
// error is counted and retried after a second, as an agent backs off.
func (f *fleet) run(ctx context.Context, i int) {
	v := f.vehicles[i]
	var applied int64
	for ctx.Err() == nil {
		d, err := v.c.Desired(ctx, v.id, hubv1.HalfVehicle, applied, f.wait)
		if err == nil {
			f.polls.Add(1)
		}
		if err == nil && d == nil {
			continue // 304: poll again
		}
		var st *hubv1.DesiredState
		if err == nil {
			got := time.Now()
			st, err = f.check(v, d, applied)
			if err == nil {
				f.payload.Store(int64(len(d.Envelope.Payload)))
				f.sample.Store(st)
				f.fetched(i, st, got)
				var rep hubv1.Reported
				if rep, err = reportOf(d, st); err == nil {
					err = v.c.Report(ctx, v.id, rep)
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.fail(fmt.Errorf("vehicle %s: %w", v.id, err))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		applied = d.Revision
		f.reported(i, st, time.Now())
	}
}

// check verifies d as the agent does (trust root, vehicle, half, a
// revision above the applied one, digest, expiry) and returns its
// payload; without a verifier it only decodes the payload.
func (f *fleet) check(v *vehicle, d *hubv1.Desired, applied int64) (*hubv1.DesiredState, error) {
	if f.verifier == nil {
		var st hubv1.DesiredState
		if err := json.Unmarshal(d.Envelope.Payload, &st); err != nil {
			return nil, fmt.Errorf("decode payload: %w", err)
		}
		return &st, nil
	}
	st, err := f.verifier.Verify(*d, trust.Expect{Vehicle: v.id, Half: hubv1.HalfVehicle, After: applied}, time.Now())
	if err != nil {
		return nil, err
	}
	f.verified.Add(1)
	return st, nil
}

func generation(st *hubv1.DesiredState) int64 {
	for _, d := range st.Deployments {
		if d.Name == deploymentName {
			return d.Generation
		}
	}
	return 0
}

func (f *fleet) fetched(i int, st *hubv1.DesiredState, at time.Time) {
	if p := f.phase.Load(); p != nil && generation(st) >= p.gen && p.fetched[i].IsZero() {
		p.fetched[i] = at
	}
}

func (f *fleet) reported(i int, st *hubv1.DesiredState, at time.Time) {
	p := f.phase.Load()
	if p == nil || generation(st) < p.gen || !p.reported[i].IsZero() {
		return
	}
	p.reported[i] = at
	if p.n.Add(1) == int64(len(p.reported)) {
		close(p.done)
	}
}

// reportOf is the agent's report after applying st: every object
// healthy, with the vehicle's facts and allocatable (unchanged, so the
// hub does not re-render).
func reportOf(d *hubv1.Desired, st *hubv1.DesiredState) (hubv1.Reported, error) {
	objs, err := hubclient.Statuses(st.Objects, hubv1.StateHealthy)
	if err != nil {
		return hubv1.Reported{}, err
	}
	f := facts
	return hubv1.Reported{
		Half: hubv1.HalfVehicle, AppliedRevision: d.Revision, Objects: objs,
		Facts: &f, Allocatable: allocatable, AgentVersion: "hubbench",
	}, nil
}
