package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/misaki-io/misaki/internal/forward"
)

// A request re-sent after its first attempt got no response may reach the
// gateway while that first attempt is still being answered there: the
// gateway's 409 (in-flight, Retry-After) is the proxy's to handle. The app
// gets the stored answer, never the 409.
func TestResentRequestWaitsForTheFirstAnswer(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		var (
			mu    sync.Mutex
			calls = map[string]int{}
		)
		// Stands in for the gateway's contract for one key: the first attempt
		// is taken and its connection cut before an answer (the answer lost on
		// the way back), the second meets the attempt still in flight, the
		// third gets the stored answer.
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			key := r.Header.Get("Idempotency-Key")
			mu.Lock()
			calls[key]++
			n := calls[key]
			mu.Unlock()
			switch n {
			case 1:
				c, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					c.Close()
				}
			case 2:
				w.Header().Set("Retry-After", "1")
				w.Header().Set(forward.HeaderIdempotency, forward.IdempotencyInFlight)
				http.Error(w, "still being answered", http.StatusConflict)
			default:
				fmt.Fprint(w, "the stored answer")
			}
		})
		p := srv.start(t, routeYAML(up.URL, ""), false)
		r := p.send(context.Background(), "telemetry.cloud.misaki", "once", nil, []byte("reading"))
		if r.err != nil || r.status != 200 || r.body != "the stored answer" {
			t.Fatalf("app got %d %q (%v), want the stored answer", r.status, r.body, r.err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(calls) != 1 {
			t.Fatalf("keys %v: the retries did not keep the first attempt's key", calls)
		}
		for _, n := range calls {
			if n != 3 {
				t.Fatalf("%d attempts, want 3", n)
			}
		}
	})
}

// TestResentRequestGivesUpWhileTheGatewayKeepsAnswering: when every resend
// meets the first attempt still in flight at the gateway, the proxy stops
// after maxNotSentRetries attempts with a 503 that says so (not "the hold
// window passed": it has not), counted as gave_up.
func TestResentRequestGivesUpWhileTheGatewayKeepsAnswering(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		var calls atomic.Int32
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if calls.Add(1) == 1 {
				if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
					c.Close()
				}
				return
			}
			w.Header().Set("Retry-After", "1")
			w.Header().Set(forward.HeaderIdempotency, forward.IdempotencyInFlight)
			http.Error(w, "still being answered", http.StatusConflict)
		})
		// A window the running clock cannot pass before the attempts end.
		p := srv.start(t, testLinks+fmt.Sprintf(`
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: %s
    probe: {type: none}
    offline: {hold: 1000h}
`, up.URL), true)
		p.runClock(t)
		r := p.send(context.Background(), "telemetry.cloud.misaki", "busy", nil, []byte("reading"))
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "8 attempts got no response: the gateway was still answering an earlier one") {
			t.Fatalf("app got %d %q (%v), want 503 naming the attempts", r.status, r.body, r.err)
		}
		if n := calls.Load(); n != maxNotSentRetries {
			t.Errorf("the gateway saw %d attempts, want %d", n, maxNotSentRetries)
		}
		if m := p.metrics(t); !strings.Contains(m, `misaki_proxy_requests_total{outcome="gave_up",route="telemetry"} 1`) {
			t.Errorf("/metrics does not count the request as gave_up:\n%s", m)
		}
	})
}
