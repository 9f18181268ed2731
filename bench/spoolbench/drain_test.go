//go:build linux

package spoolbench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/devpki"
	"github.com/misaki-io/misaki/internal/proxy/spool"
	"github.com/misaki-io/misaki/internal/uuidv7"
)

// BenchmarkDrain measures the replay drain rate of the real binary: a spool
// of SPOOL_DRAIN_N requests (default 200,000; 1 KiB bodies) delivered to a
// local service that counts them by Idempotency-Key: directly, through a
// misaki gateway (mutual TLS, idempotency store), and through the gateway
// with offline.batch (SPOOL_DRAIN_BATCH, default 32), in one run
// (SPOOL_DRAIN_VIA picks one; SPOOL_EDGE_GC sets the edge's
// limits.gcPercent). The rate is from the first request's arrival
// at the service to the last's; every key must arrive exactly once.
//
//	go test -run '^$' -bench Drain -benchtime 1x -v ./bench/spoolbench/
func BenchmarkDrain(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("SPOOL_DRAIN_N")); err == nil && v > 0 {
		n = v
	}
	work := b.TempDir()
	pki, err := devpki.Write(work, "bench-car")
	if err != nil {
		b.Fatal(err)
	}
	var rows []string
	paths := []string{"direct", "gateway", "gateway-batch"}
	if v := os.Getenv("SPOOL_DRAIN_VIA"); v != "" { // one of them, for profiling
		paths = []string{v}
	}
	for _, via := range paths {
		rows = append(rows, drainOnce(b, work, via, n, pki))
	}
	fmt.Printf("\n| path | requests | first to last at the service | drained/s | duplicates | RSS edge | RSS gateway | CPU µs/request: edge | gateway | service |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n%s\n", strings.Join(rows, "\n"))
}

func drainOnce(b *testing.B, work, via string, n int, pki devpki.Files) string {
	concurrency := 16 // spool.replay.concurrency's default
	if v, err := strconv.Atoi(os.Getenv("SPOOL_REPLAY_CONCURRENCY")); err == nil && v > 0 {
		concurrency = v
	}
	dir := filepath.Join(work, "spool-"+via)
	fill(b, dir, n)

	var mu sync.Mutex
	seen := make(map[string]int, n)
	var first, last time.Time
	var selfCPU0 time.Duration
	done := make(chan struct{})
	var conns atomic.Int64
	svc := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		k := r.Header.Get("Idempotency-Key")
		now := time.Now()
		mu.Lock()
		if first.IsZero() {
			first = now
			selfCPU0 = cpuOf(b, os.Getpid())
		}
		seen[k]++
		if len(seen) == n && seen[k] == 1 {
			last = now
			close(done)
		}
		mu.Unlock()
		io.WriteString(w, `{"stored":true}`)
	}))
	svc.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	svc.Start()
	defer svc.Close()

	upstream := svc.URL
	var gwRSS int64
	var gw *proc
	batchSize := 0
	if via == "gateway-batch" {
		batchSize = 32
		if v, err := strconv.Atoi(os.Getenv("SPOOL_DRAIN_BATCH")); err == nil && v > 0 {
			batchSize = v
		}
	}
	if via != "direct" {
		gw = start_(b, work, pki.GatewayYAML(filepath.Join(work, "idem"), svc.URL))
		defer gw.stop()
		upstream = "https://" + gw.addr
	}
	tlsLine := ""
	if via != "direct" {
		tlsLine = fmt.Sprintf("    tls: {caFile: %s, certFile: %s, keyFile: %s}\n", pki.CA, pki.ClientCert, pki.ClientKey)
	}
	edgeGC := 0 // limits.gcPercent of the edge; 0: the default
	if v, err := strconv.Atoi(os.Getenv("SPOOL_EDGE_GC")); err == nil {
		edgeGC = v
	}
	edge := start_(b, work, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
limits: {gcPercent: %d}
links:
  - {name: wlan, class: wifi}
spool: {dir: %s, maxRequests: %d, maxBytes: 64GiB, replay: {concurrency: %d}}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: %s
%s    probe: {type: none}
    offline: {spool: true, batch: %d}
`, edgeGC, dir, n*2, concurrency, upstream, tlsLine, batchSize))
	defer edge.stop()

	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		b.Fatalf("%s: %d of %d delivered within 10 minutes", via, got, n)
	}
	edgeRSS := rssOf(b, edge.cmd.Process.Pid)
	edgeCPU, selfCPU := cpuOf(b, edge.cmd.Process.Pid), cpuOf(b, os.Getpid())
	var gwCPU time.Duration
	if gw != nil {
		gwCPU = cpuOf(b, gw.cmd.Process.Pid)
	}
	if gw != nil {
		gwRSS = rssOf(b, gw.cmd.Process.Pid)
		m := metrics(b, gw.admin)
		c, a, sec := m["misaki_gateway_store_commits_total"], m["misaki_gateway_store_answers_total"], m["misaki_gateway_store_commit_seconds_total"]
		b.Logf("gateway store: %.0f answers in %.0f transactions (%.1f per transaction), %.2f ms per transaction", a, c, a/c, 1000*sec/c)
	}
	// The spool must empty: every delivery's done frame written.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if depth(b, edge.admin) == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: spool not empty 30s after the last delivery", via)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	span := last.Sub(first)
	mu.Unlock()
	if dups > 0 {
		b.Fatalf("%s: %d requests reached the service more than once", via, dups)
	}
	rate := float64(n-1) / span.Seconds()
	perReq := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Microseconds())/float64(n)) }
	mu.Lock()
	svcCPU := selfCPU - selfCPU0
	mu.Unlock()
	b.Logf("%s: the service accepted %d connections", via, conns.Load())
	b.Logf("%s: CPU per request: edge %s µs, gateway %s µs, service (the bench process) %s µs", via, perReq(edgeCPU), perReq(gwCPU), perReq(svcCPU))
	b.ReportMetric(rate, via+"-drained/s")
	b.Logf("%s: %d delivered in %v: %.0f/s, %d duplicates", via, n, span.Round(time.Millisecond), rate, dups)
	gwCol := "–"
	if gw != nil {
		gwCol = fmt.Sprintf("%.1f MiB", float64(gwRSS)/(1<<20))
	}
	gwCPUCol := "–"
	if gw != nil {
		gwCPUCol = perReq(gwCPU)
	}
	return fmt.Sprintf("| edge → %s | %d | %v | %.0f | %d | %.1f MiB | %s | %s | %s | %s |", map[string]string{"direct": "service", "gateway": "gateway (mTLS) → service", "gateway-batch": fmt.Sprintf("gateway (mTLS, `offline.batch: %d`) → service", batchSize)}[via],
		n, span.Round(time.Millisecond), rate, dups, float64(edgeRSS)/(1<<20), gwCol, perReq(edgeCPU), gwCPUCol, perReq(svcCPU))
}

// fill writes n requests with 1 KiB bodies to a spool in dir.
func fill(b *testing.B, dir string, n int) {
	sp, err := spool.Open(spool.Options{Dir: dir, Sync: spool.SyncInterval})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(strings.Repeat("t", 1024))
	for i := range n {
		r := &spool.Record{
			Route: "telemetry", Method: "POST", URL: "http://telemetry.cloud.misaki/v1/telemetry",
			IdempotencyKey: uuidv7.New(), // as the proxy assigns them
			Header:         http.Header{"Content-Type": {"application/json"}, "X-Req-Id": {strconv.Itoa(i)}},
			Body:           body,
		}
		if _, err := sp.Enqueue(r, nil, spool.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		b.Fatal(err)
	}
}

// cpuOf is the CPU time (user and system) process pid has used.
func cpuOf(b *testing.B, pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: state is
	// the first, utime the 12th, stime the 13th (clock ticks, 100 a second).
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// metrics reads the unlabelled samples of a Prometheus text page.
func metrics(b *testing.B, admin string) map[string]float64 {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if f := strings.Fields(l); len(f) == 2 && !strings.HasPrefix(l, "#") {
			v, _ := strconv.ParseFloat(f[1], 64)
			m[f[0]] = v
		}
	}
	return m
}

// depth is the edge's spooled request count from GET /v1/spool.
func depth(b *testing.B, admin string) int64 {
	resp, err := http.Get("http://" + admin + "/v1/spool")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Routes []struct {
			Depth int64 `json:"depth"`
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		b.Fatal(err)
	}
	var d int64
	for _, r := range s.Routes {
		d += r.Depth
	}
	return d
}
