package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/clustertest"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hubclient"
	"github.com/misaki-io/misaki/internal/promtest"
)

// env is one scenario's world: a real vehicle cluster (kube-apiserver,
// etcd, controller-manager, scheduler, a kwok node), a real hub with the
// gadget chart, a link between them that can be cut, and one enrolled
// vehicle.
type env struct {
	t       *testing.T
	cluster *clustertest.Cluster
	hub     *hubtest.Hub
	link    *link
	vehicle *hubtest.Vehicle
	kube    client.Client
	pinned  []byte
	dir     string // the agent's state
}

const vehicleID = "car-1"

func newEnv(t *testing.T) *env {
	t.Helper()
	cluster := clustertest.Start(t)
	cluster.AddNode(t, "car-node", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")})
	charts, err := filepath.Abs("testdata/charts")
	if err != nil {
		t.Fatal(err)
	}
	h := hubtest.Start(t, hub.Config{LocalChartRoots: []string{charts}})
	e := &env{t: t, cluster: cluster, hub: h, dir: t.TempDir()}
	e.link = newLink(t, h.URL)
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "local", Type: hubv1.SourceLocal, URL: charts}, nil)
	e.vehicle = h.Enrol(t, vehicleID, map[string]string{"fleet": "test"}, hubv1.ResourceList{"cpu": "4", "memory": "8Gi"})
	if e.pinned, err = e.hubClient().Root(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if e.kube, err = client.New(cluster.Config, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// hubClient talks to the hub through the link, as the vehicle.
func (e *env) hubClient() *hubclient.Client {
	return hubclient.New(e.link.URL(), e.hub.CA, &e.vehicle.Cert)
}

// deploy creates or replaces the gadget deployment with values.
func (e *env) deploy(values map[string]any, health *hubv1.HealthPolicy) hubv1.Deployment {
	e.t.Helper()
	return e.deployRollout(values, health, nil)
}

// deployRollout is deploy with a rollout policy.
func (e *env) deployRollout(values map[string]any, health *hubv1.HealthPolicy, rollout *hubv1.RolloutPolicy) hubv1.Deployment {
	e.t.Helper()
	d := hubv1.Deployment{
		Name: "gadget", Namespace: "gadget",
		Chart:            hubv1.ChartRef{Source: "local", Name: "gadget", Version: "1.0.0"},
		Values:           values,
		Selector:         "fleet=test",
		DefaultPlacement: hubv1.PlaceVehicle,
		Health:           health,
		Rollout:          rollout,
	}
	var cur hubv1.Deployment
	code, _ := e.hub.Do(e.t, e.hub.Client(), e.hub.Token, "GET", "/v1/deployments/gadget", nil, &cur)
	var out hubv1.Deployment
	if code == http.StatusNotFound {
		e.hub.Admin(e.t, http.StatusCreated, "POST", "/v1/deployments", d, &out)
		return out
	}
	d.Generation = cur.Generation
	e.hub.Admin(e.t, http.StatusOK, "PUT", "/v1/deployments/gadget", d, &out)
	return out
}

// desiredRevision waits for the hub to issue a vehicle revision above
// after and returns it.
func (e *env) desiredRevision(after int64) int64 {
	e.t.Helper()
	code, d := e.hub.Desired(e.t, e.vehicle, hubv1.HalfVehicle, after, 30*time.Second)
	if code != http.StatusOK {
		e.t.Fatalf("no revision above %d from the hub: %d", after, code)
	}
	return d.Revision
}

// running is an agent half running in this process.
type running struct {
	half   *agent.Half
	reg    *prometheus.Registry
	rep    *agent.Reporter
	cancel context.CancelFunc
	done   chan error
}

type agentOpts struct {
	clock    clock.Clock
	hub      agent.Hub
	kube     client.Client
	drift    time.Duration
	deadline time.Duration
	gates    agent.GateConfig
}

// start runs the vehicle half until stop (or the test's end).
func (e *env) start(o agentOpts) *running {
	e.t.Helper()
	if o.clock == nil {
		o.clock = clock.Real{}
	}
	if o.hub == nil {
		o.hub = e.hubClient()
	}
	if o.kube == nil {
		o.kube = e.kube
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	pol := backoff.Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	rep := agent.NewReporter(o.hub, o.clock, pol, log)
	reg := prometheus.NewRegistry()
	h, err := agent.NewHalf(agent.HalfConfig{
		Vehicle: vehicleID, Half: hubv1.HalfVehicle, Dir: e.dir, Pinned: e.pinned,
		Hub: o.hub, Client: o.kube, Clock: o.clock,
		PollWait: 2 * time.Second, DriftInterval: o.drift, HealthDeadline: o.deadline, HealthPoll: 300 * time.Millisecond,
		Backoff: pol, Reports: rep, Gates: o.gates, Metrics: agent.NewMetrics(reg), Log: log,
	})
	if err != nil {
		e.t.Fatalf("agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{half: h, reg: reg, rep: rep, cancel: cancel, done: make(chan error, 1)}
	go rep.Run(ctx)
	go func() { r.done <- h.Run(ctx) }()
	e.t.Cleanup(r.stop)
	return r
}

// counter is the value of a counter with these label values.
func (r *running) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	var pairs []string
	for k, v := range labels {
		pairs = append(pairs, k, v)
	}
	return promtest.Value(t, r.reg, name, pairs...)
}

func (r *running) stop() {
	r.cancel()
	if err := <-r.done; err != nil && !errors.Is(err, context.Canceled) {
		panic(fmt.Sprintf("agent stopped with %v", err))
	}
	r.done <- context.Canceled // a second stop returns at once
}

// twin reads the vehicle's twin.
func (e *env) twin() hubv1.Twin {
	e.t.Helper()
	var tw hubv1.Twin
	e.hub.Admin(e.t, http.StatusOK, "GET", "/v1/vehicles/"+vehicleID, nil, &tw)
	return tw
}

// reported waits until the vehicle half's report satisfies ok.
func (e *env) reported(timeout time.Duration, ok func(hubv1.Reported) error) hubv1.Reported {
	e.t.Helper()
	var last hubv1.Reported
	e.cluster.Eventually(e.t, timeout, func() error {
		for _, r := range e.twin().Reported {
			if r.Half == hubv1.HalfVehicle {
				last = r
				return ok(r)
			}
		}
		return errors.New("no report yet")
	})
	return last
}

// phase is a reported() check: revision rev reported in phase.
func phase(rev int64, p string) func(hubv1.Reported) error {
	return func(r hubv1.Reported) error {
		if r.AppliedRevision != rev || r.Phase != p {
			return fmt.Errorf("reported revision %d %s (want %d %s); failure %+v, refused %+v, message %q", r.AppliedRevision, r.Phase, rev, p, r.Failure, r.Refused, r.Message)
		}
		return nil
	}
}

// link is a TCP relay in front of the hub that the test can cut: a cut
// closes the listener and every connection, so the agent sees connection
// refused, as it would with the hub stopped.
type link struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex // guards ln and conns
	ln    net.Listener
	conns map[net.Conn]bool
}

func newLink(t *testing.T, hubURL string) *link {
	u, err := url.Parse(hubURL)
	if err != nil {
		t.Fatal(err)
	}
	l := &link{t: t, target: u.Host, conns: map[net.Conn]bool{}}
	l.Up()
	t.Cleanup(l.Down)
	return l
}

// URL is the hub's URL through the link.
func (l *link) URL() string { return "https://" + l.addr }

// Up (re)opens the link on the same address.
func (l *link) Up() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return
	}
	addr := l.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		l.t.Fatalf("link: %v", err)
	}
	l.ln, l.addr = ln, ln.Addr().String()
	go l.accept(ln)
}

// Down cuts the link.
func (l *link) Down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for c := range l.conns {
		c.Close()
	}
	clear(l.conns)
}

func (l *link) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.ln != ln {
			l.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		l.conns[c], l.conns[up] = true, true
		l.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}
