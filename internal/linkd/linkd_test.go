//go:build linux

package linkd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/linkd/config"
	"github.com/misaki-io/misaki/internal/linkd/hostnet"
	"github.com/misaki-io/misaki/internal/linkd/policyroute"
	"github.com/misaki-io/misaki/internal/waitfor"
)

var quiet = slog.New(slog.DiscardHandler)

// fakeHost plays the kernel for an Agent: its interfaces, its netlink
// events, its policy routing and the gateway's answers over each link.
type fakeHost struct {
	mu      sync.Mutex // guards fields below
	ifaces  []hostnet.Iface
	scanErr error
	events  chan<- struct{}
	routes  [][]policyroute.Link      // every Route call
	inRoute func()                    // called inside Route, if set
	reach   map[string]error          // the dial's answer, by link
	dials   map[string][]linkv1.Steer // the steer of every probe, by link
	dialed  chan struct{}             // closed and replaced at each dial
}

func newFakeHost(ifaces ...hostnet.Iface) *fakeHost {
	return &fakeHost{ifaces: ifaces, reach: map[string]error{}, dials: map[string][]linkv1.Steer{}, dialed: make(chan struct{})}
}

func (h *fakeHost) scan() ([]hostnet.Iface, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.scanErr != nil {
		return nil, h.scanErr
	}
	out := slices.Clone(h.ifaces)
	for i := range out {
		out[i].Addrs = slices.Clone(out[i].Addrs)
	}
	return out, nil
}

func (h *fakeHost) watch(_ context.Context, events chan<- struct{}) error {
	h.mu.Lock()
	h.events = events
	h.mu.Unlock()
	return nil
}

// set replaces the host's interfaces and sends a netlink event.
func (h *fakeHost) set(ifaces ...hostnet.Iface) {
	h.mu.Lock()
	h.ifaces = ifaces
	h.mu.Unlock()
	h.poke()
}

// poke sends a netlink event (as the kernel does for changes the agent
// may not care about).
func (h *fakeHost) poke() {
	h.mu.Lock()
	ev := h.events
	h.mu.Unlock()
	select {
	case ev <- struct{}{}:
	default:
	}
}

func (h *fakeHost) route(links []policyroute.Link) error {
	h.mu.Lock()
	h.routes = append(h.routes, links)
	f := h.inRoute
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}

func (h *fakeHost) lastRoute() []policyroute.Link {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.routes) == 0 {
		return nil
	}
	return h.routes[len(h.routes)-1]
}

func (h *fakeHost) setReach(link string, err error) {
	h.mu.Lock()
	h.reach[link] = err
	h.mu.Unlock()
}

func (h *fakeHost) dial(ctx context.Context, target string, l linkv1.Link) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var st linkv1.Steer
	if l.Steer != nil {
		st = *l.Steer
	}
	h.dials[l.Name] = append(h.dials[l.Name], st)
	close(h.dialed)
	h.dialed = make(chan struct{})
	if target != "gw.example:443" {
		return errors.New("probe of an unknown target " + target)
	}
	return h.reach[l.Name]
}

func (h *fakeHost) dialCount() (n int, next <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.dials {
		n += len(d)
	}
	return n, h.dialed
}

// start is when every test agent's fake clock starts.
var start = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func newTestAgent(t *testing.T, c *config.Config, h *fakeHost) (*Agent, *clock.Fake) {
	t.Helper()
	c.Rescan = config.Duration(time.Hour) // only events and kicks rescan
	clk := clock.NewFake(start)
	a := New(Options{Config: c, Log: quiet, Clock: clk, ID: "node-1/1", Scan: h.scan, Watch: h.watch, Route: h.route, Dial: h.dial})
	a.heartbeat = time.Hour
	return a, clk
}

// run runs the agent until the test ends.
func run(t *testing.T, a *Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitSnap waits for a publication that satisfies ok, and returns it.
func waitSnap(t *testing.T, a *Agent, what string, ok func(linkv1.Snapshot) bool) linkv1.Snapshot {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		s, changed := a.Snapshot()
		if ok(s) {
			return s
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s: not published; the agent's view is %+v", what, s)
		}
	}
}

func link(s linkv1.Snapshot, name string) linkv1.Link {
	for _, l := range s.Links {
		if l.Name == name {
			return l
		}
	}
	return linkv1.Link{}
}

// watchStream is a client of GET /v1/links?watch=true.
type watchStream struct {
	lines chan string
}

func openWatch(t *testing.T, url string) *watchStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/links?watch=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/x-ndjson" {
		cancel()
		t.Fatalf("watch: %s, Content-Type %q", resp.Status, ct)
	}
	s := &watchStream{lines: make(chan string, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	return s
}

func (s *watchStream) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			t.Fatal("the watch stream ended")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("nothing on the watch stream")
	}
	return ""
}

func (s *watchStream) snapshot(t *testing.T) linkv1.Snapshot {
	t.Helper()
	line := s.next(t)
	var snap linkv1.Snapshot
	if err := json.Unmarshal([]byte(line), &snap); err != nil {
		t.Fatalf("watch stream line %q: %v", line, err)
	}
	return snap
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func put(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAgentPublishesChanges(t *testing.T) {
	wlan, wwan := upIface("wlan0"), upIface("wwan0")
	wlan.Type = "wlan"
	h := newFakeHost(wlan, wwan, upIface("lo"))
	a, clk := newTestAgent(t, testConfig(), h)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)

	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz before the first scan: %d", code)
	}
	run(t, a)
	s := waitSnap(t, a, "the first scan", func(s linkv1.Snapshot) bool { return s.Version == 1 })
	if code, body := get(t, srv.URL+"/healthz"); code != 200 {
		t.Fatalf("/healthz after the first scan: %d %s", code, body)
	}

	w := openWatch(t, srv.URL)
	first := w.snapshot(t)
	if d := cmp.Diff(s, first); d != "" {
		t.Fatalf("the stream's first line is not the snapshot (-want +got):\n%s", d)
	}
	if first.Agent != "node-1/1" || len(first.Links) != 3 {
		t.Fatalf("first snapshot: %+v", first)
	}
	wifi := link(first, "wifi")
	if !wifi.Up || wifi.Source != "kernel" || !wifi.Since.Equal(start) || wifi.Steer == nil ||
		!cmp.Equal(wifi.Interfaces, []linkv1.Interface{wireIface(wlan)}) {
		t.Fatalf("wifi: %+v", wifi)
	}
	if m := link(first, "modem"); !m.Up || !m.Metered {
		t.Fatalf("modem: %+v", m)
	}
	if e := link(first, "eth"); e.Up || e.Reason != "no interface matches its rules" {
		t.Fatalf("eth: %+v", e)
	}

	// The routing holds each link's usable interfaces. A link that went
	// down is published before the routing is synced, so the check waits
	// (up to 10 s) for the sync that follows the snapshot.
	routeMismatch := func(want map[string][]string) error {
		s, _ := a.Snapshot()
		got := h.lastRoute()
		if len(got) != len(s.Links) {
			return fmt.Errorf("Route got %d links, want %d", len(got), len(s.Links))
		}
		for i, pl := range got {
			l := s.Links[i]
			var names []string
			for _, f := range pl.Ifaces {
				names = append(names, f.Name)
			}
			if pl.Name != l.Name || pl.Mark != l.Steer.Mark || pl.Table != l.Steer.Table || pl.Ports != l.Steer.Ports ||
				!slices.Equal(names, want[l.Name]) {
				return fmt.Errorf("Route's link %d: %s mark %#x table %d ports %v ifaces %v; want %s %+v ifaces %v",
					i, pl.Name, pl.Mark, pl.Table, pl.Ports, names, l.Name, l.Steer, want[l.Name])
			}
		}
		return nil
	}
	checkRoute := func(want map[string][]string) {
		t.Helper()
		waitfor.NoError(t, waitfor.Timeout, "the routing holds each link's usable interfaces", func() error { return routeMismatch(want) })
	}
	checkRoute(map[string][]string{"wifi": {"wlan0"}, "modem": {"wwan0"}})

	// Wi-Fi loses its carrier: one publication, at once.
	clk.Advance(time.Minute)
	noCarrier := wlan
	noCarrier.Running = false
	h.set(noCarrier, wwan)
	next := w.snapshot(t)
	wifi = link(next, "wifi")
	if next.Version != 2 || wifi.Up || wifi.Reason != "no interface is up with carrier and an address: wlan0 no carrier" ||
		!wifi.Since.Equal(start.Add(time.Minute)) {
		t.Fatalf("after wlan0 lost its carrier: version %d, wifi %+v", next.Version, wifi)
	}
	if m := link(next, "modem"); !m.Since.Equal(start) {
		t.Fatalf("the modem did not change, but its Since did: %v", m.Since)
	}
	checkRoute(map[string][]string{"modem": {"wwan0"}})

	// Events that change nothing publish nothing: the next line is the
	// next change.
	h.poke()
	h.set(noCarrier, wwan, upIface("docker0"))
	wwan2 := wwan
	wwan2.Addrs = []string{"198.51.100.7/24"}
	h.set(noCarrier, wwan2)
	next = w.snapshot(t)
	if m := link(next, "modem"); next.Version != 3 || !slices.Equal(m.Interfaces[0].Addrs, wwan2.Addrs) {
		t.Fatalf("after the modem's address changed: version %d, modem %+v", next.Version, m)
	}

	// GET without watch answers the same view.
	_, body := get(t, srv.URL+"/v1/links")
	var got linkv1.Snapshot
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(next, got); d != "" {
		t.Fatalf("GET /v1/links (-stream +get):\n%s", d)
	}
	_, metrics := get(t, srv.URL+"/metrics")
	for _, m := range []string{`misaki_linkd_link_up{class="wifi",link="wifi",metered="false",roaming="false"} 0`,
		`misaki_linkd_link_up{class="cellular",link="modem",metered="true",roaming="false"} 1`,
		"misaki_linkd_publications_total 3", "misaki_linkd_watchers 1"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func TestAgentOverrides(t *testing.T) {
	h := newFakeHost(upIface("wlan0"), upIface("wwan0"))
	a, _ := newTestAgent(t, testConfig(), h)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	run(t, a)
	waitSnap(t, a, "the first scan", func(s linkv1.Snapshot) bool { return s.Version == 1 })
	w := openWatch(t, srv.URL)
	w.snapshot(t)

	for _, tt := range []struct {
		name, path, body string
		code             int
		err              string
	}{
		{"bad state", "wifi", `{"state":"sideways"}`, 400, "use up, down or auto"},
		{"unknown link", "satellite", `{"state":"up"}`, 404, "unknown link"},
		{"unknown field", "wifi", `{"state":"down","metred":true}`, 400, "metred"},
		{"not JSON", "wifi", `down`, 400, "body:"},
	} {
		code, body := put(t, srv.URL+"/v1/links/"+tt.path, tt.body)
		if code != tt.code || !strings.Contains(body, tt.err) {
			t.Errorf("%s: %d %s; want %d with %q", tt.name, code, body, tt.code, tt.err)
		}
	}

	// An override is published before the answer.
	code, body := put(t, srv.URL+"/v1/links/wifi", `{"state":"down"}`)
	var l linkv1.Link
	if err := json.Unmarshal([]byte(body), &l); code != 200 || err != nil {
		t.Fatalf("PUT wifi down: %d %s", code, body)
	}
	if l.Name != "wifi" || l.Up || l.Source != "override" || l.Reason != "set down by the connectivity manager" {
		t.Fatalf("PUT wifi down answered %+v", l)
	}
	if s, _ := a.Snapshot(); !cmp.Equal(link(s, "wifi"), l) {
		t.Fatalf("the answer %+v is not the published link %+v", l, link(s, "wifi"))
	}
	if s := w.snapshot(t); s.Version != 2 || link(s, "wifi").Up {
		t.Fatalf("stream after the override: %+v", s)
	}

	// Flags without a state change; a link without interfaces forced up.
	if code, body := put(t, srv.URL+"/v1/links/modem", `{"state":"auto","metered":false,"roaming":true}`); code != 200 {
		t.Fatalf("PUT modem: %d %s", code, body)
	}
	if code, body := put(t, srv.URL+"/v1/links/eth", `{"state":"up"}`); code != 200 {
		t.Fatalf("PUT eth: %d %s", code, body)
	}
	s := w.snapshot(t)
	if s.Version == 3 { // the two overrides may be coalesced
		s = w.snapshot(t)
	}
	if m, e := link(s, "modem"), link(s, "eth"); !m.Up || m.Metered || !m.Roaming || m.Source != "kernel" || !e.Up || e.Source != "override" {
		t.Fatalf("after the modem's flags and eth up: modem %+v, eth %+v", m, e)
	}

	// Auto hands back to the kernel; the kernel's changes show through.
	put(t, srv.URL+"/v1/links/wifi", `{"state":"auto"}`)
	if wifi := link(w.snapshot(t), "wifi"); !wifi.Up || wifi.Source != "kernel" || wifi.Reason != "" {
		t.Fatalf("wifi back to auto: %+v", wifi)
	}
}

// An override set while a rescan that began before it is installing the
// routing is the one that stays published.
func TestAgentOverrideNotLostToARescan(t *testing.T) {
	h := newFakeHost(upIface("wlan0"), upIface("wwan0"))
	a, _ := newTestAgent(t, testConfig(), h)
	run(t, a)
	waitSnap(t, a, "the first scan", func(s linkv1.Snapshot) bool { return s.Version == 1 })

	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	h.mu.Lock()
	h.inRoute = func() {
		if first.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
	}
	h.mu.Unlock()
	h.poke() // a rescan computes the view without the override, then stops in Route
	<-entered
	set := make(chan linkv1.Link, 1)
	go func() {
		l, err := a.Set("wifi", linkv1.Override{State: "down"})
		if err != nil {
			t.Error(err)
		}
		set <- l
	}()
	// Set publishes before the stale rescan does (the bug), or, with
	// refreshes serialised, waits for the rescan to end.
	var l linkv1.Link
	returned := false
	waitfor.True(t, "Set returns or waits for the rescan", func() bool {
		select {
		case l = <-set:
			returned = true
			return true
		default:
			return waitfor.GoroutineIn("linkd.(*Agent).Set(", "linkd.(*Agent).refresh(", "sync.(*Mutex).Lock(")
		}
	})
	close(release)
	if !returned {
		l = <-set
	}
	if l.Up || l.Source != "override" {
		t.Fatalf("Set answered %+v", l)
	}
	// The rescan is over once the main loop waits again on its timer.
	clk := a.o.Clock.(*clock.Fake)
	waitfor.True(t, "the rescan ends", func() bool { return clk.Timers() == 1 })
	s, _ := a.Snapshot()
	if wifi := link(s, "wifi"); wifi.Up || wifi.Source != "override" {
		t.Fatalf("a rescan that began before the override published over it: wifi %+v (Set returned early: %v)", wifi, returned)
	}
}

func TestAgentSetBeforeTheFirstScan(t *testing.T) {
	h := newFakeHost(upIface("wlan0"))
	h.scanErr = errors.New("netlink: operation not permitted")
	a, _ := newTestAgent(t, testConfig(), h)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)

	code, body := put(t, srv.URL+"/v1/links/wifi", `{"state":"down"}`)
	var l linkv1.Link
	if err := json.Unmarshal([]byte(body), &l); code != 200 || err != nil || l.Name != "wifi" || l.Up || l.Source != "override" {
		t.Fatalf("PUT before any scan: %d %s", code, body)
	}
	if a.Scanned() {
		t.Fatal("an override counts as a scan")
	}
	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz while the host cannot be read: %d", code)
	}
	h.mu.Lock()
	h.scanErr = nil
	h.mu.Unlock()
	run(t, a)
	s := waitSnap(t, a, "the first scan", func(s linkv1.Snapshot) bool { return s.Version == 1 })
	if wifi := link(s, "wifi"); wifi.Up || wifi.Source != "override" || len(wifi.Interfaces) != 1 {
		t.Fatalf("the first scan lost the override: %+v", wifi)
	}

	// While scans fail, overrides still apply to the last view.
	h.mu.Lock()
	h.scanErr = errors.New("netlink: no buffer space")
	h.mu.Unlock()
	if l, err := a.Set("wifi", linkv1.Override{State: "auto"}); err != nil || !l.Up {
		t.Fatalf("auto while scans fail: %+v, %v", l, err)
	}
}

func TestAgentProbes(t *testing.T) {
	h := newFakeHost(upIface("wlan0"), upIface("wwan0"))
	c := testConfig("gw.example:443")
	a, clk := newTestAgent(t, c, h)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	run(t, a)
	probed := func(s linkv1.Snapshot) bool {
		for _, n := range []string{"wifi", "modem"} {
			if l := link(s, n); !l.Up || l.Probe == nil || !l.Probe.Reachable {
				return false
			}
		}
		return true
	}
	s := waitSnap(t, a, "both links probed", probed)
	if p := link(s, "wifi").Probe; p.Target != "gw.example:443" || p.RTT == "" || !p.Checked.Equal(start) {
		t.Fatalf("wifi's probe: %+v", p)
	}
	if e := link(s, "eth"); e.Up || e.Probe != nil {
		t.Fatalf("eth, without an interface, must not be probed: %+v", e)
	}
	h.mu.Lock()
	if st := h.dials["modem"]; len(st) == 0 || st[0] != *link(s, "modem").Steer {
		t.Errorf("the modem was probed with steer %+v, want its own %+v", st, link(s, "modem").Steer)
	}
	if len(h.dials["eth"]) != 0 {
		t.Errorf("eth probed %d times", len(h.dials["eth"]))
	}
	h.mu.Unlock()

	w := openWatch(t, srv.URL)
	v := w.snapshot(t).Version
	// Timers: the rescan, the prober's interval and the stream's heartbeat.
	idle := func() bool { return clk.Timers() == 3 }
	interval := c.Probe.Interval.D()

	// The gateway stops answering over the modem: down, with the reason.
	h.setReach("modem", errors.New("connection refused"))
	waitfor.True(t, "the prober waits", idle)
	clk.Advance(interval)
	s = w.snapshot(t)
	m := link(s, "modem")
	if s.Version != v+1 || m.Up || m.Reason != "gateway gw.example:443 unreachable over it: connection refused" ||
		m.Probe == nil || m.Probe.Reachable || m.Probe.Error != "connection refused" {
		t.Fatalf("after the modem's probe failed: version %d (want %d), modem %+v", s.Version, v+1, m)
	}
	if !link(s, "wifi").Up {
		t.Fatal("wifi went down with the modem")
	}

	// Probes with the same answers publish nothing, even when a rescan
	// takes their new timings: the next line is the next change.
	for range 3 {
		waitfor.True(t, "the prober waits", idle)
		n, _ := h.dialCount()
		clk.Advance(interval)
		waitfor.True(t, "both links probed again", func() bool { c, _ := h.dialCount(); return c >= n+2 })
		h.poke()
	}
	h.setReach("modem", nil)
	waitfor.True(t, "the prober waits", idle)
	clk.Advance(interval)
	s = w.snapshot(t)
	if m := link(s, "modem"); s.Version != v+2 || !m.Up || m.Reason != "" {
		t.Fatalf("after the modem's probe came back: version %d (want %d), modem %+v", s.Version, v+2, m)
	}
}

func TestAgentHeartbeats(t *testing.T) {
	h := newFakeHost(upIface("wlan0"))
	a, clk := newTestAgent(t, testConfig(), h)
	a.heartbeat = Heartbeat
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	run(t, a)
	waitSnap(t, a, "the first scan", func(s linkv1.Snapshot) bool { return s.Version == 1 })
	w := openWatch(t, srv.URL)
	w.snapshot(t)
	for range 2 {
		// Timers: the rescan and the stream's heartbeat.
		waitfor.True(t, "the stream waits", func() bool { return clk.Timers() == 2 })
		clk.Advance(Heartbeat)
		if l := w.next(t); l != "" {
			t.Fatalf("heartbeat: %q", l)
		}
	}
	h.set(upIface("wlan0"), upIface("eth0"))
	if s := w.snapshot(t); s.Version != 2 || !link(s, "eth").Up {
		t.Fatalf("after the heartbeats: %+v", s)
	}
}
