package demo_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/demo"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/testbin"
)

// TestOfflineHoldConfigIsValid checks that the proxy accepts the
// configuration the scenario writes, at every speed the demo allows.
func TestOfflineHoldConfigIsValid(t *testing.T) {
	for _, speed := range []float64{0.1, 0.4, 1, 10} {
		t.Run(strconv.FormatFloat(speed, 'g', -1, 64), func(t *testing.T) {
			sc := demo.OfflineHold(speed)
			y := sc.ProxyConfig(demo.Addrs{Mesh: "127.0.0.1:1", Admin: "127.0.0.1:2", Upstream: "127.0.0.1:3"})
			cfg, err := config.Parse([]byte(y))
			if err != nil {
				t.Fatalf("proxy rejects the demo's config: %v\n%s", err, y)
			}
			if len(cfg.Routes) != 1 || cfg.Routes[0].Name != sc.Route || cfg.Routes[0].Hosts[0] != sc.Host {
				t.Errorf("routes = %+v, want one route %s for %s", cfg.Routes, sc.Route, sc.Host)
			}
			if got, want := cfg.Routes[0].Offline.Hold.D(), time.Duration(float64(8*time.Second)*speed); got != want {
				t.Errorf("hold = %v, want %v", got, want)
			}
		})
	}
}

// binDir holds the binaries once built; TestMain removes it.
var binDir string

// binaries builds misaki-proxy and misaki-demo once, for the tests that
// need them (from testbin's cache when nothing they link changed).
var binaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "misaki-demo-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	return dir, testbin.Build(dir, nil, "github.com/misaki-io/misaki/cmd/misaki-proxy", "github.com/misaki-io/misaki/cmd/misaki-demo")
})

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinaries returns the paths of the built misaki-proxy and misaki-demo.
func buildBinaries(t *testing.T) (proxyBin, demoBin string) {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "misaki-proxy"), filepath.Join(dir, "misaki-demo")
}

// demoCommand runs the demo binary with its temporary directory under tmp.
func demoCommand(ctx context.Context, demoBin, tmp string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, demoBin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	return cmd
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in the temporary directory: %s", e.Name())
	}
}

// TestDemo runs the whole demo (offline hold, then offline spool through a
// crash) with real processes, faster.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for about 20s")
	}
	proxyBin, demoBin := buildBinaries(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := demoCommand(ctx, demoBin, tmp, "run", "--proxy-bin", proxyBin, "--speed", "0.4")
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("demo took %v, output:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("demo failed: %v", err)
	}
	report := out.String()
	count := func(row string) int {
		m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(row) + `\s+(\d+)`).FindStringSubmatch(report)
		if m == nil {
			t.Fatalf("report has no %q row", row)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if n := count("lost"); n != 0 {
		t.Errorf("lost = %d, want 0", n)
	}
	if n := count("held"); n <= 0 {
		t.Errorf("held = %d, want > 0", n)
	}
	if n := count("failed (503)"); n <= 0 {
		t.Errorf("failed = %d, want > 0 (the long outage outlasts the hold)", n)
	}
	if n := count("upstream duplicates"); n != 0 {
		t.Errorf("upstream duplicates = %d, want 0", n)
	}
	if strings.Contains(report, "FAIL") || strings.Count(report, "all checks passed") != 2 {
		t.Errorf("the reports do not both say that all checks passed")
	}
	// The second report is the spool scenario's.
	if i := strings.LastIndex(report, "== report =="); i < 0 || !regexp.MustCompile(`(?m)^\s+spooled\s+[1-9]`).MatchString(report[i:]) {
		t.Errorf("the spool scenario's report shows nothing spooled")
	}
	assertEmpty(t, tmp)
}

// TestOfflineSpoolConfigIsValid checks that the proxy accepts the spool
// scenario's configuration.
func TestOfflineSpoolConfigIsValid(t *testing.T) {
	sc := demo.OfflineSpool(0.4)
	y := sc.ProxyConfig(demo.Addrs{Mesh: "127.0.0.1:1", Admin: "127.0.0.1:2", Upstream: "127.0.0.1:3", Gateway: "127.0.0.1:4",
		Dir: "/tmp/x", CA: "/tmp/ca.pem", VehicleCert: "/tmp/v.pem", VehicleKey: "/tmp/v-key.pem"})
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatalf("proxy rejects the demo's config: %v\n%s", err, y)
	}
	if r := cfg.Routes[0]; !r.Offline.Spool || r.Upstream != "https://127.0.0.1:4" || cfg.Spool.Dir != "/tmp/x/spool" {
		t.Errorf("route %+v, spool %+v", r, cfg.Spool)
	}
}

// TestInterrupt checks that an interrupted demo stops its children and
// removes its temporary directory.
func TestInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	proxyBin, demoBin := buildBinaries(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := demoCommand(ctx, demoBin, tmp, "--proxy-bin", proxyBin, "--speed", "0.4")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once a link is down, so requests are held at the time.
	var (
		lines   []string
		scanned sync.WaitGroup
	)
	held := make(chan struct{})
	scanned.Go(func() {
		var once sync.Once
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "link wlan DOWN") {
				once.Do(func() { close(held) })
			}
		}
	})
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the demo never took the link down")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = cmd.Wait()
	scanned.Wait()
	if took := time.Since(start); took > stopGrace {
		t.Errorf("the demo took %v to stop", took)
	}
	if err == nil {
		t.Errorf("an interrupted demo exited 0")
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr does not say the demo was interrupted:\n%s", stderr.String())
	}
	if t.Failed() {
		t.Logf("output:\n%s", strings.Join(lines, "\n"))
	}
	assertEmpty(t, tmp)
}

// stopGrace is how long an interrupted demo may take to stop.
const stopGrace = 5 * time.Second
