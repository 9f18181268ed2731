//go:build linux

package linkbench

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

// runMonitors runs n link monitors in this process, monitor i on a thread
// in namespace ns(i) with links and, when agent(i) is not empty, following
// the agent there. Only Run's goroutine is in ns(i): the monitor's own
// netlink socket and scans see that namespace, as a proxy's would; the
// goroutine that follows the agent is not, so its connection leaves from
// this process's namespace (see node.hostLink). It returns a function that
// stops them and waits.
func runMonitors(b *testing.B, n int, ns func(int) string, links []config.Link, agent func(int) string, o *observer) (stop func()) {
	b.Helper()
	// The proxy logs as JSON to stderr; here the same records are made and
	// encoded, then dropped.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	entered := make(chan error, n)
	for i := range n {
		var m *link.Monitor
		m = link.NewMonitor(links, 5*time.Second, log, clock.Real{}, func() {
			now := time.Now()
			for _, s := range m.Snapshot() {
				if s.Name == "wifi" {
					o.note(i, s.Up, now)
				}
			}
		})
		if a := agent(i); a != "" {
			m.SetAgent(a)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: see enterNS
			err := enterNS(ns(i))
			entered <- err
			if err == nil {
				m.Run(ctx)
			}
		}()
	}
	for range n {
		if err := <-entered; err != nil {
			cancel()
			wg.Wait()
			b.Fatalf("enter a namespace: %v", err)
		}
	}
	return func() {
		cancel()
		wg.Wait()
	}
}
