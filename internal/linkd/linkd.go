//go:build linux

// Package linkd is the node link agent (misaki-linkd): it runs once per
// vehicle node with the host's network, watches the host's interfaces,
// addresses and routes through netlink, classifies them into links by the
// integrator's rules (internal/linkd/config), probes the gateway over each
// link, installs the policy routing that steers a socket onto one link
// (internal/linkd/policyroute), and serves the result to the proxies on
// its node: GET /v1/links, or a stream of snapshots with ?watch=true, one
// JSON object per line, sent the moment anything changes. The vehicle's
// connectivity manager overrides a link with PUT /v1/links/{name}, the
// same shape as the proxy's admin API.
//
// Proxies merge the agent's links with their own upstream probes
// (internal/proxy/link); a proxy with no agent configured behaves as
// before, reading its own network namespace.
package linkd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/linkd/config"
	"github.com/misaki-io/misaki/internal/linkd/hostnet"
	"github.com/misaki-io/misaki/internal/linkd/policyroute"
)

// Options configure an Agent. Scan, Watch and Route default to the
// kernel's (hostnet and policyroute); tests replace them.
type Options struct {
	Config *config.Config
	Log    *slog.Logger
	Clock  clock.Clock
	// ID names this run of the agent in snapshots (node name and start).
	ID    string
	Scan  func() ([]hostnet.Iface, error)
	Watch func(ctx context.Context, events chan<- struct{}) error
	// Route installs the policy routing for the links; nil with
	// routing.disabled.
	Route func(links []policyroute.Link) error
	// Dial probes a target over a link; default TCP with the link's mark.
	Dial func(ctx context.Context, target string, l linkv1.Link) error
}

// Agent is the node link agent. Create it with New; Run it once.
type Agent struct {
	o      Options
	log    *slog.Logger
	m      *metrics
	kick   chan struct{} // wakes the main loop: rescan and publish
	probeK chan struct{} // wakes the prober: the links changed
	// heartbeat is how often an idle watch stream carries an empty line:
	// Heartbeat, but shorter in tests.
	heartbeat time.Duration

	// refreshMu serialises refresh, so that a view computed before an
	// override cannot be published after the override's own. Lock order:
	// refreshMu, then mu.
	refreshMu sync.Mutex

	mu        sync.Mutex // guards fields below
	overrides map[string]linkv1.Override
	probes    map[string]*linkv1.Probe
	snap      linkv1.Snapshot
	ifaces    []hostnet.Iface
	changed   chan struct{} // closed and replaced at each publication
	scanned   bool
}

// New returns an agent; it does no I/O.
func New(o Options) *Agent {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Scan == nil {
		o.Scan = hostnet.Scan
	}
	if o.Watch == nil {
		o.Watch = hostnet.Watch
	}
	a := &Agent{
		o:         o,
		log:       o.Log.With("component", "linkd"),
		kick:      make(chan struct{}, 1),
		probeK:    make(chan struct{}, 1),
		heartbeat: Heartbeat,
		overrides: map[string]linkv1.Override{},
		probes:    map[string]*linkv1.Probe{},
		changed:   make(chan struct{}),
		snap:      linkv1.Snapshot{Agent: o.ID},
	}
	if o.Dial == nil {
		a.o.Dial = a.dialMarked
	}
	a.m = newMetrics(a)
	return a
}

// Run scans, then rescans on every netlink event, override and probe
// result, and every rescan interval, until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	events := make(chan struct{}, 1)
	if err := a.o.Watch(ctx, events); err != nil {
		a.log.Warn("netlink events unavailable; rescanning on the interval only", "interval", a.o.Config.Rescan.D(), "err", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if len(a.o.Config.Probe.Targets) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.probeLoop(ctx)
		}()
	}
	a.refresh()
	for {
		t := a.o.Clock.NewTimer(a.o.Config.Rescan.D())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-events:
		case <-a.kick:
		case <-t.C():
		}
		t.Stop()
		a.refresh()
	}
}

// refresh reads the host, recomputes the links, installs their routing and
// publishes them if anything changed. When the host cannot be read, the
// last view of it stands (so that an override still takes effect); before
// the first successful read there is nothing to publish.
func (a *Agent) refresh() {
	a.refreshMu.Lock()
	defer a.refreshMu.Unlock()
	ifaces, err := a.o.Scan()
	if err != nil {
		a.log.Error("scan the host", "err", err)
		a.m.scanErrors.Inc()
	}
	a.mu.Lock()
	if err != nil {
		if !a.scanned {
			a.mu.Unlock()
			return
		}
		ifaces = a.ifaces
	}
	a.ifaces = ifaces
	links := Compute(a.o.Config, ifaces, a.overrides, a.probes)
	for _, l := range links {
		if !slices.ContainsFunc(l.Interfaces, linkv1.Interface.Usable) {
			// A link that went away must be probed again when it returns.
			delete(a.probes, l.Name)
		}
	}
	// A link that went down is published before the routing is brought
	// in line (the proxies stop using it sooner); a link that came up is
	// published after, so that no proxy steers onto a table not filled yet.
	cameUp := false
	for _, l := range links {
		if i := slices.IndexFunc(a.snap.Links, func(p linkv1.Link) bool { return p.Name == l.Name }); l.Up && (i < 0 || !a.snap.Links[i].Up) {
			cameUp = true
		}
	}
	a.mu.Unlock()
	if !cameUp {
		a.publish(links)
	}
	if a.o.Route != nil {
		if err := a.o.Route(a.steering(links, ifaces)); err != nil {
			a.log.Error("install policy routing", "err", err)
			a.m.routeErrors.Inc()
		}
	}
	if cameUp {
		a.publish(links)
	}
}

// steering lists each link's usable interfaces for policyroute.
func (a *Agent) steering(links []linkv1.Link, ifaces []hostnet.Iface) []policyroute.Link {
	var out []policyroute.Link
	for _, l := range links {
		if l.Steer == nil {
			continue
		}
		pl := policyroute.Link{Name: l.Name, Mark: l.Steer.Mark, Table: l.Steer.Table, Ports: l.Steer.Ports}
		for _, li := range l.Interfaces {
			if i := slices.IndexFunc(ifaces, func(f hostnet.Iface) bool { return f.Name == li.Name }); i >= 0 && ifaces[i].Usable() {
				pl.Ifaces = append(pl.Ifaces, ifaces[i])
			}
		}
		out = append(out, pl)
	}
	return out
}

func (a *Agent) publish(links []linkv1.Link) {
	now := a.o.Clock.Now()
	a.mu.Lock()
	first := !a.scanned
	a.scanned = true
	if !first && sameLinks(a.snap.Links, links) {
		a.mu.Unlock()
		return
	}
	for i := range links {
		links[i].Since = now
		if j := slices.IndexFunc(a.snap.Links, func(p linkv1.Link) bool { return p.Name == links[i].Name }); j >= 0 {
			if p := a.snap.Links[j]; p.Up == links[i].Up && p.Metered == links[i].Metered && p.Roaming == links[i].Roaming {
				links[i].Since = p.Since
			}
		}
	}
	a.snap = linkv1.Snapshot{Version: a.snap.Version + 1, Agent: a.o.ID, Links: links}
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
	for _, l := range links {
		a.log.Info("link", "link", l.Name, "class", l.Class, "up", l.Up, "metered", l.Metered,
			"roaming", l.Roaming, "source", l.Source, "reason", l.Reason)
	}
	a.m.publications.Inc()
	select {
	case a.probeK <- struct{}{}:
	default:
	}
}

// Snapshot returns the current view and a channel closed at the next
// publication.
func (a *Agent) Snapshot() (linkv1.Snapshot, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.snap
	s.Links = slices.Clone(s.Links)
	return s, a.changed
}

// Scanned reports whether the first scan has been published.
func (a *Agent) Scanned() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.scanned
}

// ErrUnknownLink is Set's error for a name no rule defines.
var ErrUnknownLink = errors.New("linkd: unknown link")

// Set applies the connectivity manager's override for one link and
// publishes the result before it returns.
func (a *Agent) Set(name string, o linkv1.Override) (linkv1.Link, error) {
	switch o.State {
	case "up", "down", "auto":
	default:
		return linkv1.Link{}, fmt.Errorf("linkd: state %q: use up, down or auto", o.State)
	}
	if !slices.Contains(config.LinkNames(a.o.Config.Links), name) {
		return linkv1.Link{}, fmt.Errorf("%w %q", ErrUnknownLink, name)
	}
	a.mu.Lock()
	if o.State == "auto" && o.Metered == nil && o.Roaming == nil {
		delete(a.overrides, name)
	} else {
		a.overrides[name] = o
	}
	a.mu.Unlock()
	a.refresh()
	s, _ := a.Snapshot()
	if i := slices.IndexFunc(s.Links, func(l linkv1.Link) bool { return l.Name == name }); i >= 0 {
		return s.Links[i], nil
	}
	// The host has not been read yet: the override is kept for the first
	// scan, and the link is as the rules alone make it.
	a.mu.Lock()
	links := Compute(a.o.Config, a.ifaces, a.overrides, a.probes)
	a.mu.Unlock()
	return links[slices.IndexFunc(links, func(l linkv1.Link) bool { return l.Name == name })], nil
}

// probeLoop checks every link with a usable interface every interval, and
// at once when the links change.
func (a *Agent) probeLoop(ctx context.Context) {
	for {
		s, _ := a.Snapshot()
		var wg sync.WaitGroup
		changed := false
		var mu sync.Mutex
		for _, l := range s.Links {
			if !slices.ContainsFunc(l.Interfaces, linkv1.Interface.Usable) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := a.probe(ctx, l)
				a.mu.Lock()
				old := a.probes[l.Name]
				a.probes[l.Name] = p
				a.mu.Unlock()
				if old == nil || old.Reachable != p.Reachable {
					mu.Lock()
					changed = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if changed {
			select {
			case a.kick <- struct{}{}:
			default:
			}
		}
		t := a.o.Clock.NewTimer(a.o.Config.Probe.Interval.D())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-a.probeK:
			t.Stop()
		}
	}
}

// probe dials the targets over l until one answers.
func (a *Agent) probe(ctx context.Context, l linkv1.Link) *linkv1.Probe {
	var last *linkv1.Probe
	for _, t := range a.o.Config.Probe.Targets {
		start := a.o.Clock.Now()
		dctx, cancel := context.WithTimeout(ctx, a.o.Config.Probe.Timeout.D())
		err := a.o.Dial(dctx, t, l)
		cancel()
		p := &linkv1.Probe{Target: t, Reachable: err == nil, Checked: a.o.Clock.Now()}
		if err != nil {
			p.Error = err.Error()
			a.m.probeFailures.WithLabelValues(l.Name).Inc()
		} else {
			rtt := a.o.Clock.Now().Sub(start)
			p.RTT = rtt.Round(time.Microsecond).String()
			a.m.probeRTT.WithLabelValues(l.Name).Observe(rtt.Seconds())
			return p
		}
		last = p
	}
	return last
}

// dialMarked connects to target with the link's firewall mark, so the
// link's own table routes it; without policy routing, bound to the link's
// first usable interface.
func (a *Agent) dialMarked(ctx context.Context, target string, l linkv1.Link) error {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if l.Steer != nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(l.Steer.Mark))
				return
			}
			for _, i := range l.Interfaces {
				if i.Usable() {
					serr = unix.BindToDevice(int(fd), i.Name)
					return
				}
			}
		})
		return errors.Join(err, serr)
	}}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	return c.Close()
}
