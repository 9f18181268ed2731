package link

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// fakeAgent plays misaki-linkd's watch stream: each stream a client opens
// is handed to the test, which writes its lines and can cut it.
type fakeAgent struct {
	*httptest.Server
	streams chan *agentStream
}

type agentStream struct {
	lines chan string   // written to the stream, each with a newline
	cut   chan struct{} // closed: the agent drops the connection
}

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	fa := &fakeAgent{streams: make(chan *agentStream, 10)}
	fa.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/links" || r.URL.Query().Get("watch") != "true" {
			http.NotFound(w, r)
			return
		}
		s := &agentStream{lines: make(chan string, 16), cut: make(chan struct{})}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		fa.streams <- s
		for {
			select {
			case l := <-s.lines:
				w.Write([]byte(l + "\n"))
				w.(http.Flusher).Flush()
			case <-s.cut:
				return
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(fa.Close)
	return fa
}

func (fa *fakeAgent) addr() string { return fa.Listener.Addr().String() }

// next waits for the monitor to open a stream.
func (fa *fakeAgent) next(t *testing.T) *agentStream {
	t.Helper()
	select {
	case s := <-fa.streams:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the monitor did not connect to the agent")
	}
	return nil
}

func (s *agentStream) send(t *testing.T, snap linkv1.Snapshot) {
	t.Helper()
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	s.lines <- string(b)
}

var (
	wifiSteer  = &linkv1.Steer{Mark: 0x4d5a0000, Table: 15100, Ports: [2]uint16{61000, 61999}}
	modemSteer = &linkv1.Steer{Mark: 0x4d5a0001, Table: 15101, Ports: [2]uint16{62000, 62999}}
	since      = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
)

func agentSnap(version uint64, wifiUp, modemUp bool) linkv1.Snapshot {
	return linkv1.Snapshot{Version: version, Agent: "node-1/1", Links: []linkv1.Link{
		{Name: "wifi", Class: "wifi", Up: wifiUp, Source: "kernel", Steer: wifiSteer, Since: since,
			Interfaces: []linkv1.Interface{{Name: "wlan0", Type: "wlan", Up: true, Running: wifiUp, Addrs: []string{"10.0.1.2/24"}}}},
		{Name: "modem", Class: "cellular", Metered: true, Up: modemUp, Source: "kernel", Steer: modemSteer, Since: since,
			Reason: map[bool]string{false: "gateway gw:443 unreachable over it: refused"}[modemUp]},
	}}
}

// agentMonitor is a Monitor with one configured link and the fake agent,
// on a fake clock; every onChange reports the links as they were then.
type agentMonitor struct {
	*Monitor
	clk     *clock.Fake
	changes chan []State
}

func newAgentMonitor(t *testing.T, addr string) *agentMonitor {
	t.Helper()
	am := &agentMonitor{clk: clock.NewFake(time.Unix(1_700_000_000, 0)), changes: make(chan []State, 100)}
	am.Monitor = NewMonitor([]config.Link{{Name: "sat", Class: "satellite"}}, time.Hour, quiet, am.clk,
		func() { am.changes <- am.Snapshot() })
	am.SetScanner((&fakeKernel{}).scan)
	if addr != "" {
		am.SetAgent(addr)
	}
	return am
}

func (am *agentMonitor) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- am.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// The first kernel scan is a change.
	am.change(t)
}

func (am *agentMonitor) change(t *testing.T) map[string]State {
	t.Helper()
	select {
	case links := <-am.changes:
		return byName(links)
	case <-time.After(10 * time.Second):
		t.Fatal("onChange not called")
	}
	return nil
}

func (am *agentMonitor) noChange(t *testing.T) {
	t.Helper()
	select {
	case links := <-am.changes:
		t.Fatalf("onChange called: %+v", links)
	default:
	}
}

func (am *agentMonitor) state() map[string]State { return byName(am.Snapshot()) }

// waitTimers waits until the monitor's goroutines wait on n timers.
func (am *agentMonitor) waitTimers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for am.clk.Timers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d timers pending, want %d", am.clk.Timers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func byName(links []State) map[string]State {
	out := map[string]State{}
	for _, l := range links {
		out[l.Name] = l
	}
	return out
}

func TestAgentLinks(t *testing.T) {
	fa := newFakeAgent(t)
	am := newAgentMonitor(t, fa.addr())
	if am.Scanned() {
		t.Fatal("scanned before Run")
	}
	am.run(t)
	s := fa.next(t)
	if am.Scanned() {
		t.Fatal("scanned before the agent's first snapshot")
	}
	if _, connected := am.AgentConnected(); connected {
		t.Fatal("connected before the first snapshot")
	}
	waited := make(chan bool, 1)
	go func() { waited <- am.WaitAgent(context.Background(), time.Minute) }()

	s.send(t, agentSnap(1, true, false))
	st := am.change(t)
	if ok := <-waited; !ok {
		t.Fatal("WaitAgent did not see the first snapshot")
	}
	if !am.Scanned() {
		t.Fatal("not scanned after the first snapshot")
	}
	if conf, conn := am.AgentConnected(); !conf || !conn {
		t.Fatalf("AgentConnected = %v, %v", conf, conn)
	}
	w, m := st["wifi"], st["modem"]
	if !w.Agent || !w.Up || w.Source != "agent" || w.Steer == nil || *w.Steer != *wifiSteer || w.Class != "wifi" ||
		len(w.Interfaces) != 1 || w.Interfaces[0].Name != "wlan0" || !w.Since.Equal(since) {
		t.Fatalf("wifi: %+v", w)
	}
	if !m.Agent || m.Up || !m.Metered || m.Reason == "" || *m.Steer != *modemSteer {
		t.Fatalf("modem: %+v", m)
	}
	if sat := st["sat"]; sat.Agent || !sat.Up {
		t.Fatalf("the configured link: %+v", sat)
	}
	// Configured links first, then the agent's in its order.
	var names []string
	for _, l := range am.Snapshot() {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"sat", "wifi", "modem"}) {
		t.Fatalf("order: %v", names)
	}

	// The same links again (a new version), heartbeats and a change: only
	// the change calls onChange.
	s.send(t, agentSnap(2, true, false))
	s.lines <- ""
	s.lines <- ""
	s.send(t, agentSnap(3, true, true))
	if st := am.change(t); !st["modem"].Up {
		t.Fatalf("onChange came for a snapshot that changed nothing: modem %+v", st["modem"])
	}
	// A reason or an interface's address is not a change the routes see;
	// it shows in the links all the same.
	snap := agentSnap(4, true, true)
	snap.Links[0].Interfaces[0].Addrs = []string{"10.0.9.9/24"}
	s.send(t, snap)
	s.send(t, agentSnap(5, false, true))
	if st := am.change(t); st["wifi"].Up {
		t.Fatalf("onChange for wifi down came early: %+v", st["wifi"])
	}
	am.noChange(t)

	// The agent's own override is shown as such.
	snap = agentSnap(6, false, true)
	snap.Links[0].Source, snap.Links[0].Reason = "override", "set down by the connectivity manager"
	s.send(t, snap)
	s.send(t, agentSnap(7, true, true))
	am.change(t)
	if st := am.state(); !st["wifi"].Up {
		t.Fatalf("wifi back up: %+v", st["wifi"])
	}

	// The proxy's admin overrides apply to the agent's links, whatever the
	// agent sends next.
	if l, err := am.Set("wifi", Override{State: "down"}); err != nil || l.Up || l.Source != "admin" || !l.Agent {
		t.Fatalf("Set wifi down: %+v, %v", l, err)
	}
	if st := am.change(t); st["wifi"].Up {
		t.Fatal("onChange after Set does not show the override")
	}
	yes := true
	if _, err := am.Set("modem", Override{State: "auto", Roaming: &yes}); err != nil {
		t.Fatal(err)
	}
	am.change(t)
	s.send(t, agentSnap(8, true, false))
	st = am.change(t)
	if st["wifi"].Up || st["wifi"].Source != "admin" || st["modem"].Up || !st["modem"].Roaming || st["modem"].Source != "agent" {
		t.Fatalf("overrides after the agent's next snapshot: wifi %+v, modem %+v", st["wifi"], st["modem"])
	}
	if _, err := am.Set("wifi", Override{State: "auto"}); err != nil {
		t.Fatal(err)
	}
	if st := am.change(t); !st["wifi"].Up || st["wifi"].Source != "agent" {
		t.Fatalf("wifi back to auto: %+v", st["wifi"])
	}
	if _, err := am.Set("satellite-2", Override{State: "up"}); err == nil {
		t.Fatal("Set of a link nobody reported succeeded")
	}
}

// A stream that drops keeps the last links; the monitor reconnects after
// its backoff, on its clock.
func TestAgentStreamDrops(t *testing.T) {
	fa := newFakeAgent(t)
	am := newAgentMonitor(t, fa.addr())
	am.run(t)
	s := fa.next(t)
	s.send(t, agentSnap(1, true, true))
	am.change(t)

	for i := range 3 {
		close(s.cut)
		// Timers: the kernel poll and the reconnection's backoff.
		deadline := time.Now().Add(10 * time.Second)
		for _, conn := am.AgentConnected(); conn || am.clk.Timers() != 2; _, conn = am.AgentConnected() {
			if time.Now().After(deadline) {
				t.Fatalf("drop %d: the monitor did not start its backoff", i)
			}
			time.Sleep(time.Millisecond)
		}
		if !am.Scanned() {
			t.Fatal("a dropped stream made the monitor unscanned")
		}
		if st := am.state(); !st["wifi"].Up || !st["modem"].Up || !st["wifi"].Agent {
			t.Fatalf("drop %d: the last links are gone: %+v", i, st)
		}
		am.noChange(t)
		select {
		case <-fa.streams:
			t.Fatalf("drop %d: reconnected before the backoff", i)
		default:
		}
		am.clk.Advance(agentBackoff.Max)
		s = fa.next(t)
		// The new stream says the modem went while the monitor was away.
		s.send(t, agentSnap(uint64(i+2), true, false))
		if st := am.change(t); st["modem"].Up {
			t.Fatalf("drop %d: the new stream's links: %+v", i, st)
		}
		s.send(t, agentSnap(uint64(i+2), true, true))
		am.change(t)
	}

	// A line that is not a snapshot ends the stream too.
	s.lines <- `{"version":`
	s = fa.next2(t, am)
	s.send(t, agentSnap(10, true, true))
	am.change(t)
	if _, conn := am.AgentConnected(); !conn {
		t.Fatal("not connected after a bad line and a reconnection")
	}
}

// next2 waits out the backoff after a stream ends and returns the next.
func (fa *fakeAgent) next2(t *testing.T, am *agentMonitor) *agentStream {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, conn := am.AgentConnected(); conn || am.clk.Timers() != 2; _, conn = am.AgentConnected() {
		if time.Now().After(deadline) {
			t.Fatal("the monitor did not start its backoff")
		}
		time.Sleep(time.Millisecond)
	}
	am.clk.Advance(agentBackoff.Max)
	return fa.next(t)
}

// A stream that goes silent (no snapshot, no heartbeat) is given up after
// agentSilence, counted from its last line, and reconnected.
func TestAgentSilence(t *testing.T) {
	fa := newFakeAgent(t)
	am := newAgentMonitor(t, fa.addr())
	am.run(t)
	s := fa.next(t)
	s.send(t, agentSnap(1, true, true))
	am.change(t)

	// Timers: the kernel poll and the silence watch.
	am.waitTimers(t, 2)
	am.clk.Advance(agentSilence - time.Second)
	s.lines <- "" // a heartbeat, then a change to know it was read
	s.send(t, agentSnap(2, false, true))
	am.change(t)
	am.clk.Advance(agentSilence - time.Second) // 44s since the heartbeat: still alive
	am.waitTimers(t, 2)
	s.send(t, agentSnap(3, true, true))
	am.change(t)
	if _, conn := am.AgentConnected(); !conn {
		t.Fatal("a stream with heartbeats was given up")
	}
	select {
	case <-fa.streams:
		t.Fatal("reconnected while the stream was alive")
	default:
	}

	am.clk.Advance(agentSilence)
	s = fa.next2(t, am)
	s.send(t, agentSnap(4, true, true))
	am.change(t)
}

// An agent that cannot be reached does not keep the proxy from starting:
// the first failure counts as its answer.
func TestAgentUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	am := newAgentMonitor(t, addr)
	am.run(t)
	st := am.change(t) // the first attempt failed: readiness must not wait
	if len(st) != 1 || !am.Scanned() {
		t.Fatalf("after the first failure: scanned %v, links %+v", am.Scanned(), st)
	}
	if !am.WaitAgent(context.Background(), time.Hour) {
		t.Fatal("WaitAgent after the first failure")
	}
	if conf, conn := am.AgentConnected(); !conf || conn {
		t.Fatalf("AgentConnected = %v, %v", conf, conn)
	}

	// Without an agent, WaitAgent does not wait.
	none := newAgentMonitor(t, "")
	if none.WaitAgent(context.Background(), time.Hour) {
		t.Fatal("WaitAgent without an agent")
	}
	none.run(t)
	if !none.Scanned() {
		t.Fatal("without an agent, the kernel scan is enough")
	}
}

// An agent that accepts the connection and says nothing: WaitAgent gives
// up after its wait, on the clock.
func TestWaitAgentTimesOut(t *testing.T) {
	fa := newFakeAgent(t)
	am := newAgentMonitor(t, fa.addr())
	am.run(t)
	fa.next(t)
	waited := make(chan bool, 1)
	go func() { waited <- am.WaitAgent(context.Background(), 2*time.Second) }()
	// Timers: the kernel poll, the silence watch and WaitAgent's.
	am.waitTimers(t, 3)
	am.clk.Advance(2 * time.Second)
	if <-waited {
		t.Fatal("WaitAgent reported a snapshot that never came")
	}
	if am.Scanned() {
		t.Fatal("scanned without the agent's answer")
	}
}
