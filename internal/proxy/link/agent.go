package link

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/backoff"
)

// agentSilence is how long a watch stream may stay silent before the
// monitor gives it up and reconnects: three of the agent's heartbeats.
const agentSilence = 45 * time.Second

// agentDialTimeout bounds a connection to the agent, which is on the same
// node: a node whose agent's address drops packets must not hold the
// proxy's readiness (which waits for the first attempt) for long.
const agentDialTimeout = 5 * time.Second

// agentBackoff paces reconnections to the agent: it is on the same node,
// so a restart is over in a second and the first retries come quickly.
var agentBackoff = backoff.Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second}

// watchAgent follows the agent's snapshots until ctx ends, reconnecting
// with backoff. While the agent is unreachable the last links it reported
// stay: they are the best knowledge there is, and the routes' own probes
// still find out whether an upstream answers.
func (m *Monitor) watchAgent(ctx context.Context) {
	b := backoff.New(agentBackoff, m.clock)
	// The stream has no deadline; silence is watched in followAgent. The
	// agent is on the node, never behind the environment's HTTP proxy.
	client := &http.Client{Transport: &http.Transport{
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: agentDialTimeout}).DialContext,
	}}
	defer client.CloseIdleConnections()
	url := "http://" + m.agentAddr + "/v1/links?watch=true"
	for ctx.Err() == nil {
		err := m.followAgent(ctx, client, url, b)
		m.mu.Lock()
		first := !m.agentSeen
		m.markSeenLocked()
		wasUp := m.agentUp
		m.agentUp = false
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if first || wasUp {
			m.log.Warn("node link agent unreachable; keeping its last links", "agent", m.agentAddr, "err", err)
		}
		if first && m.onChange != nil {
			m.onChange() // readiness waited for this attempt
		}
		if b.Wait(ctx) != nil {
			return
		}
	}
}

// followAgent reads one watch stream until it ends, or until it stays
// silent (no snapshot, no heartbeat, not even the response's head) for
// agentSilence on the monitor's clock.
func (m *Monitor) followAgent(ctx context.Context, client *http.Client, url string, b *backoff.Backoff) error {
	ctx, cancel := context.WithCancel(ctx)
	var last atomic.Int64 // the clock's time of the last sign of life, in ns
	var silent atomic.Bool
	last.Store(m.clock.Now().UnixNano())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if m.watchSilence(ctx, &last) {
			silent.Store(true)
			cancel()
		}
	}()
	err := m.readAgent(ctx, client, url, b, &last)
	if silent.Load() {
		return fmt.Errorf("agent silent for %s", agentSilence)
	}
	return err
}

// watchSilence reports true once agentSilence passed since last, false
// if ctx ends first.
func (m *Monitor) watchSilence(ctx context.Context, last *atomic.Int64) bool {
	wait := agentSilence
	for {
		t := m.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C():
		}
		idle := m.clock.Now().Sub(time.Unix(0, last.Load()))
		if idle >= agentSilence {
			return true
		}
		wait = agentSilence - idle
	}
}

func (m *Monitor) readAgent(ctx context.Context, client *http.Client, url string, b *backoff.Backoff, last *atomic.Int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent answered %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		last.Store(m.clock.Now().UnixNano())
		line := sc.Bytes()
		if len(line) == 0 {
			continue // heartbeat
		}
		var snap linkv1.Snapshot
		if err := json.Unmarshal(line, &snap); err != nil {
			return fmt.Errorf("agent sent a bad snapshot: %w", err)
		}
		b.Reset()
		m.applyAgent(snap)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("agent closed the stream")
}

// applyAgent takes a snapshot and calls onChange when any link's state as
// the routes see it changed.
func (m *Monitor) applyAgent(snap linkv1.Snapshot) {
	links := make([]State, len(snap.Links))
	for i, l := range snap.Links {
		st := State{
			Name: l.Name, Class: l.Class, Metered: l.Metered, Roaming: l.Roaming, Up: l.Up,
			Source: "agent", Steer: l.Steer, Reason: l.Reason, Since: l.Since, Agent: true,
		}
		if l.Source == "override" {
			st.Source = "agent-override"
		}
		for _, f := range l.Interfaces {
			st.Interfaces = append(st.Interfaces, Interface{Name: f.Name, Up: f.Up, Running: f.Running, Addrs: f.Addrs})
		}
		links[i] = st
	}
	m.mu.Lock()
	first := !m.agentSeen || !m.agentUp
	changed := first || !slices.EqualFunc(m.agent, links, sameAgentLink)
	m.agent = links
	m.markSeenLocked()
	m.agentUp = true
	m.mu.Unlock()
	if first {
		m.log.Info("node link agent connected", "agent", m.agentAddr, "agentRun", snap.Agent, "links", len(links))
	}
	if changed {
		for _, l := range links {
			m.log.Info("link state", "link", l.Name, "class", l.Class, "up", l.Up, "metered", l.Metered,
				"roaming", l.Roaming, "source", l.Source, "reason", l.Reason)
		}
		if m.onChange != nil {
			m.onChange()
		}
	}
}

func sameAgentLink(a, b State) bool {
	return a.Name == b.Name && a.Class == b.Class && a.Up == b.Up && a.Metered == b.Metered &&
		a.Roaming == b.Roaming && (a.Steer == nil) == (b.Steer == nil) && (a.Steer == nil || *a.Steer == *b.Steer)
}

// agentStateLocked applies the proxy's own admin override to an agent link.
func (m *Monitor) agentStateLocked(a State) State {
	a.Interfaces = slices.Clone(a.Interfaces)
	o, ok := m.overrides[a.Name]
	if !ok {
		return a
	}
	if o.State != "auto" {
		a.Up = o.State == "up"
		a.Source = "admin"
	}
	if o.Metered != nil {
		a.Metered = *o.Metered
	}
	if o.Roaming != nil {
		a.Roaming = *o.Roaming
	}
	return a
}

// AgentConnected reports whether an agent is configured and its stream is
// up.
func (m *Monitor) AgentConnected() (configured, connected bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agentAddr != "", m.agentUp
}

// WaitAgent waits, at most d, for the agent's first snapshot (or the first
// failure to reach it), and reports whether it came. Without an agent it
// returns false at once.
func (m *Monitor) WaitAgent(ctx context.Context, d time.Duration) bool {
	if m.agentAddr == "" {
		return false
	}
	t := m.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.agentReady:
		return true
	case <-t.C():
	case <-ctx.Done():
	}
	return false
}

func (m *Monitor) markSeenLocked() {
	if !m.agentSeen {
		m.agentSeen = true
		close(m.agentReady)
	}
}
