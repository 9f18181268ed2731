// Package supervise keeps the edge proxy's listening sockets open across a
// crash of the proxy (misaki-proxy --supervise).
//
// A killed proxy takes with it the connections it had accepted, and, if
// it owns its listening sockets, every connection an app attempts until a
// new proxy has bound them again: those are refused (for a sidecar that
// the kubelet restarts, about a second of an app's requests). Here a small
// parent binds the sockets (mesh, admin, health, DNS over UDP and TCP),
// starts the proxy as its child with the sockets handed over
// (internal/proxy/listenfd: systemd's LISTEN_FDS protocol), and starts it
// again when it dies. Meanwhile the sockets stay open: connections wait in
// the listen backlog and DNS queries in the socket's receive buffer, and the
// next proxy serves them. A crash costs only what the dead proxy had in
// hand. This is what systemd socket activation and Envoy's hot restart do
// for listeners; in a pod the parent is the container's first process.
//
// The choices:
//   - The parent is the same binary in another mode, so there is one image
//     and one version; it does nothing but bind, start, wait and forward
//     signals, so it has little that could crash. It reads the proxy's
//     config only for the listen addresses. A changed address takes effect
//     when the parent restarts (the child warns when its config names
//     another address than the socket it was handed).
//   - A proxy that dies is started again at once: a crash is rare, and
//     every moment without a proxy delays apps. One that dies within
//     StableRun of its start, after one that did too, is in a crash loop
//     (it cannot start: a config or spool it refuses, a full disk): the
//     restarts back off from BackoffInitial, doubling, to BackoffMax, so a
//     loop neither burns the CPU nor stops retrying. StableRun is short (a
//     proxy starts in tens of milliseconds), so a proxy that crashes while
//     serving is restarted at once however often that happens. Meanwhile
//     connections wait, up to the app's own timeout. In a pod, the
//     kubelet's probes of the health port fail while no proxy answers, so
//     a proxy that never comes back still gets the container restarted.
//   - SIGTERM or SIGINT to the parent is passed to the proxy as SIGTERM; the
//     parent closes its copies of the sockets first, so that once the proxy
//     stops accepting (it drains for up to its grace), new connections are
//     refused as they are without the parent, not left waiting in a backlog
//     no one will take. The parent then exits with the proxy's status.
//   - On Linux the proxy gets SIGTERM if the parent dies (PR_SET_PDEATHSIG),
//     so a killed parent leaves no proxy behind holding the ports.
//   - Sockets the parent was itself handed (systemd socket activation) are
//     handed on; the ones it was not, it binds.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/listenfd"
	"github.com/misaki-io/misaki/internal/proxy/localdns"
)

// Restart backoff (see the package doc).
const (
	// StableRun is how long a proxy must have run for its death to count
	// as a crash, not part of a crash loop: the next start is immediate.
	StableRun = time.Second
	// BackoffInitial is the wait after the second death in a row within
	// StableRun of the start.
	BackoffInitial = 100 * time.Millisecond
	// BackoffMax caps the delay between restarts of a crash loop.
	BackoffMax = 5 * time.Second
)

// Options are what Run needs; the zero value of a field is its default.
type Options struct {
	// Path is the proxy binary. Default: this process's executable.
	Path string
	// Args are the proxy's arguments (without the program name).
	Args []string
	// Env is the proxy's environment, without the sockets. Default
	// os.Environ().
	Env []string
	// Sockets are handed to each proxy; Bind makes them.
	Sockets []listenfd.File
	// Stdout and Stderr of the proxy. Default: discarded.
	Stdout, Stderr io.Writer
	Log            *slog.Logger
	Clock          clock.Clock // default clock.Real
}

// ExitError is the proxy's status when it stopped on request with a
// non-zero one; the parent exits with Code.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("the proxy exited with status %d", e.Code) }

// ExitCode is Code (the method os/exec's ExitError has too).
func (e *ExitError) ExitCode() int { return e.Code }

// Bind makes the sockets the proxy of cfg listens on: the ones in handed
// (systemd's), under their names, and the others bound here. Addresses
// with port 0 get a free port, the same for every proxy started.
func Bind(cfg *config.Config, handed *listenfd.Set) (files []listenfd.File, err error) {
	defer func() {
		if err != nil {
			for _, f := range files {
				f.File.Close()
			}
			files = nil
		}
	}()
	add := func(name string) bool {
		fs := handed.Files(name)
		for _, f := range fs {
			files = append(files, listenfd.File{Name: name, File: f})
		}
		return len(fs) > 0
	}
	for _, l := range []struct{ name, addr string }{
		{listenfd.Mesh, cfg.Listen}, {listenfd.Admin, cfg.Admin}, {listenfd.Health, cfg.Health},
	} {
		if l.addr == "" || add(l.name) {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return files, fmt.Errorf("supervise: %s: %w", l.name, err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close() // f is a descriptor of its own on the same socket
		if err != nil {
			return files, fmt.Errorf("supervise: %s: %w", l.name, err)
		}
		files = append(files, listenfd.File{Name: l.name, File: f})
	}
	if cfg.DNS.Listen != "" && !add(listenfd.DNS) {
		pc, ln, err := localdns.Listen(cfg.DNS.Listen)
		if err != nil {
			return files, fmt.Errorf("supervise: %w", err)
		}
		uf, err1 := pc.File()
		tf, err2 := ln.(*net.TCPListener).File()
		pc.Close()
		ln.Close()
		for _, f := range []*os.File{uf, tf} {
			if f != nil {
				files = append(files, listenfd.File{Name: listenfd.DNS, File: f})
			}
		}
		if err := errors.Join(err1, err2); err != nil {
			return files, fmt.Errorf("supervise: dns: %w", err)
		}
	}
	handed.Close() // any others are not the proxy's
	return files, nil
}

// Addrs describes files for a log line: name, "tcp 127.0.0.1:80", …
// (sockets of one name joined by commas).
func Addrs(files []listenfd.File) []any {
	var names []string
	addrs := map[string][]string{}
	for _, f := range files {
		addr := "?"
		if c, err := net.FileListener(f.File); err == nil {
			addr = "tcp " + c.Addr().String()
			c.Close()
		} else if c, err := net.FilePacketConn(f.File); err == nil {
			addr = "udp " + c.LocalAddr().String()
			c.Close()
		}
		if addrs[f.Name] == nil {
			names = append(names, f.Name)
		}
		addrs[f.Name] = append(addrs[f.Name], addr)
	}
	var kv []any
	for _, n := range names {
		kv = append(kv, n, strings.Join(addrs[n], ", "))
	}
	return kv
}

// Run starts the proxy and starts it again whenever it dies, until ctx
// ends; then it stops the proxy with SIGTERM and waits for it. It returns
// nil when the proxy then exits with status 0, an *ExitError with its
// status otherwise. Run closes opt.Sockets before it returns.
func Run(ctx context.Context, opt Options) error {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Clock == nil {
		opt.Clock = clock.Real{}
	}
	if opt.Path == "" {
		p, err := os.Executable()
		if err != nil {
			return fmt.Errorf("supervise: the proxy binary: %w", err)
		}
		opt.Path = p
	}
	if opt.Env == nil {
		opt.Env = os.Environ()
	}
	closeSockets := func() {
		for _, f := range opt.Sockets {
			f.File.Close()
		}
		opt.Sockets = nil
	}
	defer closeSockets()
	log, clk := opt.Log, opt.Clock
	quick := 0 // deaths in a row within StableRun of their start
	for {
		started := clk.Now()
		p, err := start(opt)
		if err != nil {
			log.Error("the proxy did not start", "err", err)
		} else {
			log.Info("proxy started", "pid", p.pid)
			select {
			case <-p.done:
			case <-ctx.Done():
				closeSockets() // see the package doc
				log.Info("stopping the proxy", "pid", p.pid)
				p.signal(syscall.SIGTERM)
				<-p.done
				code := exitCode(p.state)
				log.Info("proxy stopped", "pid", p.pid, "status", p.state.String())
				if code != 0 {
					return &ExitError{Code: code}
				}
				return nil
			}
			log.Error("proxy exited; restarting it", "pid", p.pid, "status", p.state.String(), "ran", clk.Now().Sub(started).String())
		}
		if clk.Now().Sub(started) < StableRun {
			quick++
		} else {
			quick = 0
		}
		d := Delay(quick)
		if d > 0 {
			log.Warn("the proxy is crash-looping; waiting before the next start", "quickDeaths", quick, "delay", d.String())
		}
		t := clk.NewTimer(d)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// restartPolicy is the crash loop's backoff: BackoffInitial doubling to
// BackoffMax, without jitter (one process restarts one child; there is no
// herd to spread).
var restartPolicy = backoff.Policy{Initial: BackoffInitial, Max: BackoffMax, Multiplier: 2, Jitter: backoff.NoJitter}

// Delay is the wait before the start that follows the n-th death in a row
// within StableRun of its start: none for n ≤ 1, then BackoffInitial
// doubling up to BackoffMax (100 ms, 200 ms, … 3.2 s, 5 s).
func Delay(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return restartPolicy.Delay(n-2, 0)
}

// child is one running proxy.
type child struct {
	pid    int
	signal func(os.Signal)
	done   chan struct{} // closed once it has exited and been reaped
	state  *os.ProcessState
}

// start starts the proxy. Its own goroutine, locked to its OS thread for
// the proxy's life, starts and reaps it: the parent-death signal is tied to
// the thread that forked.
func start(opt Options) (*child, error) {
	env, extra := listenfd.Hand(opt.Env, opt.Sockets)
	cmd := exec.Command(opt.Path, opt.Args...)
	cmd.Env, cmd.ExtraFiles = env, extra
	cmd.Stdout, cmd.Stderr = opt.Stdout, opt.Stderr
	cmd.SysProcAttr = sysProcAttr()
	c := &child{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		c.pid = cmd.Process.Pid
		c.signal = func(s os.Signal) { cmd.Process.Signal(s) }
		started <- nil
		cmd.Wait()
		c.state = cmd.ProcessState
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("supervise: start %s: %w", opt.Path, err)
	}
	return c, nil
}

// exitCode is the status to exit with: the proxy's, or 128+n when signal
// n killed it, as shells report it.
func exitCode(s *os.ProcessState) int {
	if ws, ok := s.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return s.ExitCode()
}
