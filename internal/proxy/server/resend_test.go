package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
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
