package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/demo/proc"
	"github.com/misaki-io/misaki/internal/demo/upstream"
	"github.com/misaki-io/misaki/internal/demo/vehicle"
)

// Scenario is one demo: the proxy configuration, the app's traffic, timed
// steps that change the world while the app sends, and the checks that
// judge the outcome. Times are already scaled by the demo's speed.
type Scenario struct {
	Name string
	// Host is the mesh name the app calls; Route is the name of its route in
	// the proxy configuration (shown in the live summary).
	Host, Route string
	// Rate is the app's requests per second; it sends for Duration.
	Rate     int
	Duration time.Duration
	// ProxyConfig renders the proxy's YAML for the demo's addresses.
	ProxyConfig func(Addrs) string
	// Intro lines are printed before the app starts.
	Intro []string
	// Steps run in order, each at its time after the app starts.
	Steps []Step
	// Checks judge the result; one failing makes the demo fail.
	Checks []Check
	// Gateway puts the cloud gateway (misaki-proxy --role gateway, mutual
	// TLS) between the proxy and the upstream.
	Gateway bool
	// AppRetries is the app's --retries (transport errors).
	AppRetries int
	// Drain waits, after the app is done, until the proxy's spool is empty.
	Drain bool
	// DNS runs the cluster's resolver (Addrs.Resolver) for the proxy's DNS
	// server (Addrs.DNS), and has the app resolve Host through the proxy.
	DNS bool
}

// Addrs are the loopback addresses and files of one demo run.
type Addrs struct {
	Mesh, Admin, Upstream string // host:port
	// Gateway and GatewayAdmin are set when the scenario has a gateway.
	Gateway, GatewayAdmin string
	// DNS is the proxy's DNS address, and Resolver the cluster resolver's
	// it forwards to, when the scenario has DNS.
	DNS, Resolver string
	// Dir is the run's temporary directory (for the spool, say).
	Dir string
	// Certificates (PEM files) when the scenario has a gateway.
	CA, GatewayCert, GatewayKey, VehicleCert, VehicleKey string
}

// Step is something that happens At a time after the app starts.
type Step struct {
	At time.Duration
	Do func(ctx context.Context, e *Env) error
}

// Check judges one property of the result. Eval returns whether it holds
// and a few words of evidence.
type Check struct {
	Name string
	Eval func(r *Result) (ok bool, detail string)
}

// Result is what a run measured.
type Result struct {
	Start    time.Time // when the app was started: t=0
	App      vehicle.Stats
	Upstream upstream.Stats
	// Marks are the times steps recorded with Env.Mark.
	Marks map[string]time.Time
}

// T returns t as seconds since the start, like "t=13.0s".
func (r *Result) T(t time.Time) string { return fmt.Sprintf("t=%.1fs", t.Sub(r.Start).Seconds()) }

// Env is what steps act on.
type Env struct {
	start  time.Time
	out    *console
	admin  string // base URL of the proxy's admin API
	client *http.Client

	mu     sync.Mutex // guards marks, proxy and killed
	marks  map[string]time.Time
	proxy  *proc.Proc
	killed bool // the proxy was killed on purpose and not yet restarted
	// startProxy starts the proxy again and waits until it is ready.
	startProxy func(ctx context.Context) (*proc.Proc, error)
	// resolver is the cluster's resolver and dns the proxy's DNS address,
	// when the scenario has DNS.
	resolver *resolver
	dns      string
}

// Lookup resolves name (IPv4) through the proxy's DNS server, as an app
// whose resolv.conf names the proxy would.
func (e *Env) Lookup(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := vehicle.ResolverAt(e.dns).LookupNetIP(ctx, "ip4", name)
	if err != nil {
		return "", err
	}
	return ips[0].String(), nil
}

// StopResolver stops the cluster's resolver: the vehicle is offline.
func (e *Env) StopResolver() { e.resolver.stop() }

// currentProxy returns the running proxy, or nil between KillProxy and
// RestartProxy.
func (e *Env) currentProxy() *proc.Proc {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.killed {
		return nil
	}
	return e.proxy
}

// KillProxy kills the proxy with SIGKILL, as a crash or power loss would,
// and waits until it is gone.
func (e *Env) KillProxy() error {
	e.mu.Lock()
	p := e.proxy
	e.killed = true
	e.mu.Unlock()
	return p.Kill()
}

// RestartProxy starts the proxy again with the same configuration.
func (e *Env) RestartProxy(ctx context.Context) error {
	p, err := e.startProxy(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.proxy, e.killed = p, false
	e.mu.Unlock()
	return nil
}

// Elapsed is the time since the app started.
func (e *Env) Elapsed() time.Duration { return time.Since(e.start) }

// Say prints a scenario event, stamped with the elapsed time.
func (e *Env) Say(format string, args ...any) {
	e.out.printf("[t=%.1fs] %s\n", e.Elapsed().Seconds(), fmt.Sprintf(format, args...))
}

// Mark records the current time under name, for checks to use.
func (e *Env) Mark(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.marks[name] = time.Now()
}

func (e *Env) snapshotMarks() map[string]time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.marks)
}

// SetLink sets a link's state (up, down or auto) through the proxy's admin
// API, as the vehicle's connectivity manager does.
func (e *Env) SetLink(ctx context.Context, name, state string) error {
	body, _ := json.Marshal(map[string]string{"state": state})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, e.admin+"/v1/links/"+name, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("set link %s %s: %w", name, state, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("set link %s %s: %w", name, state, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("set link %s %s: %s: %s", name, state, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// RouteStatus is the part of the admin API's GET /v1/routes the demo shows.
type RouteStatus struct {
	Name   string `json:"name"`
	Usable bool   `json:"usable"`
	Reason string `json:"reason"`
	Held   int    `json:"heldRequests"`
}

// Routes fetches the proxy's routes.
func (e *Env) Routes(ctx context.Context) ([]RouteStatus, error) {
	var v struct {
		Routes []RouteStatus `json:"routes"`
	}
	if err := getJSON(ctx, e.client, e.admin+"/v1/routes", &v); err != nil {
		return nil, err
	}
	return v.Routes, nil
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode: %w", url, err)
	}
	return nil
}
