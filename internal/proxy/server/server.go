// Package server assembles the edge proxy from its parts (links, upstream
// health, hold queues, forwarders, admin API) and runs it: it binds the mesh
// and admin listeners, decides for each route whether it is usable whenever a
// link or an upstream changes, and serves apps' requests.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/h2guard"
	"github.com/misaki-io/misaki/internal/proxy/admin"
	"github.com/misaki-io/misaki/internal/proxy/budget"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/h1"
	"github.com/misaki-io/misaki/internal/proxy/health"
	"github.com/misaki-io/misaki/internal/proxy/hold"
	"github.com/misaki-io/misaki/internal/proxy/link"
	"github.com/misaki-io/misaki/internal/proxy/listenfd"
	"github.com/misaki-io/misaki/internal/proxy/localdns"
	"github.com/misaki-io/misaki/internal/proxy/route"
)

// ShutdownGrace is how long in-flight requests may finish after the proxy is
// told to stop.
const ShutdownGrace = 10 * time.Second

// Server is one edge proxy.
type Server struct {
	cfg        *config.Config
	log        *slog.Logger
	clock      clock.Clock
	reg        *prometheus.Registry
	metrics    *metrics
	links      *link.Monitor
	holdBudget *hold.Budget   // bounds what all routes hold together (holdLimit)
	ledger     *budget.Ledger // metered byte counts; nil unless a route has a budget

	set      atomic.Pointer[routeSet] // the routes requests are matched against
	applyMu  sync.Mutex               // serialises Apply
	applyCh  chan applyReq            // Apply -> manageRoutes
	retired  []*liveRoute             // replaced routes still draining; guarded by evalMu
	dnsAddrs []netip.Addr             // what mesh names resolve to

	dns   *localdns.Server // nil without dns.listen
	dnsPC *net.UDPConn
	dnsLn net.Listener

	evalMu sync.Mutex // serialises evaluate

	spool    *spooling     // nil unless some route spools; set by Run
	httpDone chan struct{} // closed once the mesh server has shut down

	meshLn, adminLn net.Listener
	healthLn        net.Listener // nil unless cfg.Health is set
	stopping        atomic.Bool
	active          atomic.Int64 // requests being served now
	rejectedConns   prometheus.Counter

	sockets *listenfd.Set // handed over by a supervisor or systemd; nil: bind
}

// liveRoute is a route as it runs: its config and the parts that serve it
// (forwarder, upstream health, hold queue), with its state as last evaluated.
type liveRoute struct {
	cfg    config.Route
	fwd    *forward.Upstream
	health *health.Upstream
	queue  *hold.Queue

	// Per-outcome counters, resolved once so the hot path does no label lookup.
	count    map[string]prometheus.Counter
	duration map[string]prometheus.Observer // by delivery

	inflight atomic.Int64       // requests and deliveries using this route now
	stop     context.CancelFunc // ends the health checks; set by startRoute

	// usable is whether requests may go out now: a link the route may use
	// and a reachable upstream, as last evaluated. One atomic load, for the
	// hot path; false until the first evaluation.
	usable atomic.Bool
	over   atomic.Bool // over its metered budget, as last evaluated

	// guarded by Server.evalMu
	linkOK bool
	reason string
	path   forward.Path // how the route's connections leave; zero when the kernel chooses
}

// Options are optional dependencies; the zero value uses real ones.
type Options struct {
	Clock clock.Clock
	// LinkScanner replaces reading the kernel's interfaces (tests).
	LinkScanner link.Scanner
	// Endpoints are the host:port addresses each route dials, by route
	// name, as the xDS client kept them; routes without any dial their
	// upstream URL's host.
	Endpoints map[string][]string
	// Sockets, when not nil, are the listening sockets handed over by a
	// supervisor or by systemd (internal/proxy/listenfd): Listen takes
	// them instead of binding the addresses.
	Sockets *listenfd.Set
}

// New builds a server from a validated config. It reads the TLS files the
// routes name and does no other I/O.
func New(cfg *config.Config, log *slog.Logger, opt Options) (*Server, error) {
	clk := opt.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	s := &Server{
		cfg:        cfg,
		log:        log,
		clock:      clk,
		reg:        prometheus.NewRegistry(),
		holdBudget: hold.NewBudget(hold.Limit{Requests: cfg.HoldLimit.Requests, Bytes: int64(cfg.HoldLimit.Bytes)}),
		applyCh:    make(chan applyReq),
		sockets:    opt.Sockets,

		httpDone: make(chan struct{}),
	}
	s.links = link.NewMonitor(cfg.Links, cfg.LinkScan.PollInterval.D(), log, clk, s.evaluate)
	if opt.LinkScanner != nil {
		s.links.SetScanner(opt.LinkScanner)
	}
	if cfg.LinkAgent.Address != "" {
		s.links.SetAgent(cfg.LinkAgent.Address)
	}
	s.metrics = newMetrics(s.reg, s)
	s.rejectedConns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "misaki_proxy_connections_rejected_total",
		Help: "Client connections refused with 503 because limits.maxConnections was reached.",
	})
	s.reg.MustRegister(s.rejectedConns)
	var rts []*liveRoute
	for _, rc := range cfg.Routes {
		rt, err := s.newRoute(rc)
		if err != nil {
			return nil, err
		}
		rt.fwd.SetEndpoints(opt.Endpoints[rc.Name])
		rts = append(rts, rt)
	}
	s.set.Store(newRouteSet(rts))
	return s, nil
}

// Listen binds the mesh and admin listeners, or takes the ones handed over
// (Options.Sockets). Addresses with port 0 get a free port; MeshAddr and
// AdminAddr tell which.
func (s *Server) Listen() error {
	defer s.closeUnusedSockets()
	var err error
	if s.meshLn, err = s.listenTCP(listenfd.Mesh, s.cfg.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if s.adminLn, err = s.listenTCP(listenfd.Admin, s.cfg.Admin); err != nil {
		s.meshLn.Close()
		return fmt.Errorf("admin: %w", err)
	}
	if s.cfg.Health != "" {
		if s.healthLn, err = s.listenTCP(listenfd.Health, s.cfg.Health); err != nil {
			s.closeListeners()
			return fmt.Errorf("health: %w", err)
		}
	}
	if err := s.listenDNS(); err != nil {
		s.closeListeners()
		return err
	}
	return nil
}

// closeListeners closes what Listen bound, after a failed start.
func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.meshLn, s.adminLn, s.healthLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.dnsPC != nil {
		s.dnsPC.Close()
	}
	if s.dnsLn != nil {
		s.dnsLn.Close()
	}
}

// MeshAddr is the bound mesh listener address (after Listen).
func (s *Server) MeshAddr() string { return s.meshLn.Addr().String() }

// AdminAddr is the bound admin listener address (after Listen).
func (s *Server) AdminAddr() string { return s.adminLn.Addr().String() }

// HealthAddr is the bound health listener address, or "" when health is off.
func (s *Server) HealthAddr() string {
	if s.healthLn == nil {
		return ""
	}
	return s.healthLn.Addr().String()
}

// Run serves until ctx ends, then drains for up to ShutdownGrace. It calls
// Listen if the caller has not.
func (s *Server) Run(ctx context.Context) error {
	if s.meshLn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	lim := s.cfg.Limits
	mesh := &http.Server{
		Handler:           s,
		Protocols:         &protos,
		MaxHeaderBytes:    int(lim.MaxHeaderBytes),
		ReadHeaderTimeout: lim.ReadHeaderTimeout.D(),
		IdleTimeout:       lim.IdleTimeout.D(),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: lim.HTTP2.MaxConcurrentStreams},
	}
	guard := h2guard.New(lim.HTTP2.Guard(), h2guard.Options{Log: s.log.With("component", "h2guard"), Clock: s.clock, MetricPrefix: "misaki_proxy"})
	s.reg.MustRegister(guard)
	if err := guard.ConfigureServer(mesh); err != nil {
		s.closeListeners()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	if s.dns != nil {
		// DNS first: apps resolve names (the mesh's own, and the cache
		// file's) while the spool opens, which takes a while for a large
		// backlog after a reboot.
		g.Go(func() error { return s.runDNS(gctx) })
	}
	if err := s.openLedger(); err != nil {
		cancel()
		g.Wait()
		s.closeListeners()
		return err
	}
	if s.spools() {
		if err := s.openSpool(); err != nil {
			cancel()
			g.Wait()
			s.closeListeners()
			return err
		}
	}
	adminSrv := &http.Server{
		Handler: admin.Handler(admin.Options{
			Links: s.links, Routes: s.routeStatus, Ready: s.ready, Gatherer: s.reg, Log: s.log, Spool: s.adminSpool(),
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("listening", "mesh", s.MeshAddr(), "admin", s.AdminAddr(), "health", s.HealthAddr(), "dns", s.DNSAddr(), "routes", len(s.set.Load().routes), "links", len(s.cfg.Links))

	// The first link scan, and with it the first verdict on every route,
	// before the mesh server takes a connection: requests that waited in
	// the listen backlog (a restart under the supervisor) would otherwise
	// find every route unusable and get 503.
	s.links.Rescan()
	g.Go(func() error { return s.links.Run(gctx) })
	if s.links.WaitAgent(gctx, agentWait) {
		s.evaluate()
	}
	g.Go(func() error { return s.meter(gctx) })
	g.Go(func() error { return s.trimAfterBursts(gctx) })
	g.Go(func() error { return s.manageRoutes(gctx) })
	if s.spool != nil {
		g.Go(func() error { return s.runSpool(gctx, s.httpDone) })
	}
	meshLn := newLimitListener(s.meshLn, lim.MaxConnections, s.rejectedConns)
	// The mesh server: the lean HTTP/1.1 server in front of net/http, or
	// net/http alone (http1Server: stdlib).
	var meshSrv interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
	} = mesh
	if s.cfg.HTTP1Server != config.HTTP1Stdlib {
		meshSrv = &h1.Server{
			Handler: s, Fallback: mesh,
			ReadHeaderTimeout: lim.ReadHeaderTimeout.D(), IdleTimeout: lim.IdleTimeout.D(), Log: s.log,
		}
	}
	g.Go(func() error {
		if err := meshSrv.Serve(meshLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return serve(adminSrv, s.adminLn) })
	healthSrv := &http.Server{Handler: admin.Health(s.ready), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	if s.healthLn != nil {
		g.Go(func() error { return serve(healthSrv, s.healthLn) })
	}
	g.Go(func() error {
		<-gctx.Done()
		s.stopping.Store(true)
		s.log.Info("shutting down", "grace", ShutdownGrace)
		// Held requests are answered now rather than cut at the deadline.
		s.evalMu.Lock()
		routes := s.allRoutes()
		s.evalMu.Unlock()
		for _, rt := range routes {
			rt.queue.Close()
		}
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
		defer cancel()
		err := meshSrv.Shutdown(sctx)
		close(s.httpDone) // the spool closes after the last request that may write to it
		err = errors.Join(err, adminSrv.Shutdown(sctx), healthSrv.Shutdown(sctx))
		for _, rt := range routes {
			rt.fwd.Close()
		}
		return err
	})
	return g.Wait()
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) ready() error {
	switch {
	case s.stopping.Load():
		return errors.New("shutting down")
	case !s.links.Scanned():
		return errors.New("links not scanned yet")
	}
	return nil
}

// evaluate decides, for every route, whether it is usable now, and releases
// or holds its queue accordingly. Link and upstream changes call it, and so
// does the request path after a failed dial, so it is synchronous.
func (s *Server) evaluate() {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	links := s.links.Snapshot()
	agent, _ := s.links.AgentConnected()
	for _, rt := range s.allRoutes() {
		pol := rt.cfg.Offline
		over, overWhy := s.overBudget(rt)
		rt.over.Store(over)
		if over {
			pol.Metered = config.Deny
		}
		ok, reason := route.LinkUsable(pol, links)
		if ok && len(links) == 0 && agent && restricted(pol) {
			// The agent has not said what links the node has: a route
			// that may not take every link must not guess.
			ok, reason = false, "no link known yet: the node link agent has not reported"
		}
		if !ok && over {
			reason += "; " + overWhy
		}
		if ok && !rt.linkOK {
			// A link came back: check the upstream now rather than at the
			// next backoff step.
			rt.health.Kick()
		}
		rt.linkOK = ok
		if p := route.Steer(pol, links, pol.Budget.Set()); rt.fwd.SetPath(p) {
			// New connections take the new path; check it at once.
			rt.path = p
			s.log.Info("route steered", "route", rt.cfg.Name, "link", p.Link, "interface", p.Interface, "mark", p.Mark, "ports", p.Ports)
			rt.health.Kick()
		}
		hs := rt.health.Status()
		if ok && !hs.Reachable {
			reason = "upstream unreachable: " + hs.LastError
		}
		usable := ok && hs.Reachable
		if usable != rt.usable.Load() {
			s.log.Info("route state", "route", rt.cfg.Name, "usable", usable, "reason", reason)
		}
		rt.reason = reason
		rt.setUsable(usable)
		if usable && s.spool != nil {
			s.spool.replayer.Kick()
		}
	}
}

// routeStatus serves GET /v1/routes.
func (s *Server) routeStatus() []proxyv1.Route {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	routes := s.set.Load().routes
	out := make([]proxyv1.Route, 0, len(routes))
	for _, rt := range routes {
		n, b := rt.queue.Held()
		out = append(out, proxyv1.Route{
			Name: rt.cfg.Name, Hosts: rt.cfg.Hosts, Upstream: rt.cfg.Upstream,
			Usable: rt.usable.Load(), Reason: rt.reason, Links: rt.cfg.Offline.Links,
			Interface: rt.path.Interface, Link: rt.path.Link, Budget: s.budgetStatus(rt),
			Hold:           rt.cfg.Offline.Hold.String(),
			UpstreamHealth: rt.health.Status(),
			HeldRequests:   n, HeldBytes: b,
		})
	}
	return out
}

// adminSpool is the spool the admin API serves: nil without one.
func (s *Server) adminSpool() admin.Spool {
	if s.spool == nil {
		return nil
	}
	return s.spool
}
