package server

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/proxy/budget"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// meteredYAML: a route with a daily allowance on metered links, and two
// links that both ride loopback (lo), the modem metered, so that steering
// onto either one binds to lo and really carries the bytes.
func meteredYAML(dir, upstream string) string {
	return fmt.Sprintf(`
spool: {dir: %s}
links:
  - {name: wlan, match: "lo", class: wifi}
  - {name: modem, match: "lo", class: cellular, metered: true}
routes:
  - name: video
    hosts: [video.cloud.misaki]
    upstream: %s
    probe: {type: none}
    offline: {budget: {daily: 50KiB}}
`, dir, upstream)
}

type routeView struct {
	Name      string         `json:"name"`
	Usable    bool           `json:"usable"`
	Reason    string         `json:"reason"`
	Link      string         `json:"link"`
	Interface string         `json:"interface"`
	Budget    *budget.Status `json:"budget"`
}

func (p *proxy) route(t *testing.T, name string) routeView {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Routes []routeView `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, r := range body.Routes {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("route %s not in /v1/routes", name)
	return routeView{}
}

// A route with a daily allowance rides the metered link until the bytes it
// carried there pass the allowance, then has no usable link until an
// unmetered one is up; the count outlives a restart.
func TestMeteredBudget(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		if runtime.GOOS != "linux" || os.Geteuid() != 0 {
			t.Skip("binds upstream connections to lo (SO_BINDTODEVICE, CAP_NET_RAW) and counts them from TCP_INFO: Linux as root")
		}
		up := newUpstream(t, nil)
		dir := t.TempDir()
		p := srv.start(t, meteredYAML(dir, up.URL), true)

		// Both links up: the unmetered one carries the route.
		if r := p.route(t, "video"); !r.Usable || r.Link != "wlan" || r.Interface != "lo" || r.Budget == nil || r.Budget.DailyLimit != 50<<10 {
			t.Fatalf("at start: %+v", r)
		}
		// Wi-Fi down: the modem, metered, carries it and counts.
		p.setLink(t, "wlan", "down")
		if r := p.route(t, "video"); !r.Usable || r.Link != "modem" {
			t.Fatalf("Wi-Fi down: %+v", r)
		}
		body := []byte(strings.Repeat("v", 30<<10))
		for i := range 2 {
			if res := p.send(t.Context(), "video.cloud.misaki", fmt.Sprint("m", i), nil, body); res.status != 200 {
				t.Fatalf("request %d over the modem: %+v", i, res)
			}
		}
		// The meter reads the connections every second of the proxy's clock.
		waitfor.True(t, "the route over its allowance", func() bool {
			p.clock.Advance(meterInterval)
			return !p.route(t, "video").Usable
		})
		r := p.route(t, "video")
		if !strings.Contains(r.Reason, "over its metered budget") || !r.Budget.Exceeded || r.Budget.DailyBytes < 60<<10 {
			t.Fatalf("over the allowance: %+v (budget %+v)", r, r.Budget)
		}
		used := r.Budget.DailyBytes
		res := p.send(t.Context(), "video.cloud.misaki", "held", map[string]string{"Prefer": "wait=0"}, []byte("x"))
		if res.status == 200 || up.count("held") != 0 {
			t.Fatalf("a request over the allowance with only the modem up was delivered: %+v", res)
		}

		// Wi-Fi back: usable again over it, and its bytes do not count.
		p.setLink(t, "wlan", "auto")
		if r := p.route(t, "video"); !r.Usable || r.Link != "wlan" {
			t.Fatalf("Wi-Fi back: %+v", r)
		}
		if res := p.send(t.Context(), "video.cloud.misaki", "w", nil, body); res.status != 200 {
			t.Fatalf("over Wi-Fi: %+v", res)
		}
		p.stop() // counts what is left and writes budgets.json

		var saved map[string]budget.Usage
		b, err := os.ReadFile(filepath.Join(dir, "budgets.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &saved); err != nil {
			t.Fatal(err)
		}
		if saved["video"].DailyBytes != used {
			t.Fatalf("budgets.json says %d bytes today, the route had used %d before Wi-Fi carried 30 KiB: %s", saved["video"].DailyBytes, used, b)
		}

		// A restart keeps the count: with only the modem up, still over.
		p = srv.start(t, meteredYAML(dir, up.URL), true)
		p.setLink(t, "wlan", "down")
		r = p.route(t, "video")
		if r.Usable || !r.Budget.Exceeded || r.Budget.DailyBytes != used {
			t.Fatalf("after a restart: %+v (budget %+v)", r, r.Budget)
		}

		// A new day starts the count again.
		p.clock.Advance(24 * time.Hour)
		waitfor.True(t, "the route usable on a new day", func() bool {
			p.clock.Advance(meterInterval)
			return p.route(t, "video").Usable
		})
	})
}

// Bytes a request carries over a metered link while the proxy shuts down
// (its grace lets requests in flight finish) are in budgets.json.
func TestMeteredBytesOfTheShutdownGrace(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		if runtime.GOOS != "linux" || os.Geteuid() != 0 {
			t.Skip("binds upstream connections to lo (SO_BINDTODEVICE, CAP_NET_RAW) and counts them from TCP_INFO: Linux as root")
		}
		const size = 200 << 10
		arrived, release := make(chan struct{}), make(chan struct{})
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-release
			w.Write([]byte(strings.Repeat("s", size)))
		})
		dir := t.TempDir()
		p := srv.start(t, meteredYAML(dir, up.URL), false)
		p.setLink(t, "wlan", "down")
		got := make(chan result, 1)
		go func() { got <- p.send(t.Context(), "video.cloud.misaki", "slow", nil, nil) }()
		<-arrived
		stopped := make(chan struct{})
		go func() { p.stop(); close(stopped) }()
		waitfor.True(t, "the proxy shutting down", func() bool { return p.stopping.Load() })
		close(release)
		if r := <-got; r.status != 200 || len(r.body) != size {
			t.Fatalf("the request in flight at shutdown: %d, %d bytes", r.status, len(r.body))
		}
		<-stopped
		b, err := os.ReadFile(filepath.Join(dir, "budgets.json"))
		if err != nil {
			t.Fatal(err)
		}
		var saved map[string]budget.Usage
		if err := json.Unmarshal(b, &saved); err != nil {
			t.Fatal(err)
		}
		if n := saved["video"].DailyBytes; n < size {
			t.Fatalf("budgets.json counts %d bytes; the response alone was %d", n, size)
		}
	})
}

// fakeLinkAgent plays misaki-linkd's watch stream: every stream gets the
// current snapshot, then each new one.
type fakeLinkAgent struct {
	*httptest.Server
	mu      sync.Mutex // guards fields below
	snap    linkv1.Snapshot
	changed chan struct{}
}

func newFakeLinkAgent(t *testing.T, snap linkv1.Snapshot) *fakeLinkAgent {
	t.Helper()
	a := &fakeLinkAgent{snap: snap, changed: make(chan struct{})}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for {
			a.mu.Lock()
			s, changed := a.snap, a.changed
			a.mu.Unlock()
			if err := enc.Encode(s); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-changed:
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeLinkAgent) set(f func(*linkv1.Snapshot)) {
	a.mu.Lock()
	f(&a.snap)
	a.snap.Version++
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

// freePorts is a range of n source ports no socket holds now.
func freePorts(t *testing.T, n int) [2]uint16 {
	t.Helper()
	for range 100 {
		first := 61000 + rand.IntN(65536-61000-n)
		free := true
		for p := first; p < first+n && free; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if free = err == nil; free {
				ln.Close()
			}
		}
		if free {
			return [2]uint16{uint16(first), uint16(first + n - 1)}
		}
	}
	t.Fatalf("no %d free ports in a row", n)
	return [2]uint16{}
}

// The node link agent's links steer a route by source port: the
// unmetered link of the route's classes while it is up, the metered one
// when it goes; the link is in the route's status.
func TestAgentLinksSteerByPort(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		if runtime.GOOS != "linux" {
			t.Skip("steering by the agent's policy routing is Linux only")
		}
		wifiPorts, modemPorts := freePorts(t, 50), freePorts(t, 50)
		agent := newFakeLinkAgent(t, linkv1.Snapshot{Version: 1, Agent: "node/1", Links: []linkv1.Link{
			{Name: "wifi", Class: "wifi", Up: true, Source: "kernel", Steer: &linkv1.Steer{Mark: 0x4d5a0000, Table: 15100, Ports: wifiPorts}},
			{Name: "modem", Class: "cellular", Metered: true, Up: true, Source: "kernel", Steer: &linkv1.Steer{Mark: 0x4d5a0001, Table: 15101, Ports: modemPorts}},
			{Name: "sat", Class: "satellite", Metered: true, Up: true, Source: "kernel", Steer: &linkv1.Steer{Mark: 0x4d5a0002, Table: 15102, Ports: [2]uint16{64000, 64049}}},
		}})
		var mu sync.Mutex
		var from []int
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			_, port, _ := net.SplitHostPort(r.RemoteAddr)
			n, _ := strconv.Atoi(port)
			mu.Lock()
			from = append(from, n)
			mu.Unlock()
			fmt.Fprint(w, "ok")
		})
		lastPort := func() int {
			mu.Lock()
			defer mu.Unlock()
			return from[len(from)-1]
		}
		p := srv.start(t, fmt.Sprintf(`
linkAgent: {address: %s}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: %s
    probe: {type: none}
    offline: {links: [wifi, cellular]}
`, agent.Listener.Addr(), up.URL), false)

		in := func(port int, r [2]uint16) bool { return port >= int(r[0]) && port <= int(r[1]) }
		if r := p.route(t, "telemetry"); !r.Usable || r.Link != "wifi" {
			t.Fatalf("with Wi-Fi up: %+v", r)
		}
		if res := p.send(t.Context(), "telemetry.cloud.misaki", "1", nil, nil); res.status != 200 || !in(lastPort(), wifiPorts) {
			t.Fatalf("over Wi-Fi: %d from port %d, want %v", res.status, lastPort(), wifiPorts)
		}

		agent.set(func(s *linkv1.Snapshot) { s.Links[0].Up, s.Links[0].Reason = false, "no carrier" })
		waitfor.True(t, "the route steered onto the modem", func() bool { return p.route(t, "telemetry").Link == "modem" })
		if res := p.send(t.Context(), "telemetry.cloud.misaki", "2", nil, nil); res.status != 200 || !in(lastPort(), modemPorts) {
			t.Fatalf("over the modem: %d from port %d, want %v", res.status, lastPort(), modemPorts)
		}

		// The proxy's own override of an agent link counts too.
		p.setLink(t, "modem", "down")
		if r := p.route(t, "telemetry"); r.Usable {
			t.Fatalf("with Wi-Fi and the modem down (the satellite not allowed): %+v", r)
		}
		agent.set(func(s *linkv1.Snapshot) { s.Links[0].Up, s.Links[0].Reason = true, "" })
		waitfor.True(t, "the route back on Wi-Fi", func() bool { r := p.route(t, "telemetry"); return r.Usable && r.Link == "wifi" })
		if res := p.send(t.Context(), "telemetry.cloud.misaki", "3", nil, nil); res.status != 200 || !in(lastPort(), wifiPorts) {
			t.Fatalf("back over Wi-Fi: %d from port %d, want %v", res.status, lastPort(), wifiPorts)
		}
	})
}
