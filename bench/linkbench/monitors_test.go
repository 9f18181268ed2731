//go:build linux

package linkbench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

// podKey names, in a monitor's context, the namespace its connections to
// the agent are dialled from.
type podKey struct{}

// dialFromPods makes http.DefaultTransport, which the link monitor's
// agent client uses, dial from the namespace its request's context names
// (the monitor's Run context, which the watch request derives from).
var dialFromPods = sync.OnceFunc(func() {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if ns, ok := ctx.Value(podKey{}).(string); ok {
			return dialIn(ctx, ns, network, addr)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	http.DefaultTransport = t
})

// runMonitors runs n link monitors in this process, monitor i on a thread
// in namespace ns(i) with links and, when agent(i) is not empty, following
// the agent there. It returns a function that stops them and waits.
func runMonitors(b *testing.B, n int, ns func(int) string, links []config.Link, agent func(int) string, o *observer) (stop func()) {
	b.Helper()
	dialFromPods()
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
		mctx := ctx
		if a := agent(i); a != "" {
			m.SetAgent(a)
			mctx = context.WithValue(ctx, podKey{}, ns(i))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: see enterNS
			err := enterNS(ns(i))
			entered <- err
			if err == nil {
				m.Run(mctx)
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
