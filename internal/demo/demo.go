// Package demo runs Misaki's demo: real processes on loopback (a cloud
// upstream, the misaki-proxy binary and a vehicle app) while a scenario of
// timed steps drops and restores the vehicle's links. It prints a live
// summary every second and ends with a report and PASS/FAIL checks.
//
// The orchestrator builds nothing: it runs the proxy binary it is given and
// re-executes its own binary for the upstream and app subcommands.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/demo/proc"
	"github.com/misaki-io/misaki/internal/demo/vehicle"
)

// ErrChecksFailed is returned by Run when the demo ran to the end but at
// least one check failed; the report says which.
var ErrChecksFailed = errors.New("demo: checks failed")

// Config configures a demo run. The zero value runs the offline-hold
// scenario at full speed with bin/misaki-proxy.
type Config struct {
	// ProxyBin is the misaki-proxy binary. Default bin/misaki-proxy.
	ProxyBin string
	// Speed multiplies every scenario time; 0.5 runs twice as fast.
	// Default 1.
	Speed float64
	// Keep leaves the temporary directory (config, logs, stats) in place.
	Keep bool
	// Self is the binary that serves the upstream and app subcommands.
	// Default: the running executable.
	Self string
	// Scenario is hold, spool or all (one after the other). Default all.
	Scenario string
}

func (c *Config) setDefaults() {
	if c.ProxyBin == "" {
		c.ProxyBin = filepath.Join("bin", "misaki-proxy")
	}
	if c.Speed == 0 {
		c.Speed = 1
	}
	if c.Scenario == "" {
		c.Scenario = "all"
	}
}

// Validate checks the configuration without doing I/O.
func (c *Config) Validate() error {
	if c.Speed < 0.1 || c.Speed > 10 {
		return fmt.Errorf("demo: --speed %v: use a factor between 0.1 and 10 (0.5 runs twice as fast)", c.Speed)
	}
	switch c.Scenario {
	case "", "all", "hold", "spool":
	default:
		return fmt.Errorf("demo: --scenario %q: use hold, spool or all", c.Scenario)
	}
	return nil
}

// How long children get to start and to stop.
const (
	startTimeout = 15 * time.Second
	stopGrace    = 5 * time.Second
)

// Run runs the scenarios cfg.Scenario names (offline hold, then offline
// spool through a crash), printing to out, until they end or ctx does.
// Every child is stopped and the temporary directory removed (unless Keep)
// before it returns, whatever happened.
func Run(ctx context.Context, log *slog.Logger, cfg Config, out io.Writer) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	var scs []Scenario
	if cfg.Scenario == "all" || cfg.Scenario == "hold" {
		scs = append(scs, OfflineHold(cfg.Speed))
	}
	if cfg.Scenario == "all" || cfg.Scenario == "spool" {
		scs = append(scs, OfflineSpool(cfg.Speed))
	}
	failed := false
	for i, sc := range scs {
		if i > 0 {
			fmt.Fprintln(out)
		}
		err := RunScenario(ctx, log, cfg, sc, out)
		if errors.Is(err, ErrChecksFailed) {
			failed = true
			continue
		}
		if err != nil {
			return err
		}
	}
	if failed {
		return ErrChecksFailed
	}
	return nil
}

// RunScenario runs sc; see Run.
func RunScenario(ctx context.Context, log *slog.Logger, cfg Config, sc Scenario, out io.Writer) error {
	res, err := RunScenarioChecks(ctx, log, cfg, sc, out)
	if err == nil && !allOK(res) {
		return ErrChecksFailed
	}
	return err
}

// RunScenarioChecks runs sc as RunScenario does and returns each check's
// verdict; err is for a run that did not get as far as the checks.
func RunScenarioChecks(ctx context.Context, log *slog.Logger, cfg Config, sc Scenario, out io.Writer) (_ []CheckResult, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.ProxyBin); err != nil {
		return nil, fmt.Errorf("demo: proxy binary: %w; build it with: go build -o bin/misaki-proxy ./cmd/misaki-proxy (or pass --proxy-bin)", err)
	}
	if cfg.Self == "" {
		if cfg.Self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("demo: find own executable: %w", err)
		}
	}
	con := &console{w: out}

	dir, err := os.MkdirTemp("", "misaki-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if cfg.Keep {
			con.printf("kept %s (config, logs, app stats)\n", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			log.Warn("removing temporary directory", "dir", dir, "err", rerr)
		}
	}()
	ps := &proc.Group{Dir: dir}
	defer func() {
		if serr := ps.StopAll(stopGrace); serr != nil {
			log.Warn("stopping children", "err", serr)
		}
	}()

	addrs, err := freeAddrs()
	if err != nil {
		return nil, err
	}
	addrs.Dir = dir
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4},
	}
	defer client.CloseIdleConnections()

	con.printf("misaki demo: %s (speed %v); files in %s\n", sc.Name, cfg.Speed, dir)

	up, err := ps.Start("upstream", cfg.Self, "upstream", "--listen", addrs.Upstream)
	if err != nil {
		return nil, err
	}
	if err := waitOK(ctx, client, "http://"+addrs.Upstream+"/stats", up); err != nil {
		return nil, err
	}
	con.printf("  upstream  http://%s  (log %s)\n", addrs.Upstream, up.Log)

	watch := []*proc.Proc{up}
	if sc.Gateway {
		gw, err := startGateway(ctx, ps, client, cfg, &addrs)
		if err != nil {
			return nil, err
		}
		watch = append(watch, gw)
		con.printf("  gateway   https://%s (mutual TLS), admin %s  (log %s)\n", addrs.Gateway, addrs.GatewayAdmin, gw.Log)
	}

	var res *resolver
	if sc.DNS {
		if res, err = startResolver(addrs.Resolver); err != nil {
			return nil, err
		}
		defer res.stop()
		con.printf("  resolver  %s (the cluster's DNS, for %s)\n", addrs.Resolver, externalName)
	}

	cfgPath := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(sc.ProxyConfig(addrs)), 0o600); err != nil {
		return nil, fmt.Errorf("demo: write proxy config: %w", err)
	}
	admin := "http://" + addrs.Admin
	starts := 0
	startProxy := func(ctx context.Context) (*proc.Proc, error) {
		starts++
		name := "proxy"
		if starts > 1 {
			name = fmt.Sprintf("proxy-%d", starts)
		}
		p, err := ps.Start(name, cfg.ProxyBin, "--config", cfgPath)
		if err != nil {
			return nil, err
		}
		return p, waitOK(ctx, client, admin+"/readyz", p)
	}
	proxy, err := startProxy(ctx)
	if err != nil {
		return nil, err
	}
	con.printf("  proxy     mesh %s, admin %s  (config %s, log %s)\n", addrs.Mesh, addrs.Admin, cfgPath, proxy.Log)
	for _, l := range sc.Intro {
		con.printf("  %s\n", l)
	}

	statsPath := filepath.Join(dir, "app-stats.json")
	env := &Env{start: time.Now(), out: con, admin: admin, client: client, marks: make(map[string]time.Time),
		proxy: proxy, startProxy: startProxy, resolver: res, dns: addrs.DNS}
	watching := func() []*proc.Proc {
		if p := env.currentProxy(); p != nil {
			return append(slices.Clone(watch), p)
		}
		return watch
	}
	appArgs := []string{"app",
		"--proxy", addrs.Mesh, "--host", sc.Host,
		"--rate", strconv.Itoa(sc.Rate), "--duration", sc.Duration.String(),
		"--retries", strconv.Itoa(sc.AppRetries),
		"--stats-file", statsPath}
	if sc.DNS {
		appArgs = append(appArgs, "--dns", addrs.DNS)
	}
	app, err := ps.Start("app", cfg.Self, appArgs...)
	if err != nil {
		return nil, err
	}

	liveCtx, stopLive := context.WithCancel(ctx)
	var live sync.WaitGroup
	live.Go(func() { showLive(liveCtx, env, sc.Route, statsPath) })
	defer func() { stopLive(); live.Wait() }()

	if err := runSteps(ctx, env, sc.Steps, watching); err != nil {
		return nil, err
	}
	// The app stops sending after sc.Duration and exits once every request
	// has an answer; the client timeout (30s) bounds the wait.
	select {
	case <-app.Done():
	case <-ctx.Done():
		return nil, fmt.Errorf("demo: interrupted: %w", ctx.Err())
	case <-anyDone(watching()):
		for _, p := range watching() {
			if p.Exited() {
				return nil, exitedEarly(p)
			}
		}
	}
	stopLive()
	live.Wait()
	if app.Err() != nil {
		return nil, fmt.Errorf("demo: app failed: %w; see %s", app.Err(), app.Log)
	}

	r := &Result{Start: env.start, Marks: env.snapshotMarks()}
	if r.App, err = vehicle.ReadStats(statsPath); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if !r.App.Done {
		return nil, fmt.Errorf("demo: the app exited without final stats; see %s", app.Log)
	}
	if sc.Drain {
		if err := waitDrained(ctx, env, 60*time.Second); err != nil {
			return nil, err
		}
	}
	if err := getJSON(ctx, client, "http://"+addrs.Upstream+"/stats", &r.Upstream); err != nil {
		return nil, fmt.Errorf("demo: upstream stats: %w", err)
	}
	return report(con, r, sc.Checks), nil
}

// runSteps runs each step at its time, failing early if a process watch
// returns (the proxy, the upstream, the gateway) exits.
func runSteps(ctx context.Context, e *Env, steps []Step, watch func() []*proc.Proc) error {
	for _, st := range steps {
		t := time.NewTimer(time.Until(e.start.Add(st.At)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("demo: interrupted: %w", ctx.Err())
		case <-anyDone(watch()):
			t.Stop()
		}
		for _, p := range watch() {
			if p.Exited() {
				return exitedEarly(p)
			}
		}
		if err := st.Do(ctx, e); err != nil {
			return fmt.Errorf("demo: step at %v: %w", st.At, err)
		}
	}
	return nil
}

// anyDone returns a channel closed when any of ps has exited.
func anyDone(ps []*proc.Proc) <-chan struct{} {
	c := make(chan struct{})
	var once sync.Once
	for _, p := range ps {
		go func() {
			<-p.Done()
			once.Do(func() { close(c) })
		}()
	}
	return c
}

func exitedEarly(p *proc.Proc) error {
	return fmt.Errorf("demo: %w", proc.Exited(p))
}

// waitOK polls url until it answers 200, p exits, or startTimeout passes.
func waitOK(ctx context.Context, c *http.Client, url string, p *proc.Proc) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("demo: wait for %s: %w", p.Name, err)
		}
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-p.Done():
			return exitedEarly(p)
		case <-ctx.Done():
			return fmt.Errorf("demo: %s not ready at %s: %w; see %s", p.Name, url, ctx.Err(), p.Log)
		}
	}
}

// startGateway writes the certificates and the gateway's configuration,
// and starts misaki-proxy --role gateway in front of the upstream.
func startGateway(ctx context.Context, ps *proc.Group, client *http.Client, cfg Config, a *Addrs) (*proc.Proc, error) {
	if err := writePKI(a.Dir, a); err != nil {
		return nil, err
	}
	path := filepath.Join(a.Dir, "gateway.yaml")
	gwCfg := fmt.Sprintf(`# Written by misaki-demo: the cloud gateway in front of the upstream.
role: gateway
listen: %s
admin: %s
gateway:
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  idempotency: {dir: %s}
routes:
  - {name: telemetry, hosts: ["*.cloud.misaki"], upstream: http://%s}
`, a.Gateway, a.GatewayAdmin, a.GatewayCert, a.GatewayKey, a.CA, filepath.Join(a.Dir, "gateway-keys"), a.Upstream)
	if err := os.WriteFile(path, []byte(gwCfg), 0o600); err != nil {
		return nil, fmt.Errorf("demo: write gateway config: %w", err)
	}
	gw, err := ps.Start("gateway", cfg.ProxyBin, "--config", path)
	if err != nil {
		return nil, err
	}
	return gw, waitOK(ctx, client, "http://"+a.GatewayAdmin+"/readyz", gw)
}

// waitDrained waits until the proxy's spool is empty.
func waitDrained(ctx context.Context, e *Env, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var sp struct {
			Routes []struct {
				Depth int64 `json:"depth"`
			} `json:"routes"`
		}
		if err := getJSON(ctx, e.client, e.admin+"/v1/spool", &sp); err == nil {
			left := int64(0)
			for _, r := range sp.Routes {
				left += r.Depth
			}
			if left == 0 {
				e.Say("spool drained")
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the spool did not drain within %v", limit)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: interrupted: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeAddrs picks seven free loopback ports (TCP; the DNS ones are used
// for UDP too, and are almost always free there as well). They are released before the
// children bind them, so another process could take one in between; the
// child then fails to start and says so.
func freeAddrs() (Addrs, error) {
	var addrs [7]string
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return Addrs{}, fmt.Errorf("demo: pick a free port: %w", err)
		}
		defer ln.Close() // hold all three until all are picked, so they differ
		addrs[i] = ln.Addr().String()
	}
	return Addrs{Mesh: addrs[0], Admin: addrs[1], Upstream: addrs[2], Gateway: addrs[3], GatewayAdmin: addrs[4],
		DNS: addrs[5], Resolver: addrs[6]}, nil
}

// console serialises the demo's output lines.
type console struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, format, args...)
}

// showLive prints a one-line summary every second until ctx ends.
func showLive(ctx context.Context, e *Env, route, statsPath string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		line := fmt.Sprintf("t=%.1fs ", e.Elapsed().Seconds())
		if s, err := vehicle.ReadStats(statsPath); err == nil {
			line += fmt.Sprintf("sent=%d direct=%d held=%d spooled=%d failed=%d lost=%d in-flight=%d",
				s.Sent, s.Direct, s.Held, s.Spooled, s.Failed, s.Lost, s.InFlight)
		} else {
			line += "app: no stats yet"
		}
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		routes, err := e.Routes(rctx)
		cancel()
		line += " | route " + route + ": "
		switch rs := findRoute(routes, route); {
		case err != nil:
			line += "unknown (" + err.Error() + ")"
		case rs == nil:
			line += "not in /v1/routes"
		default:
			line += fmt.Sprintf("usable=%v held=%d", rs.Usable, rs.Held)
			if rs.Reason != "" {
				line += " (" + rs.Reason + ")"
			}
		}
		if ctx.Err() == nil {
			e.out.printf("%s\n", line)
		}
	}
}

func findRoute(routes []RouteStatus, name string) *RouteStatus {
	for i := range routes {
		if routes[i].Name == name {
			return &routes[i]
		}
	}
	return nil
}
