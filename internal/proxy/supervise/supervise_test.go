package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/listenfd"
	"github.com/misaki-io/misaki/internal/waitfor"
)

func TestDelay(t *testing.T) {
	for n, want := range map[int]time.Duration{
		0: 0, 1: 0, 2: 100 * time.Millisecond, 3: 200 * time.Millisecond, 4: 400 * time.Millisecond,
		7: 3200 * time.Millisecond, 8: BackoffMax, 50: BackoffMax,
	} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			if got := Delay(n); got != want {
				t.Errorf("Delay(%d) = %v, want %v", n, got, want)
			}
		})
	}
}

// helperEnv makes the test binary, started again, act as the proxy: it
// serves its pid over HTTP on the handed mesh socket and exits with status
// 7 on SIGTERM.
const helperEnv = "SUPERVISE_TEST_PROXY"

func TestHelperProxy(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the proxy that TestSupervisor supervises")
	}
	s, err := listenfd.FromEnv()
	if err != nil || s == nil {
		fmt.Fprintln(os.Stderr, "FromEnv:", s, err)
		os.Exit(2)
	}
	ln, err := s.Listener(listenfd.Mesh)
	if err != nil || ln == nil {
		fmt.Fprintln(os.Stderr, "mesh:", ln, err)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		os.Exit(7)
	}()
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getpid())
	}))
}

// recorder is a slog handler that passes the pids of "proxy started" on.
type recorder struct{ started chan int }

func (r recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r recorder) WithGroup(string) slog.Handler            { return r }
func (r recorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Message == "proxy started" {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "pid" {
				r.started <- int(a.Value.Int64())
			}
			return true
		})
	}
	return nil
}

// TestSupervisor runs the supervisor over a real child (this test binary)
// on a fake clock: it kills the child with SIGKILL, checks the restart
// delays of a crash loop and their reset after a stable run, sends a request
// while no child runs (it waits in the backlog and is answered by the next
// child), and stops it all, with the child's exit status.
func TestSupervisor(t *testing.T) {
	files, err := Bind(&config.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(files[0].File)
	if err != nil {
		t.Fatal(err)
	}
	mesh := ln.Addr().String()
	ln.Close()

	clk := clock.NewFake(time.Unix(1e9, 0))
	rec := recorder{started: make(chan int, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Path: os.Args[0], Args: []string{"-test.run=^TestHelperProxy$"},
			Env: append(os.Environ(), helperEnv+"=1"), Sockets: files,
			Stderr: os.Stderr, Log: slog.New(rec), Clock: clk,
		})
	}()
	next := func() int {
		t.Helper()
		select {
		case pid := <-rec.started:
			return pid
		case err := <-done:
			t.Fatalf("Run returned %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no proxy started")
		}
		return 0
	}
	get := func() int {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + mesh + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		pid, _ := strconv.Atoi(string(b))
		return pid
	}
	kill := func(pid int) {
		t.Helper()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	waitTimer := func() {
		t.Helper()
		waitfor.True(t, "the supervisor waiting before restarting", func() bool { return clk.Timers() == 1 })
	}

	a := next()
	if got := get(); got != a {
		t.Fatalf("served by %d, want the child %d", got, a)
	}
	// A first quick death: restarted at once.
	kill(a)
	b := next()
	if got := get(); got != b {
		t.Fatalf("served by %d, want the restarted child %d", got, b)
	}
	// A second within StableRun: the restart waits BackoffInitial. A
	// request sent meanwhile waits in the backlog for the next child.
	kill(b)
	waitTimer()
	answer := make(chan int, 1)
	go func() { answer <- get() }()
	clk.Advance(BackoffInitial - time.Millisecond)
	if clk.Timers() != 1 {
		t.Fatal("restarted before the delay")
	}
	clk.Advance(time.Millisecond)
	c := next()
	if got := <-answer; got != c {
		t.Fatalf("the request sent while no child ran was served by %d, want %d", got, c)
	}
	// A third: twice the delay.
	kill(c)
	waitTimer()
	clk.Advance(2*BackoffInitial - time.Millisecond)
	if clk.Timers() != 1 {
		t.Fatal("restarted before the delay")
	}
	clk.Advance(time.Millisecond)
	d := next()
	// A child that ran for StableRun: restarted at once, and so is the
	// next quick death.
	clk.Advance(StableRun)
	kill(d)
	e := next()
	if got := get(); got != e {
		t.Fatalf("served by %d, want %d", got, e)
	}
	kill(e)
	e = next()
	if got := get(); got != e {
		t.Fatalf("served by %d, want %d", got, e)
	}

	cancel()
	var exit *ExitError
	if err := <-done; !errors.As(err, &exit) || exit.Code != 7 {
		t.Fatalf("Run = %v, want the child's status 7", err)
	}
	// The sockets are closed with the supervisor.
	if c, err := net.DialTimeout("tcp", mesh, time.Second); err == nil {
		c.Close()
		t.Error("the mesh socket is open after Run returned")
	}
}
