//go:build linux

// Package spoolbench measures the edge proxy with a large spool: the real
// misaki-proxy binary's memory with a million requests spooled, and the time
// from its start to the first replayed request reaching the upstream.
//
// BenchmarkMillion fills a spool directory with SPOOL_N requests (default
// 1,000,000; 1 KiB bodies) through the spool package, then starts the
// binary on it twice: offline (the route's only link has a glob matching no
// interface) to read its RSS once the spool is open, and online, timing the
// first replayed request at a counting upstream. The second start runs with
// the page cache dropped (as root), as after a reboot. SPOOL_MEMORY sets the
// proxy's limits.memory (like 48MiB).
//
//	go test -run '^$' -bench Million -benchtime 1x -v ./bench/spoolbench/
package spoolbench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spoolbench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// MISAKI_BUILD_TAGS=pprof builds a binary that serves pprof on
	// $MISAKI_PPROF, for profiling the replay.
	cmd := exec.Command("go", "build", "-trimpath", "-tags", os.Getenv("MISAKI_BUILD_TAGS"), "-o", dir+"/", "github.com/misaki-io/misaki/cmd/misaki-proxy")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func BenchmarkMillion(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("SPOOL_N")); err == nil && v > 0 {
		n = v
	}
	work := b.TempDir()
	dir := filepath.Join(work, "spool")

	// Fill.
	start := time.Now()
	fill(b, dir, n)
	filled := time.Since(start)
	size := dirSize(b, dir)
	b.Logf("filled %d requests (%d MiB on disk) in %v", n, size>>20, filled.Round(time.Millisecond))

	var got atomic.Int64
	first := make(chan time.Time, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if got.Add(1) == 1 {
			first <- time.Now()
		}
	}))
	defer up.Close()

	memory := os.Getenv("SPOOL_MEMORY") // limits.memory, like 48MiB; empty: none
	if memory == "" {
		memory = "0"
	}
	cfg := func(glob string) string {
		return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
limits: {memory: %s}
links:
  - {name: wlan, match: %q, class: wifi}
spool: {dir: %s, maxRequests: %d, maxBytes: 64GiB}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: %s
    probe: {type: none}
    offline: {spool: true}
`, memory, glob, dir, n*2, up.URL)
	}

	// Offline: the memory of a proxy holding the whole spool.
	p := start_(b, work, cfg("spoolbench-none*"))
	rss := rssOf(b, p.cmd.Process.Pid)
	p.stop()
	b.Logf("offline with %d spooled: RSS %.1f MiB; spool opened %v after the process started", n, float64(rss)/(1<<20), p.ready.Round(time.Millisecond))

	// Online, cold cache: start to first replayed request.
	cold := dropCaches()
	p = start_(b, work, cfg(""))
	var toFirst time.Duration
	select {
	case t := <-first:
		toFirst = t.Sub(p.started)
	case <-time.After(60 * time.Second):
		b.Fatal("no replayed request within 60s")
	}
	time.Sleep(2 * time.Second)
	drained := got.Load()
	rssOnline := rssOf(b, p.cmd.Process.Pid)
	p.stop()
	b.Logf("online (page cache dropped: %v): first replayed request %v after start; %d delivered in the next 2s; RSS %.1f MiB",
		cold, toFirst.Round(time.Millisecond), drained, float64(rssOnline)/(1<<20))

	b.ReportMetric(float64(rss)/(1<<20), "RSS-MiB-offline")
	b.ReportMetric(toFirst.Seconds(), "s-to-first-replay")
	b.ReportMetric(float64(drained)/2, "replayed/s")
	fmt.Printf("\n| spooled | on disk | fill (spool package, sync interval) | proxy RSS, offline | start to first replay (cache dropped: %v) | replayed in 2 s | RSS while replaying |\n|---:|---:|---:|---:|---:|---:|---:|\n| %d | %d MiB | %v | %.1f MiB | %v | %d | %.1f MiB |\n",
		cold, n, size>>20, filled.Round(time.Millisecond), float64(rss)/(1<<20), toFirst.Round(time.Millisecond), drained, float64(rssOnline)/(1<<20))
}

type proc struct {
	cmd     *exec.Cmd
	started time.Time
	ready   time.Duration
	addr    string // the proxy listener
	admin   string
}

func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	p.cmd.Wait()
}

// start_ runs the binary and waits for its spool to be open and its admin
// API to answer.
func start_(b *testing.B, work, cfg string) *proc {
	path := filepath.Join(work, fmt.Sprintf("proxy-%d.yaml", time.Now().UnixNano()))
	os.WriteFile(path, []byte(cfg), 0o600)
	cmd := exec.Command(filepath.Join(binDir, "misaki-proxy"), "--config", path)
	if v := os.Getenv("MISAKI_PPROF_GATEWAY"); v != "" && strings.Contains(cfg, "role: gateway") {
		cmd.Env = append(os.Environ(), "MISAKI_PPROF="+v) // profile both processes at once
	}
	stderr, _ := cmd.StderrPipe()
	p := &proc{cmd: cmd, started: time.Now()}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	opened := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, `"msg":"listening"`) {
				opened <- line
			}
		}
	}()
	select {
	case line := <-opened:
		p.ready = time.Since(p.started)
		if i := strings.Index(line, `"admin":"`); i >= 0 {
			p.admin = strings.SplitN(line[i+9:], `"`, 2)[0]
		}
		if i := strings.Index(line, `"addr":"`); i >= 0 {
			p.addr = strings.SplitN(line[i+8:], `"`, 2)[0]
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		b.Fatal("proxy did not start within 60s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + p.admin + "/readyz"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func rssOf(b *testing.B, pid int) int64 {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(f), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func dirSize(b *testing.B, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// dropCaches empties the page cache when running as root, so the start
// reads the spool from the disk, as after a reboot.
func dropCaches() bool {
	exec.Command("sync").Run()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200) == nil
}
