package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/facts"
	"github.com/misaki-io/misaki/internal/agent/gate"
	"github.com/misaki-io/misaki/internal/agent/identity"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// Config is the agent process's configuration (cmd/misaki-agent's flags).
type Config struct {
	HubURL             string
	HubCAFile          string
	BootstrapTokenFile string
	RootFile           string
	StateDir           string
	Kube               *rest.Config
	// Cloud runs the fleet's cloud halves with the operator token in
	// OperatorTokenFile (scope cloud-agent).
	Cloud             bool
	OperatorTokenFile string
	DriftInterval     time.Duration
	HealthDeadline    time.Duration
	PollWait          time.Duration
	// FactsInterval is how often the cluster's facts are read again
	// (default 10m).
	FactsInterval time.Duration
	// VehicleState is where the vehicle's state for the rollout gates is
	// read: an http:// or https:// URL, or a file. Empty: nowhere, and
	// every gate fails closed. Not used with Cloud.
	VehicleState string
	// VehicleStateMaxAge is how old that state may be (its "updated"
	// member, or a file's modification time); 0: any age.
	VehicleStateMaxAge time.Duration
	// Timezone is the vehicle's IANA time zone for window gates when its
	// state names none ("": UTC).
	Timezone string
	// GateInterval is how often a waiting revision's gates are evaluated
	// again (default 15s).
	GateInterval time.Duration
	// Listen serves /metrics, /healthz and /readyz ("" for none).
	Listen  string
	Version string
	Clock   clock.Clock
	// Ready receives the listen address once serving (tests).
	Ready chan<- string
}

// retry is the hub-call retry policy: 1 s doubling to 5 min, ±50 %.
var retry = backoff.Policy{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.5}

// Run is the agent process: enrol if needed, then keep the vehicle's half
// (or, with Cloud, every vehicle's cloud half) converged until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.FactsInterval <= 0 {
		cfg.FactsInterval = 10 * time.Minute
	}
	if cfg.HubURL == "" {
		return errors.New("agent: --hub is required")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("agent: state dir: %w", err)
	}
	roots, err := loadRoots(cfg.HubCAFile)
	if err != nil {
		return err
	}
	pinned, err := readOptional(cfg.RootFile)
	if err != nil {
		return fmt.Errorf("agent: --root-file: %w", err)
	}
	kcfg := rest.CopyConfig(cfg.Kube)
	if kcfg.QPS == 0 {
		// client-go's default (5/s, burst 10) makes a 200-object apply
		// (a GET, a dry-run and an apply each) take over a minute; these
		// are Flux's.
		kcfg.QPS, kcfg.Burst = 50, 300
	}
	kcfg.UserAgent = "misaki-agent/" + cfg.Version
	kube, err := client.New(kcfg, client.Options{})
	if err != nil {
		return fmt.Errorf("agent: kubernetes client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var ready sync.Once
	readyCh := make(chan struct{})
	markReady := func() { ready.Do(func() { close(readyCh) }) }
	if cfg.Listen != "" {
		stop, err := serve(cfg.Listen, reg, readyCh, cfg.Ready, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	extra := func(r *hubv1.Reported) { r.AgentVersion = cfg.Version }
	if cfg.Cloud {
		if cfg.VehicleState != "" {
			log.Warn("--vehicle-state is not used with --cloud: the cloud half applies without vehicle-state gates")
		}
		return runCloud(ctx, cfg, roots, pinned, kube, reg, extra, markReady, log)
	}
	gates, err := gateConfig(cfg)
	if err != nil {
		return err
	}

	id, err := identity.Load(cfg.StateDir, cfg.Clock)
	if errors.Is(err, identity.ErrNotEnrolled) {
		id, err = enrol(ctx, cfg, roots, log)
	}
	if err != nil {
		return err
	}
	roots = id.Roots(roots)
	hub := id.Client(cfg.HubURL, roots)
	log.Info("agent starting", "vehicle", id.Vehicle(), "hub", cfg.HubURL, "certificateExpires", id.NotAfter().Format(time.RFC3339),
		"vehicleState", cfg.VehicleState, "timezone", gates.Zone.String())

	fc, err := facts.New(cfg.Kube)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	var (
		factsMu sync.Mutex
		snap    *facts.Snapshot
	)
	extra = func(r *hubv1.Reported) {
		r.AgentVersion = cfg.Version
		factsMu.Lock()
		defer factsMu.Unlock()
		if snap != nil {
			f := snap.Facts
			r.Facts, r.Capacity, r.Allocatable = &f, snap.Capacity, snap.Allocatable
		}
	}
	rep := NewReporter(hub, cfg.Clock, retry, log)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_agent_reports_pending", Help: "Reports not yet accepted by the hub."}, func() float64 { return float64(rep.Pending()) }))
	half, err := NewHalf(HalfConfig{
		Vehicle: id.Vehicle(), Half: hubv1.HalfVehicle, Dir: cfg.StateDir, Pinned: pinned,
		Hub: hub, Client: kube, Clock: cfg.Clock, PollWait: cfg.PollWait,
		DriftInterval: cfg.DriftInterval, HealthDeadline: cfg.HealthDeadline,
		Backoff: retry, Reports: rep, Extra: extra, Gates: gates, Metrics: NewMetrics(reg), Log: log,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(3)
	go func() { defer wg.Done(); rep.Run(ctx) }()
	go func() { defer wg.Done(); id.RunRenewal(ctx, hub, backoff.New(retry, cfg.Clock), log) }()
	go func() {
		defer wg.Done()
		for {
			s, err := fc.Collect(ctx)
			if err != nil {
				log.Warn("reading the cluster's facts", "err", err)
			} else {
				factsMu.Lock()
				changed := snap == nil || !sameFacts(*snap, s)
				snap = &s
				factsMu.Unlock()
				if changed {
					half.Refresh()
				}
			}
			if backoff.Sleep(ctx, cfg.Clock, cfg.FactsInterval) != nil {
				return
			}
		}
	}()
	markReady()
	return half.Run(ctx)
}

func runCloud(ctx context.Context, cfg Config, roots *x509.CertPool, pinned []byte, kube client.Client, reg *prometheus.Registry, extra func(*hubv1.Reported), markReady func(), log *slog.Logger) error {
	tok, err := os.ReadFile(cfg.OperatorTokenFile)
	if err != nil {
		return fmt.Errorf("agent: --cloud needs --operator-token-file (a hub operator token with scope cloud-agent): %w", err)
	}
	if len(pinned) == 0 {
		return errors.New("agent: --cloud needs --root-file (the hub's trust root)")
	}
	hub := hubclient.New(cfg.HubURL, roots, nil)
	hub.Token = strings.TrimSpace(string(tok))
	rep := NewReporter(hub, cfg.Clock, retry, log)
	f := NewFleet(FleetConfig{
		Dir: filepath.Join(cfg.StateDir, "cloud"), Pinned: pinned, Hub: hub, Client: kube, Clock: cfg.Clock,
		ChangesWait: cfg.PollWait, DriftInterval: cfg.DriftInterval, HealthDeadline: cfg.HealthDeadline,
		Backoff: retry, Reports: rep, Extra: extra, Metrics: NewMetrics(reg), Log: log,
	})
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_agent_reports_pending", Help: "Reports not yet accepted by the hub."}, func() float64 { return float64(rep.Pending()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "misaki_agent_vehicles", Help: "Vehicles whose cloud half this agent applies."}, func() float64 { return float64(f.Vehicles()) }),
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); rep.Run(ctx) }()
	defer func() { <-done }()
	log.Info("cloud agent starting", "hub", cfg.HubURL)
	markReady()
	return f.Run(ctx)
}

// gateConfig is the vehicle half's gate configuration from cfg; it
// does no I/O.
func gateConfig(cfg Config) (GateConfig, error) {
	zone, err := time.LoadLocation(cfg.Timezone)
	if err != nil {
		return GateConfig{}, fmt.Errorf("agent: --timezone %q: %w (an IANA name such as Europe/Berlin)", cfg.Timezone, err)
	}
	src, err := gate.Open(cfg.VehicleState, cfg.VehicleStateMaxAge, cfg.Clock)
	if err != nil {
		return GateConfig{}, fmt.Errorf("agent: --vehicle-state: %w", err)
	}
	return GateConfig{Source: src, Zone: zone, Interval: cfg.GateInterval}, nil
}

// enrol spends the bootstrap token.
func enrol(ctx context.Context, cfg Config, roots *x509.CertPool, log *slog.Logger) (*identity.Identity, error) {
	b, err := os.ReadFile(cfg.BootstrapTokenFile)
	if err != nil {
		return nil, fmt.Errorf("agent: not enrolled yet and no bootstrap token (--bootstrap-token-file): %w", err)
	}
	token := strings.TrimSpace(string(b))
	bo := backoff.New(retry, cfg.Clock)
	for {
		id, err := identity.Enrol(ctx, cfg.StateDir, hubclient.New(cfg.HubURL, roots, nil), token, cfg.Clock)
		if err == nil {
			log.Info("enrolled", "vehicle", id.Vehicle())
			return id, nil
		}
		if isClientError(err) {
			return nil, fmt.Errorf("agent: enrolment refused: %w (make a new token: misaki vehicle token <id>)", err)
		}
		delay := bo.Next()
		log.Warn("enrolment failed; retrying", "err", err, "retry", delay.Round(time.Millisecond))
		if err := backoff.Sleep(ctx, cfg.Clock, delay); err != nil {
			return nil, err
		}
	}
}

func loadRoots(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if file == "" {
		return pool, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("agent: --hub-ca-file: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("agent: --hub-ca-file %s: no PEM certificate", file)
	}
	return pool, nil
}

func readOptional(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func sameFacts(a, b facts.Snapshot) bool {
	return reflect.DeepEqual(a.Facts, b.Facts) && maps.Equal(a.Capacity, b.Capacity) && maps.Equal(a.Allocatable, b.Allocatable)
}

// serve runs the metrics and health endpoints.
func serve(addr string, reg *prometheus.Registry, ready <-chan struct{}, announce chan<- string, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: --listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ready:
			w.Write([]byte("ok\n"))
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving metrics", "err", err)
		}
	}()
	if announce != nil {
		announce <- ln.Addr().String()
	}
	return func() { srv.Close() }, nil
}
