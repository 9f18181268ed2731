package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/misaki-io/misaki/internal/proxy/supervise"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestSupervisedProxyThroughSIGKILL is issue 16's item 13 measured: an app
// sends steadily (40 requests a second: two workers on keep-alive
// connections, two opening a connection per request) through the edge to
// a real upstream that takes 20ms to answer, while the proxy is killed
// with SIGKILL, five times:
//
//   - under misaki-proxy --supervise, killing the child (the parent keeps
//     the sockets and starts a new child, at once for the first three
//     kills, each after the child has run supervise.StableRun, and after
//     the crash-loop backoff for the last): every error the app sees
//     is a request that was in flight at a kill, that is, outstanding
//     between the SIGKILL and the child's death as its parent reports it;
//     a request and a DNS query sent while no child runs wait in the
//     sockets and are answered by the next child; a request spooled before
//     a kill is delivered by the next child; DNS answers after the kills.
//   - without the supervisor, killing the proxy and starting it again on
//     the same ports at once, as a restarting service manager would: the
//     request and the DNS query sent while no proxy runs are refused, as
//     are the app's requests in that gap. This half documents the
//     behaviour the supervisor removes.
//
// The figures are logged for both.
func TestSupervisedProxyThroughSIGKILL(t *testing.T) {
	const kills = 5

	var mu sync.Mutex
	spooled := map[string]int{} // Idempotency-Key of /v1/events requests -> arrivals
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/events" {
			mu.Lock()
			spooled[r.Header.Get("Idempotency-Key")]++
			mu.Unlock()
		} else {
			time.Sleep(20 * time.Millisecond) // the service's work, so that requests are in flight
		}
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startResolver(t, pc, "", net.IPv4(192, 0, 2, 1), 60)

	// api carries the app's requests on any link; events spools when
	// there is no Wi-Fi.
	config := func(mesh, admin, dnsAddr, spoolDir string) string {
		return fmt.Sprintf(`
listen: %s
admin: %s
dns: {listen: %s, upstreams: [%s]}
links:
  - {name: wlan, class: wifi}
  - {name: lte, class: cellular}
spool: {dir: %s}
routes:
  - name: api
    hosts: [api.mesh]
    upstream: %s
    probe: {type: none}
  - name: events
    hosts: [events.mesh]
    upstream: %s
    probe: {type: none}
    offline: {links: [wifi], spool: true}
`, mesh, admin, dnsAddr, pc.LocalAddr(), spoolDir, up.URL, up.URL)
	}

	t.Run("supervised", func(t *testing.T) {
		cfg := config("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", t.TempDir()) + "health: 127.0.0.1:0\n"
		sp := startSupervised(t, cfg)
		first := sp.wait(t, "listening", 0)
		mesh, admin, dnsAddr := first.Mesh, first.Admin, first.DNS
		a := startApp(mesh)
		defer a.stop()

		var probes []*probe
		up := time.Now() // the child listens
		for k := range kills {
			a.waitServed(t, 8)
			if k < kills-2 {
				// A crash: restarted at once. The last two kills come
				// sooner after a start, as in a crash loop, and the
				// second of them waits for the restart backoff. The
				// supervisor counts the run on its wall clock: real time
				// passes here, the scenario, not a wait for anything.
				time.Sleep(time.Until(up.Add(supervise.StableRun)))
			}
			a.randomMoment()
			pid := sp.child(t)
			start := time.Now()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			sp.wait(t, "proxy exited; restarting it", pid)
			dead := time.Now()
			// While no child runs: a request and a DNS query.
			pr := sendProbes(a, mesh, dnsAddr)
			l := sp.wait(t, "listening", 0)
			up = time.Now()
			a.addKill(start, dead, up)
			if l.Mesh != mesh || l.Admin != admin || l.DNS != dnsAddr {
				t.Fatalf("the restarted proxy listens on %s %s %s, want %s %s %s", l.Mesh, l.Admin, l.DNS, mesh, admin, dnsAddr)
			}
			probes = append(probes, pr)
		}
		a.waitServed(t, 8)
		a.stop()
		for i, pr := range probes {
			if err := pr.result(); err != nil {
				t.Errorf("kill %d: sent while no proxy ran: %v", i+1, err)
			}
		}
		st := a.stats()
		t.Logf("supervised, %d kills of the child: %s", kills, st)
		if st.failedOutside > 0 {
			t.Errorf("%d requests failed that were not in flight at a kill (%d failed, %d in flight at the kills)", st.failedOutside, st.failed, st.inFlight)
			a.explain(t, st.outside)
		}
		if st.duringRestart == 0 {
			t.Error("no request was sent while no child ran: the test tested nothing")
		}

		// The spool outlives the child: a request spooled (no Wi-Fi) before
		// a kill is delivered by the next child, whose Wi-Fi is up.
		setLinkHTTP(t, admin, "wlan", "down")
		req, _ := http.NewRequest(http.MethodPost, "http://"+mesh+"/v1/events", strings.NewReader(`{"n":1}`))
		req.Host = "events.mesh"
		req.Header.Set("Prefer", "respond-async")
		req.Header.Set("Idempotency-Key", "spooled-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("events without Wi-Fi: %d, want 202 (spooled)", resp.StatusCode)
		}
		pid := sp.child(t)
		syscall.Kill(pid, syscall.SIGKILL)
		sp.wait(t, "proxy exited; restarting it", pid)
		sp.wait(t, "listening", 0)
		waitfor.True(t, "the spooled request to reach the upstream after the restart", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return spooled["spooled-1"] > 0
		})

		// DNS answers over UDP and TCP after the restarts.
		for _, network := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: network, Timeout: 5 * time.Second}
			r, _, err := c.Exchange(new(dns.Msg).SetQuestion("api.mesh.", dns.TypeA), dnsAddr)
			if err != nil || len(r.Answer) == 0 {
				t.Errorf("DNS over %s after the restarts: %v %v", network, r, err)
			}
		}
	})

	t.Run("unsupervised", func(t *testing.T) {
		spoolDir := t.TempDir()
		p := startProxyBinary(t, config("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", spoolDir))
		mesh, dnsAddr := p.mesh, p.dns
		// Restarts bind the same addresses.
		cfg := config(mesh, p.admin, dnsAddr, spoolDir)
		a := startApp(mesh)
		defer a.stop()
		var probes []*probe
		for range kills {
			a.waitServed(t, 8)
			a.randomMoment()
			start := time.Now()
			p.cmd.Process.Kill()
			p.cmd.Wait()
			dead := time.Now()
			pr := sendProbes(a, mesh, dnsAddr)
			// Nothing listens until the new proxy has bound the
			// addresses: the probes end before it starts.
			pr.result()
			p = startProxyBinary(t, cfg)
			a.addKill(start, dead, time.Now())
			probes = append(probes, pr)
		}
		a.waitServed(t, 8)
		a.stop()
		st := a.stats()
		t.Logf("unsupervised, %d kills and immediate restarts: %s", kills, st)
		for i, pr := range probes {
			if err := pr.result(); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("kill %d: a request sent while no proxy ran got %v, want connection refused", i+1, err)
			}
			if !errors.Is(pr.dnsErr, syscall.ECONNREFUSED) {
				t.Errorf("kill %d: a DNS query sent while no proxy ran got %v, want refused (ICMP port unreachable)", i+1, pr.dnsErr)
			}
		}
		if st.failedOutside == 0 {
			t.Error("no request was refused between a kill and the restart")
		}
	})
}

// probe is a request and a DNS query sent while no proxy runs.
type probe struct {
	done            chan struct{}
	httpErr, dnsErr error
}

func (p *probe) result() error {
	<-p.done
	return errors.Join(p.httpErr, p.dnsErr)
}

func sendProbes(a *app, mesh, dnsAddr string) *probe {
	pr := &probe{done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() { pr.httpErr = a.send(a.fresh, "probe") })
	wg.Go(func() {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion("api.mesh.", dns.TypeA), dnsAddr)
		if err == nil && len(r.Answer) == 0 {
			err = fmt.Errorf("no answer: %v", r)
		}
		pr.dnsErr = err
	})
	go func() { wg.Wait(); close(pr.done) }()
	return pr
}

// app sends POSTs to api.mesh through the proxy at a steady rate, and
// keeps when each started and ended and how.
type app struct {
	mesh             string
	keepAlive, fresh *http.Client
	quit             chan struct{}
	wg               sync.WaitGroup
	stopOnce         sync.Once

	mu    sync.Mutex // guards the fields below
	reqs  []appReq
	kills []killWindow
	ok    int
}

type appReq struct {
	start, end time.Time
	err        error
}

// killWindow is one kill: from the SIGKILL to the death seen, and on to
// the new proxy listening.
type killWindow struct{ start, dead, listening time.Time }

func startApp(mesh string) *app {
	a := &app{
		mesh:      mesh,
		keepAlive: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		fresh:     &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		quit:      make(chan struct{}),
	}
	for i, c := range []*http.Client{a.keepAlive, a.fresh, a.keepAlive, a.fresh} {
		a.wg.Go(func() {
			// 10 a second per worker, the workers a quarter of a period
			// apart.
			select {
			case <-a.quit:
				return
			case <-time.After(time.Duration(i) * 25 * time.Millisecond):
			}
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-a.quit:
					return
				case <-tick.C:
					a.send(c, fmt.Sprintf("w%d-%d", i, n))
				}
			}
		})
	}
	return a
}

// send sends one request and records it.
func (a *app) send(c *http.Client, id string) error {
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.mesh+"/v1/x", strings.NewReader(`{"id":"`+id+`"}`))
	req.Host = "api.mesh"
	resp, err := c.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, appReq{start: start, end: time.Now(), err: err})
	if err == nil {
		a.ok++
	}
	return err
}

func (a *app) stop() {
	a.stopOnce.Do(func() { close(a.quit); a.wg.Wait() })
}

func (a *app) addKill(start, dead, listening time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.kills = append(a.kills, killWindow{start, dead, listening})
}

// waitServed waits until n more requests have succeeded.
func (a *app) waitServed(t *testing.T, n int) {
	t.Helper()
	a.mu.Lock()
	want := a.ok + n
	a.mu.Unlock()
	waitfor.True(t, fmt.Sprintf("%d requests served", n), func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.ok >= want
	})
}

// randomMoment waits for a random part of the app's period, so that a kill
// that follows falls anywhere in it.
func (a *app) randomMoment() {
	time.Sleep(time.Duration(mrand.IntN(100)) * time.Millisecond)
}

type appStats struct {
	sent, failed  int
	inFlight      int             // requests outstanding between a SIGKILL and the death, summed over kills
	failedOutside int             // failed requests that were not
	duringRestart int             // requests sent after a death and before the new proxy listened
	servedDuring  int             // of those, served
	gaps          []time.Duration // from each kill to the next proxy listening
	outside       []appReq        // the failures not in flight at a kill
}

func (s appStats) String() string {
	return fmt.Sprintf("%d requests, %d failed; %d in flight at the kills; %d failed that were not in flight at a kill; "+
		"%d sent after a death and before the next proxy logged listening, %d of them served; from each kill to the next proxy listening %v",
		s.sent, s.failed, s.inFlight, s.failedOutside, s.duringRestart, s.servedDuring, s.gaps)
}

// explain logs reqs with their times relative to the nearest kill.
func (a *app) explain(t *testing.T, reqs []appReq) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range reqs {
		var near killWindow
		for _, k := range a.kills {
			if near.start.IsZero() || r.start.Sub(k.start).Abs() < r.start.Sub(near.start).Abs() {
				near = k
			}
		}
		t.Logf("request started %v after a kill (death seen at %v, the new proxy listening at %v), ended %v after it: %v",
			r.start.Sub(near.start), near.dead.Sub(near.start), near.listening.Sub(near.start), r.end.Sub(near.start), r.err)
	}
}

func (a *app) stats() appStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s appStats
	for _, k := range a.kills {
		s.gaps = append(s.gaps, k.listening.Sub(k.start).Round(time.Millisecond))
	}
	for _, r := range a.reqs {
		s.sent++
		atKill, during := false, false
		for _, k := range a.kills {
			if !r.start.After(k.dead) && !r.end.Before(k.start) {
				s.inFlight++
				atKill = true
			}
			if r.start.After(k.dead) && r.start.Before(k.listening) {
				during = true
			}
		}
		if during {
			s.duringRestart++
			if r.err == nil {
				s.servedDuring++
			}
		}
		if r.err != nil {
			s.failed++
			if !atKill {
				s.failedOutside++
				s.outside = append(s.outside, r)
			}
		}
	}
	return s
}

// supervisedProxy is misaki-proxy --supervise, with the events of its
// log: the parent's (proxy started, proxy exited) and the child's
// (listening).
type supervisedProxy struct {
	cmd    *exec.Cmd
	logs   *logBuffer
	events chan logEvent
}

type logEvent struct {
	Msg              string
	PID              int
	Mesh, Admin, DNS string
}

func startSupervised(t *testing.T, cfg string) *supervisedProxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "misaki-proxy"), "--supervise", "--config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sp := &supervisedProxy{cmd: cmd, logs: &logBuffer{}, events: make(chan logEvent, 256)}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the supervisor exited with %v, want status 0 after SIGTERM", err)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("the supervisor did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("logs:\n%s", sp.logs.String())
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			sp.logs.WriteString(line + "\n")
			var e logEvent
			if json.Unmarshal([]byte(line), &e) == nil {
				switch e.Msg {
				case "listening", "proxy started", "proxy exited; restarting it":
					sp.events <- e
				}
			}
		}
		close(sp.events)
	}()
	return sp
}

// wait returns the next event msg (of pid, if not 0), skipping others.
func (sp *supervisedProxy) wait(t *testing.T, msg string, pid int) logEvent {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e, ok := <-sp.events:
			if !ok {
				t.Fatalf("the supervisor exited waiting for %q; logs:\n%s", msg, sp.logs.String())
			}
			if e.Msg == msg && (pid == 0 || e.PID == pid) {
				return e
			}
		case <-timeout:
			t.Fatalf("no %q within 20s; logs:\n%s", msg, sp.logs.String())
		}
	}
}

// child returns the pid of the supervisor's child.
func (sp *supervisedProxy) child(t *testing.T) int {
	t.Helper()
	return childOf(t, sp.cmd.Process.Pid)
}

// childOf returns the pid of the only child of pid, read from /proc.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var pids []int
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) != 1 {
		t.Fatalf("process %d has children %v, want one", pid, pids)
	}
	return pids[0]
}

// TestSystemdSocketActivation hands the proxy its mesh and admin sockets
// as systemd does (systemd-socket-activate: LISTEN_FDS, LISTEN_FDNAMES and
// LISTEN_PID), Unix sockets here so that no port is guessed: the proxy
// serves on them, alone and under the supervisor, which hands them on to
// each child. systemd-socket-activate starts the proxy on the first
// connection, which waits in the backlog meanwhile and is served.
func TestSystemdSocketActivation(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian systemd)")
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	cfg := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
routes:
  - {name: api, hosts: [api.mesh], upstream: %s, probe: {type: none}}
`, up.URL)
	for _, supervised := range []bool{false, true} {
		t.Run(fmt.Sprintf("supervise=%v", supervised), func(t *testing.T) {
			dir := t.TempDir()
			mesh, admin := filepath.Join(dir, "mesh.sock"), filepath.Join(dir, "admin.sock")
			var more []string
			if supervised {
				more = []string{"--supervise"}
			}
			get := func(sock, host, path string) error {
				c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
					DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
						return (&net.Dialer{}).DialContext(ctx, "unix", sock)
					}}}
				req, _ := http.NewRequest(http.MethodGet, "http://"+host+path, nil)
				resp, err := c.Do(req)
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("GET http://%s%s on %s: %d", host, path, sock, resp.StatusCode)
				}
				return nil
			}
			first := make(chan error, 1)
			go func() {
				// Not waitfor: this goroutine may not call t.Fatal.
				for deadline := time.Now().Add(waitfor.Timeout); ; time.Sleep(5 * time.Millisecond) {
					if _, err := os.Stat(admin); err == nil { // the last bound
						break
					}
					if time.Now().After(deadline) {
						first <- fmt.Errorf("%s was not bound within %v", admin, waitfor.Timeout)
						return
					}
				}
				first <- get(mesh, "api.mesh", "/")
			}()
			p := startProxyBinaryArgs(t, cfg, []string{activate, "-l", mesh, "-l", admin, "--fdname=mesh:admin"}, more)
			if p.mesh != mesh || p.admin != admin {
				t.Fatalf("the proxy listens on %s and %s, want the sockets handed over, %s and %s", p.mesh, p.admin, mesh, admin)
			}
			if err := <-first; err != nil {
				t.Fatalf("the connection that started the proxy: %v", err)
			}
			if err := get(admin, "admin", "/readyz"); err != nil {
				t.Fatal(err)
			}
			if supervised {
				pid := childOf(t, p.cmd.Process.Pid)
				syscall.Kill(pid, syscall.SIGKILL)
				waitfor.True(t, "the child to die and be reaped", func() bool {
					_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
					return err != nil
				})
				if err := get(mesh, "api.mesh", "/"); err != nil { // waits for the next child
					t.Fatalf("after a kill of the child: %v", err)
				}
			}
		})
	}
}
