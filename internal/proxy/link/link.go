// Package link tracks the vehicle's network links: which are up, with which
// addresses, and of which class, so that routes can tell whether they have a
// usable path.
//
// State comes from three places. The kernel: interfaces whose names match a
// link's glob are rescanned whenever a netlink event (RTMGRP_LINK, IPv4/IPv6
// address groups) arrives on Linux, and on a polling interval everywhere as a
// safety net. Netlink events are used only as a wake-up; the state itself is
// always read afresh with net.Interfaces, so a lost or reordered event cannot
// leave a stale view. That is why this package opens the netlink socket with
// x/sys/unix instead of importing a full netlink library: it needs one socket
// and no message parsing. Configuration: a link without a glob is driven only
// by the admin API and starts up. The vehicle's connectivity manager:
// Set overrides a link's state (and flags) until it is set back to auto.
//
// On a Kubernetes node the proxy's own namespace holds one interface, so
// the node link agent (misaki-linkd) is a fourth source: with an agent
// address set, the monitor watches the agent's stream (agent.go) and adds
// every link the agent classified, with the routing that steers a socket
// onto it (its mark and source port range; route.Steer turns them into a
// forward.Path). Its own configured links keep working beside them.
package link

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path"
	"slices"
	"sync"
	"time"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// State is one link's view: the admin API's wire type itself (GET
// /v1/links serves it as it is), so the two cannot drift apart.
type State = proxyv1.Link

// Interface is a kernel interface matched by a link's glob, as the admin
// API shows it.
type Interface = proxyv1.Interface

// Usable reports whether the interface can carry traffic: administratively
// up, with carrier, and with an address that is not link-local.
func Usable(i Interface) bool { return i.Up && i.Running && len(i.Addrs) > 0 }

// Override is what the connectivity manager sets with PUT /v1/links/{name}:
// the admin API's wire type itself.
type Override = proxyv1.LinkOverride

// ErrUnknownLink is returned by Set for a name no link has.
var ErrUnknownLink = fmt.Errorf("link: unknown link")

// Scanner lists interfaces; the default reads the kernel.
type Scanner func() ([]Interface, error)

// Monitor watches the configured links.
type Monitor struct {
	log      *slog.Logger
	clock    clock.Clock
	scan     Scanner
	poll     time.Duration
	onChange func()

	agentAddr  string        // the node link agent's host:port; "" without one
	agentReady chan struct{} // closed when agentSeen becomes true

	mu        sync.Mutex // guards fields below
	links     []*linkState
	scanned   bool
	overrides map[string]Override
	agent     []State // the agent's links, as last received (before overrides)
	agentSeen bool    // a snapshot came, or the first attempt failed
	agentUp   bool    // the watch stream is connected
}

type linkState struct {
	cfg   config.Link
	state State
}

// NewMonitor returns a monitor for links. onChange, if not nil, is called
// (without locks held) after any link's state changes. It does no I/O.
func NewMonitor(links []config.Link, poll time.Duration, log *slog.Logger, clk clock.Clock, onChange func()) *Monitor {
	m := &Monitor{
		log:        log.With("component", "link"),
		clock:      clk,
		scan:       ScanKernel,
		poll:       poll,
		onChange:   onChange,
		overrides:  map[string]Override{},
		agentReady: make(chan struct{}),
	}
	now := clk.Now()
	for _, l := range links {
		m.links = append(m.links, &linkState{cfg: l, state: State{
			Name: l.Name, Class: l.Class, Metered: l.Metered, Roaming: l.Roaming,
			Up: l.Match == "", Source: sourceFor(l, nil), Since: now,
		}})
	}
	return m
}

// SetScanner replaces the kernel scanner (tests use it). Call before Run.
func (m *Monitor) SetScanner(s Scanner) { m.scan = s }

// AgentStatus returns the node link agent's address ("" without one) and
// whether its stream is connected now.
func (m *Monitor) AgentStatus() (addr string, connected bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agentAddr, m.agentUp
}

// SetAgent makes the monitor watch the node link agent at addr (host:port)
// for links beside its own. Call before Run.
func (m *Monitor) SetAgent(addr string) { m.agentAddr = addr }

func sourceFor(l config.Link, o *Override) string {
	switch {
	case o != nil && o.State != "auto":
		return "admin"
	case l.Match == "":
		return "config"
	default:
		return "kernel"
	}
}

// Run scans once, then rescans on netlink events and every poll interval
// until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	// Subscribe before the first scan, so that a change between the two
	// is not left to the next poll.
	events := make(chan struct{}, 1)
	if err := watchNetlink(ctx, events); err != nil {
		m.log.Warn("netlink events unavailable; polling only", "interval", m.poll, "err", err)
	}
	m.Rescan()
	if m.agentAddr != "" {
		go m.watchAgent(ctx)
	}
	for {
		t := m.clock.NewTimer(m.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-events:
			t.Stop()
		case <-t.C():
		}
		m.Rescan()
	}
}

// Scanned reports whether the first kernel scan has completed and, with
// an agent, whether its first snapshot came (or the first attempt to reach
// it failed: a node without a running agent must not keep the proxy from
// starting).
func (m *Monitor) Scanned() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scanned && (m.agentAddr == "" || m.agentSeen)
}

// Rescan reads the kernel's interfaces and updates every link.
func (m *Monitor) Rescan() {
	ifs, err := m.scan()
	if err != nil {
		m.log.Error("scan interfaces", "err", err)
		return
	}
	m.mu.Lock()
	first := !m.scanned
	m.scanned = true
	changed := m.applyLocked(ifs)
	m.mu.Unlock()
	// The first scan always counts as a change: what the links were assumed
	// to be before it (down, for links with a glob) must be acted on even
	// when the scan confirms it.
	if (changed || first) && m.onChange != nil {
		m.onChange()
	}
}

func (m *Monitor) applyLocked(ifs []Interface) bool {
	changed := false
	for _, l := range m.links {
		next := l.state
		next.Up = l.cfg.Match == "" // links without a glob are up unless overridden
		if l.cfg.Match != "" {
			next.Interfaces = nil
			for _, i := range ifs {
				if ok, _ := path.Match(l.cfg.Match, i.Name); ok {
					next.Interfaces = append(next.Interfaces, i)
					next.Up = next.Up || Usable(i)
				}
			}
		}
		next.Metered, next.Roaming = l.cfg.Metered, l.cfg.Roaming
		if o, ok := m.overrides[l.cfg.Name]; ok {
			if o.State != "auto" {
				next.Up = o.State == "up"
			}
			if o.Metered != nil {
				next.Metered = *o.Metered
			}
			if o.Roaming != nil {
				next.Roaming = *o.Roaming
			}
			next.Source = sourceFor(l.cfg, &o)
		} else {
			next.Source = sourceFor(l.cfg, nil)
		}
		if next.Up != l.state.Up || next.Metered != l.state.Metered || next.Roaming != l.state.Roaming {
			next.Since = m.clock.Now()
			changed = true
			m.log.Info("link state", "link", next.Name, "class", next.Class, "up", next.Up,
				"metered", next.Metered, "roaming", next.Roaming, "source", next.Source,
				"interfaces", ifaceNames(next.Interfaces))
		}
		l.state = next
	}
	return changed
}

func ifaceNames(ifs []Interface) []string {
	var s []string
	for _, i := range ifs {
		s = append(s, i.Name)
	}
	return s
}

// Set applies the connectivity manager's override for one link.
func (m *Monitor) Set(name string, o Override) (State, error) {
	switch o.State {
	case "up", "down", "auto":
	default:
		return State{}, fmt.Errorf("link: state %q: use up, down or auto", o.State)
	}
	m.mu.Lock()
	i := slices.IndexFunc(m.links, func(l *linkState) bool { return l.cfg.Name == name })
	if i < 0 {
		j := slices.IndexFunc(m.agent, func(l State) bool { return l.Name == name })
		if j < 0 {
			m.mu.Unlock()
			return State{}, fmt.Errorf("%w %q", ErrUnknownLink, name)
		}
		if o.State == "auto" && o.Metered == nil && o.Roaming == nil {
			delete(m.overrides, name)
		} else {
			m.overrides[name] = o
		}
		st := m.agentStateLocked(m.agent[j])
		m.mu.Unlock()
		if m.onChange != nil {
			m.onChange()
		}
		return st, nil
	}
	if o.State == "auto" && o.Metered == nil && o.Roaming == nil {
		delete(m.overrides, name)
	} else {
		m.overrides[name] = o
	}
	m.mu.Unlock()
	// Re-read the kernel so that "auto" takes the current truth.
	ifs, err := m.scan()
	if err != nil {
		ifs = nil
	}
	m.mu.Lock()
	changed := m.applyLocked(ifs)
	st := m.links[i].state
	m.mu.Unlock()
	if changed && m.onChange != nil {
		m.onChange()
	}
	return st, nil
}

// Snapshot returns every link's state: the configured links in
// configuration order, then the agent's in its order.
func (m *Monitor) Snapshot() []State {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]State, len(m.links), len(m.links)+len(m.agent))
	for i, l := range m.links {
		out[i] = l.state
		out[i].Interfaces = slices.Clone(l.state.Interfaces)
	}
	for _, a := range m.agent {
		out = append(out, m.agentStateLocked(a))
	}
	return out
}

// ScanKernel lists the kernel's interfaces with their flags and addresses.
// Link-local addresses do not count: they cannot reach an upstream.
func ScanKernel() ([]Interface, error) {
	nifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("link: list interfaces: %w", err)
	}
	out := make([]Interface, 0, len(nifs))
	for _, ni := range nifs {
		i := Interface{
			Name:    ni.Name,
			Up:      ni.Flags&net.FlagUp != 0,
			Running: ni.Flags&net.FlagRunning != 0,
		}
		addrs, err := ni.Addrs()
		if err == nil {
			for _, a := range addrs {
				ipn, ok := a.(*net.IPNet)
				if !ok || ipn.IP.IsLinkLocalUnicast() {
					continue
				}
				i.Addrs = append(i.Addrs, ipn.String())
			}
		}
		out = append(out, i)
	}
	return out, nil
}
