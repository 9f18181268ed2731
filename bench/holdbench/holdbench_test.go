//go:build linux

package holdbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	held        = 10000            // concurrent requests held while the link is down
	bodySize    = 256              // request body bytes
	deadline    = 3 * time.Minute  // whole benchmark, build included
	settleLimit = 30 * time.Second // goroutines must return to baseline within this
	gcWait      = 8 * time.Second  // wait for GC cycles (the proxy trims ~3s after a drain)
	maxGoLeak   = 10               // goroutines allowed above baseline after the drain
	dialSlots   = 512              // concurrent client dials, to stay under the listen backlog
	pollEvery   = 50 * time.Millisecond
)

// proxyBin builds misaki-proxy once per test binary; TestMain removes it.
var (
	binDir   string
	proxyBin = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "holdbench-")
		if err != nil {
			return "", err
		}
		binDir = dir
		bin := filepath.Join(dir, "misaki-proxy")
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/misaki-io/misaki/cmd/misaki-proxy").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go build misaki-proxy: %w\n%s", err, out)
		}
		return bin, nil
	})
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// sample is one reading of the proxy's resources.
type sample struct {
	RSS, HWM   int64 // VmRSS and VmHWM from /proc/PID/status, bytes
	Goroutines int64 // go_goroutines
	HeapInuse  int64 // go_memstats_heap_inuse_bytes
	GCCount    int64 // go_gc_duration_seconds_count
	HeldReqs   int64 // route bench: heldRequests
	HeldBytes  int64 // route bench: heldBytes
}

// result is one hold-and-drain cycle.
type result struct {
	base, held, drained sample
	holdTime, drainTime time.Duration
	settleTime          time.Duration
	gcAfterDrain        int64 // GC cycles between the settled and the drained sample
}

func BenchmarkHold10k(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	// This process holds the client conns plus the upstream's; the proxy the
	// inbound conns plus its upstream pool. held+1024 is the floor; more helps.
	raiseNoFile(b, held+1024)
	bin, err := proxyBin()
	if err != nil {
		b.Fatal(err)
	}
	up := startUpstream(b)
	px := startProxy(ctx, b, bin, up.addr)

	// Several hold-and-drain cycles: the first grows the heap and pools to
	// their working size; later ones must not grow past it.
	var cycles []result
	for b.Loop() {
		cycles = cycles[:0]
		for range cyclesPerRun {
			r, err := cycle(ctx, px, up)
			if err != nil {
				b.Fatalf("%v\nproxy log tail:\n%s", err, px.log.tail())
			}
			cycles = append(cycles, r)
		}
	}
	r := cycles[0]
	first, last := cycles[1], cycles[len(cycles)-1]
	if grow := float64(last.drained.RSS) / float64(first.drained.RSS); grow > 1.10 {
		b.Errorf("RSS after drain grew from %d to %d bytes between cycle 2 and %d", first.drained.RSS, last.drained.RSS, len(cycles))
	}

	perHeld := func(after, before int64) float64 { return float64(after-before) / held }
	b.ReportMetric(perHeld(r.held.RSS, r.base.RSS), "RSS-B/held")
	b.ReportMetric(perHeld(r.held.HeapInuse, r.base.HeapInuse), "heap-B/held")
	b.ReportMetric(perHeld(r.held.Goroutines, r.base.Goroutines), "goroutines/held")
	b.ReportMetric(float64(r.held.HeldBytes)/held, "heldBytes/held")
	b.ReportMetric(float64(r.drained.Goroutines-r.base.Goroutines), "goroutines-after-drain")
	b.ReportMetric(float64(r.drained.HeapInuse-r.base.HeapInuse), "heap-B-after-drain")
	b.ReportMetric(r.drainTime.Seconds(), "drain-s")

	b.ReportMetric(float64(last.drained.RSS-first.drained.RSS), "RSS-B-growth-cycle2-to-last")

	table := summary(r) + cycleTable(cycles)
	b.Logf("\n%s", table)
	fmt.Print(table)
}

// cycle holds held requests, releases them and waits for the proxy to settle.
func cycle(ctx context.Context, px *proxy, up *upstream) (r result, err error) {
	if err := px.setLink(ctx, "up"); err != nil { // a previous failed cycle may have left it down
		return r, err
	}
	up.reset()
	if r.base, err = px.sample(ctx); err != nil {
		return r, err
	}

	if err := px.setLink(ctx, "down"); err != nil {
		return r, err
	}
	cl := newClients(px.mesh)
	defer cl.tr.CloseIdleConnections()
	reqCtx, stopReqs := context.WithCancel(ctx)
	defer stopReqs() // ends any request still open if the cycle fails
	start := time.Now()
	for i := range held {
		cl.wg.Go(func() { cl.do(reqCtx, i) })
	}
	err = poll(ctx, "all requests held", func() (bool, error) {
		if n := cl.done.Load(); n > 0 {
			return false, fmt.Errorf("%d requests answered while the link was down; first: %v", n, cl.firstErr())
		}
		s, err := px.routes(ctx)
		return err == nil && s.HeldReqs == held, err
	})
	if err != nil {
		return r, err
	}
	r.holdTime = time.Since(start)
	if r.held, err = px.sample(ctx); err != nil {
		return r, err
	}
	if n := up.total(); n != 0 {
		return r, fmt.Errorf("upstream saw %d requests while the link was down", n)
	}

	trims := px.log.trimCount() // the proxy trims once after this burst drains
	if err := px.setLink(ctx, "up"); err != nil {
		return r, err
	}
	release := time.Now()
	all := make(chan struct{})
	go func() { cl.wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		return r, fmt.Errorf("waiting for responses (%d of %d done): %w", cl.done.Load(), held, ctx.Err())
	}
	r.drainTime = time.Since(release)
	if n := cl.ok.Load(); n != held {
		return r, fmt.Errorf("%d of %d responses were 200 with Misaki-Delivery: held; first failure: %v", n, held, cl.firstErr())
	}
	if err := up.checkOnce(held); err != nil {
		return r, err
	}

	// Pooled connections are caches, not leaks: drop the client's and make the
	// upstream close its idle ones so the proxy's pool empties too.
	cl.tr.CloseIdleConnections()
	up.closeIdle()
	settle := time.Now()
	var last sample
	err = pollFor(ctx, settleLimit, "goroutines back to baseline", func() (bool, error) {
		var err error
		last, err = px.sample(ctx)
		return err == nil && last.Goroutines <= r.base.Goroutines+maxGoLeak, err
	})
	r.settleTime = time.Since(settle)
	if err != nil {
		return r, fmt.Errorf("%w: %d goroutines after the drain, baseline %d (allowed +%d)", err, last.Goroutines, r.base.Goroutines, maxGoLeak)
	}
	// The proxy returns a burst's memory a few seconds after the drain;
	// wait for that (at most gcWait) before the after-drain sample.
	settled := last.GCCount
	gcCtx, cancelGC := context.WithTimeout(ctx, gcWait)
	defer cancelGC()
	_ = poll(gcCtx, "the proxy's trim after the burst", func() (bool, error) {
		return px.log.trimCount() > trims, nil
	})
	r.gcAfterDrain = -settled
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if r.drained, err = px.sample(ctx); err != nil {
		return r, err
	}
	r.gcAfterDrain += r.drained.GCCount
	return r, nil
}

// clients sends the held requests, each on its own connection.
type clients struct {
	tr       *http.Transport
	url      string
	body     []byte
	wg       sync.WaitGroup
	done, ok atomic.Int64
	errMu    sync.Mutex // guards err
	err      error
}

func newClients(mesh string) *clients {
	slots := make(chan struct{}, dialSlots)
	d := &net.Dialer{Timeout: 30 * time.Second}
	return &clients{
		url:  "http://" + mesh + "/hold",
		body: bytes.Repeat([]byte("m"), bodySize),
		tr: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true, // one connection per request
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				defer func() { <-slots }()
				return d.DialContext(ctx, network, addr)
			},
		},
	}
}

func (c *clients) do(ctx context.Context, i int) {
	defer c.done.Add(1)
	id := reqID(i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/"+id, bytes.NewReader(c.body))
	if err != nil {
		c.fail(err)
		return
	}
	req.Host = "bench.mesh"
	req.Header.Set("X-Req-Id", id)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.tr.RoundTrip(req)
	if err != nil {
		c.fail(fmt.Errorf("%s: %w", id, err))
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		c.fail(fmt.Errorf("%s: read body: %w", id, err))
	case resp.StatusCode != http.StatusOK:
		c.fail(fmt.Errorf("%s: status %d: %q", id, resp.StatusCode, body))
	case resp.Header.Get("Misaki-Delivery") != "held":
		c.fail(fmt.Errorf("%s: Misaki-Delivery %q, want held", id, resp.Header.Get("Misaki-Delivery")))
	case resp.Header.Get("X-Req-Id") != id:
		c.fail(fmt.Errorf("%s: answered for %q", id, resp.Header.Get("X-Req-Id")))
	default:
		c.ok.Add(1)
	}
}

func (c *clients) fail(err error) {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

func (c *clients) firstErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

func reqID(i int) string { return fmt.Sprintf("req-%05d", i) }

// upstream counts requests by X-Req-Id and answers 200 with a small body.
type upstream struct {
	addr string
	srv  *http.Server

	mu    sync.Mutex // guards fields below
	seen  map[string]int
	conns map[net.Conn]http.ConnState
}

func startUpstream(b *testing.B) *upstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String(), seen: map[string]int{}, conns: map[net.Conn]http.ConnState{}}
	u.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Req-Id")
			n, _ := io.Copy(io.Discard, r.Body)
			u.mu.Lock()
			u.seen[id]++
			u.mu.Unlock()
			w.Header().Set("X-Req-Id", id)
			fmt.Fprintf(w, "ok %s %d\n", id, n)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			u.mu.Lock()
			defer u.mu.Unlock()
			if s == http.StateClosed || s == http.StateHijacked {
				delete(u.conns, c)
				return
			}
			u.conns[c] = s
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go u.srv.Serve(ln)
	b.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *upstream) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	clear(u.seen)
}

func (u *upstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.seen {
		n += c
	}
	return n
}

// checkOnce reports an error unless each of the n request ids came exactly once.
func (u *upstream) checkOnce(n int) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var missing, dup []string
	for i := range n {
		switch c := u.seen[reqID(i)]; {
		case c == 0:
			missing = append(missing, reqID(i))
		case c > 1:
			dup = append(dup, fmt.Sprintf("%s×%d", reqID(i), c))
		}
	}
	if extra := len(u.seen) - (n - len(missing)); len(missing) > 0 || len(dup) > 0 || extra > 0 {
		return fmt.Errorf("upstream: %d ids missing %v, %d duplicated %v, %d unknown", len(missing), head(missing), len(dup), head(dup), extra)
	}
	return nil
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// closeIdle closes the upstream's idle keep-alive connections.
func (u *upstream) closeIdle() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c, s := range u.conns {
		if s == http.StateIdle {
			c.Close()
		}
	}
}

// proxy is a running misaki-proxy.
type proxy struct {
	pid         int
	mesh, admin string
	log         *logWatch
	client      *http.Client // admin API, one kept-alive connection
}

func startProxy(ctx context.Context, b *testing.B, bin, upstreamAddr string) *proxy {
	dir := b.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: 127.0.0.1:0
holdLimit: {requests: %d, bytes: 256MiB}
limits: {maxConnections: %d}
links:
  - {name: wlan, class: wifi}
routes:
  - name: bench
    hosts: [bench.mesh]
    upstream: http://%s
    probe: {type: none}
    offline: {hold: 120s, links: [wifi]}
`, 2*held, 2*held, upstreamAddr)
	cfgPath := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	cmd := exec.CommandContext(runCtx, bin, "--config", cfgPath)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second // then SIGKILL
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	lw := newLogWatch()
	cmd.Stderr = lw
	if err := cmd.Start(); err != nil {
		stop()
		b.Fatalf("start misaki-proxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() { stop(); <-exited })

	px := &proxy{pid: cmd.Process.Pid, log: lw, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1},
	}}
	select {
	case addrs := <-lw.listening:
		px.mesh, px.admin = addrs[0], addrs[1]
	case <-exited:
		b.Fatalf("misaki-proxy exited at start: %v\n%s", cmd.ProcessState, lw.tail())
	case <-ctx.Done():
		b.Fatalf("misaki-proxy did not log \"listening\": %v\n%s", ctx.Err(), lw.tail())
	}
	startCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := poll(startCtx, "proxy /readyz", func() (bool, error) {
		resp, err := px.client.Get("http://" + px.admin + "/readyz")
		if err != nil {
			return false, nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		b.Fatalf("%v\n%s", err, lw.tail())
	}
	return px
}

func (p *proxy) setLink(ctx context.Context, state string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+p.admin+"/v1/links/wlan", strings.NewReader(`{"state":"`+state+`"}`))
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("set link %s: %w", state, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("set link %s: %s: %s", state, resp.Status, body)
	}
	return nil
}

func (p *proxy) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, err
}

// routes reads the bench route's held counters.
func (p *proxy) routes(ctx context.Context) (sample, error) {
	body, err := p.get(ctx, "/v1/routes")
	if err != nil {
		return sample{}, err
	}
	var v struct {
		Routes []struct {
			Name      string `json:"name"`
			HeldReqs  int64  `json:"heldRequests"`
			HeldBytes int64  `json:"heldBytes"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return sample{}, fmt.Errorf("GET /v1/routes: %w", err)
	}
	for _, r := range v.Routes {
		if r.Name == "bench" {
			return sample{HeldReqs: r.HeldReqs, HeldBytes: r.HeldBytes}, nil
		}
	}
	return sample{}, errors.New("GET /v1/routes: no route named bench")
}

// sample reads /v1/routes, /metrics and /proc/PID/status.
func (p *proxy) sample(ctx context.Context) (sample, error) {
	s, err := p.routes(ctx)
	if err != nil {
		return s, err
	}
	body, err := p.get(ctx, "/metrics")
	if err != nil {
		return s, err
	}
	m := parseMetrics(body)
	for name, dst := range map[string]*int64{
		"go_goroutines":                &s.Goroutines,
		"go_memstats_heap_inuse_bytes": &s.HeapInuse,
		"go_gc_duration_seconds_count": &s.GCCount,
	} {
		v, ok := m[name]
		if !ok {
			return s, fmt.Errorf("GET /metrics: no %s", name)
		}
		*dst = int64(v)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return s, err
	}
	if s.RSS, err = procKB(status, "VmRSS:"); err != nil {
		return s, err
	}
	s.HWM, err = procKB(status, "VmHWM:")
	return s, err
}

// parseMetrics reads unlabelled samples from Prometheus text exposition.
func parseMetrics(body []byte) map[string]float64 {
	m := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}

// procKB returns a "Key:   N kB" line of /proc/PID/status in bytes.
func procKB(status []byte, key string) (int64, error) {
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc status: no %s line", key)
}

// logWatch takes the proxy's JSON log from stderr, finds the "listening"
// line and keeps the last lines for error messages.
type logWatch struct {
	listening chan [2]string // mesh, admin; sent once

	mu      sync.Mutex // guards fields below
	partial []byte
	last    []string
	found   bool
	trims   int // "returned memory after a burst" lines seen
}

// trimCount reports how many times the proxy returned memory after a burst.
func (w *logWatch) trimCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.trims
}

func newLogWatch() *logWatch { return &logWatch{listening: make(chan [2]string, 1)} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if len(w.last) == 40 {
			w.last = w.last[1:]
		}
		w.last = append(w.last, line)
		if strings.Contains(line, `"msg":"returned memory after a burst of held requests"`) {
			w.trims++
		}
		if w.found {
			continue
		}
		var v struct{ Msg, Mesh, Admin string }
		if json.Unmarshal([]byte(line), &v) == nil && v.Msg == "listening" && v.Mesh != "" && v.Admin != "" {
			w.found = true
			w.listening <- [2]string{v.Mesh, v.Admin}
		}
	}
	return len(p), nil
}

func (w *logWatch) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.last, "\n")
}

// raiseNoFile raises RLIMIT_NOFILE (inherited by the proxy) to at least need.
func raiseNoFile(b *testing.B, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	want := max(lim.Max, 65536)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err != nil {
		// Not allowed to raise the hard limit: take what it allows.
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatal(err)
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur < need {
		b.Fatalf("RLIMIT_NOFILE is %d, need %d for %d held requests: raise the hard limit (ulimit -Hn) or run as root", lim.Cur, need, held)
	}
}

// poll calls cond every pollEvery until it is true, returns an error, or ctx ends.
func poll(ctx context.Context, what string, cond func() (bool, error)) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

func pollFor(ctx context.Context, limit time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return poll(ctx, what, cond)
}

// summary is a Markdown table for docs/benchmarks.md.
func summary(r result) string {
	var sb strings.Builder
	mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	per := func(a, b int64) string { return fmt.Sprintf("%.0f B", float64(a-b)/held) }
	fmt.Fprintf(&sb, "### misaki-proxy holding %d requests (%d-byte POST bodies, one connection each)\n\n", held, bodySize)
	fmt.Fprintf(&sb, "| | baseline | %d held | after drain | per held request |\n", held)
	fmt.Fprintf(&sb, "|---|---:|---:|---:|---:|\n")
	fmt.Fprintf(&sb, "| RSS (VmRSS) | %s | %s | %s | %s |\n", mib(r.base.RSS), mib(r.held.RSS), mib(r.drained.RSS), per(r.held.RSS, r.base.RSS))
	fmt.Fprintf(&sb, "| Go heap in use | %s | %s | %s | %s |\n", mib(r.base.HeapInuse), mib(r.held.HeapInuse), mib(r.drained.HeapInuse), per(r.held.HeapInuse, r.base.HeapInuse))
	fmt.Fprintf(&sb, "| goroutines | %d | %d | %d | %.2f |\n", r.base.Goroutines, r.held.Goroutines, r.drained.Goroutines, float64(r.held.Goroutines-r.base.Goroutines)/held)
	fmt.Fprintf(&sb, "| heldBytes (proxy's count) | %d | %d | %d | %.0f B |\n", r.base.HeldBytes, r.held.HeldBytes, r.drained.HeldBytes, float64(r.held.HeldBytes)/held)
	fmt.Fprintf(&sb, "\nPeak RSS (VmHWM) %s. All %d held in %s; all delivered (200, `Misaki-Delivery: held`, each id once upstream) %s after the link came up; "+
		"goroutines back to baseline %+d within %s of the drain; heap after drain %+.1f MiB over baseline (%d GC cycles after the drain, including the proxy's own collection when it returns a burst's memory).\n",
		mib(r.drained.HWM), held, r.holdTime.Round(time.Millisecond), r.drainTime.Round(time.Millisecond),
		r.drained.Goroutines-r.base.Goroutines, r.settleTime.Round(time.Millisecond),
		float64(r.drained.HeapInuse-r.base.HeapInuse)/(1<<20), r.gcAfterDrain)
	return sb.String()
}

// cyclesPerRun is how many hold-and-drain cycles one benchmark run does.
const cyclesPerRun = 3

// cycleTable shows the proxy after each drain, to show it does not grow.
func cycleTable(cycles []result) string {
	var sb strings.Builder
	mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	fmt.Fprintf(&sb, "\n| after drain of cycle | RSS | Go heap in use | goroutines | held requests |\n|---:|---:|---:|---:|---:|\n")
	for i, c := range cycles {
		fmt.Fprintf(&sb, "| %d | %s | %s | %d | %d |\n", i+1, mib(c.drained.RSS), mib(c.drained.HeapInuse), c.drained.Goroutines, c.drained.HeldReqs)
	}
	return sb.String()
}
