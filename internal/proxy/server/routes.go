package server

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/health"
	"github.com/misaki-io/misaki/internal/proxy/hold"
	"github.com/misaki-io/misaki/internal/routematch"
)

// routeSet is one generation of the routes: the table and the runtimes it
// indexes. It is immutable once published; Apply publishes a new one.
type routeSet struct {
	table  *routematch.Table
	routes []*liveRoute
	byName map[string]*liveRoute
}

func newRouteSet(routes []*liveRoute) *routeSet {
	set := &routeSet{routes: routes, byName: make(map[string]*liveRoute, len(routes))}
	cfgs := make([]config.Route, len(routes))
	for i, rt := range routes {
		cfgs[i] = rt.cfg
		set.byName[rt.cfg.Name] = rt
	}
	set.table = routematch.NewTable(cfgs)
	return set
}

// newRoute builds a route's runtime. It reads the route's TLS files and
// starts nothing: startRoute does.
func (s *Server) newRoute(rc config.Route) (*liveRoute, error) {
	tlsConf, err := forward.LoadTLS(rc)
	if err != nil {
		return nil, err
	}
	fwd, err := forward.New(rc, forward.Options{TLS: tlsConf, Log: s.log, NoFastPath: s.cfg.NoFastPath()})
	if err != nil {
		return nil, err
	}
	// Not usable until evaluated with the links' state: neither a request
	// nor the replay of the spool may go out before it.
	rt := &liveRoute{
		cfg:      rc,
		fwd:      fwd,
		count:    map[string]prometheus.Counter{},
		duration: map[string]prometheus.Observer{},
		linkOK:   true,
	}
	rt.queue = hold.NewQueue(s.holdBudget, hold.Limit{Requests: rc.Offline.HoldLimit.Requests, Bytes: int64(rc.Offline.HoldLimit.Bytes)}, s.clock, rt.usable.Load)
	prober := health.NewProber(rc.Probe, fwd.Addr(), fwd.BaseURL(), fwd.Dial, fwd.Client())
	rt.health = health.New(rc.Name, rc.Probe, prober, s.clock, s.log, s.evaluate)
	// Any dial that connects or response that arrives, a probe's or a
	// request's, marks a down upstream reachable at once.
	fwd.OnReach(rt.health.Reached)
	for _, o := range allOutcomes {
		rt.count[o] = s.metrics.requests.WithLabelValues(rc.Name, o)
	}
	for _, d := range []string{outcomeDirect, outcomeHeld} {
		rt.duration[d] = s.metrics.duration.WithLabelValues(rc.Name, d)
	}
	return rt, nil
}

// setUsable records whether the route is usable; becoming usable releases
// the requests it holds. Evaluation calls it (under Server.evalMu).
func (rt *liveRoute) setUsable(ok bool) {
	rt.usable.Store(ok)
	if ok {
		rt.queue.Release()
	}
}

// startRoute runs the route's upstream health checks until ctx ends or the
// route is retired and drained.
func (s *Server) startRoute(ctx context.Context, wg *sync.WaitGroup, rt *liveRoute) {
	ctx, rt.stop = context.WithCancel(ctx)
	wg.Go(func() {
		if err := rt.health.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("health checks stopped", "route", rt.cfg.Name, "err", err)
		}
	})
}

// applyReq hands a new route set to the goroutine that owns route
// lifecycles (manageRoutes).
type applyReq struct {
	set   *routeSet
	fresh []*liveRoute // routes of set that need starting
	done  chan struct{}
}

// Apply replaces the routes, as the xDS client does when the controller
// sends new ones; endpoints are the host:port addresses to dial for each
// route by name (a Service's ready endpoints), where it has some.
//
// It is atomic: every request is matched against the old routes or the
// new ones, never a mix. A route whose config did not change keeps its
// runtime (upstream connections, health, held requests). A changed or
// removed route is retired: requests in flight or held on it finish
// there, and its connections close once the last one is done. An invalid
// set changes nothing and returns why.
func (s *Server) Apply(ctx context.Context, routes []config.Route, endpoints map[string][]string) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	cfg, err := s.cfg.WithRoutes(routes)
	if err != nil {
		return err
	}
	for _, r := range cfg.Routes {
		if r.Offline.Spool && !s.spools() {
			return fmt.Errorf("route %s: offline.spool is set but this proxy runs without a spool; set spool.dir and restart it", r.Name)
		}
	}
	cur := s.set.Load()
	var (
		rts   []*liveRoute
		fresh []*liveRoute
	)
	for _, rc := range cfg.Routes {
		if old := cur.byName[rc.Name]; old != nil && reflect.DeepEqual(old.cfg, rc) {
			rts = append(rts, old)
			continue
		}
		rt, err := s.newRoute(rc)
		if err != nil {
			return err
		}
		rts = append(rts, rt)
		fresh = append(fresh, rt)
	}
	for _, rt := range rts {
		rt.fwd.SetEndpoints(endpoints[rt.cfg.Name])
	}
	req := applyReq{set: newRouteSet(rts), fresh: fresh, done: make(chan struct{})}
	select {
	case s.applyCh <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.httpDone:
		return fmt.Errorf("apply: the proxy is shutting down")
	}
	<-req.done
	return nil
}

// manageRoutes owns route lifecycles while the proxy runs: it starts the
// routes of each applied set, publishes the set, and stops retired routes
// once no request is left on them.
func (s *Server) manageRoutes(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, rt := range s.set.Load().routes {
		s.startRoute(ctx, &wg, rt)
	}
	reap := time.NewTicker(time.Second)
	defer reap.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case req := <-s.applyCh:
			for _, rt := range req.fresh {
				s.startRoute(ctx, &wg, rt)
			}
			old := s.set.Swap(req.set)
			s.evalMu.Lock()
			for _, rt := range old.routes {
				if !slices.Contains(req.set.routes, rt) {
					s.retired = append(s.retired, rt)
				}
			}
			s.evalMu.Unlock()
			s.setMesh(req.set)
			s.evaluate()
			s.log.Info("routes applied", "routes", len(req.set.routes), "new", len(req.fresh))
			close(req.done)
		case <-reap.C:
			s.reapRetired()
		}
	}
}

// reapRetired stops retired routes that nothing is using any more.
func (s *Server) reapRetired() {
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	s.retired = slices.DeleteFunc(s.retired, func(rt *liveRoute) bool {
		if rt.inflight.Load() > 0 {
			return false
		}
		rt.stop()
		rt.fwd.Close()
		return true
	})
}

// allRoutes is the current routes and the retired ones still draining;
// the caller holds evalMu.
func (s *Server) allRoutes() []*liveRoute {
	return slices.Concat(s.set.Load().routes, s.retired)
}
