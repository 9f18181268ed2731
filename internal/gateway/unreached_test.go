package gateway

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/deadaddr"
)

// A service the gateway cannot reach, or that closes the connection before
// answering, is an error the vehicle sees as one: 502 or 503, never an
// empty 200 (which the edge would take as delivered, and its replay would
// finish), and nothing stored for the key, so the retry reaches the
// service.
func TestServiceNotReachedIsNotAnEmpty200(t *testing.T) {
	p := newPKI(t)
	refused := "http://" + deadaddr.TCP(t)

	// Accepts each connection, reads the request and closes without a word.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 4096)
				c.Read(buf)
				c.Close()
			}()
		}
	}()

	for _, tc := range []struct{ name, url string }{
		{"refused", refused},
		{"closed before answering", "http://" + mute.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, p, tc.url, t.TempDir())
			for _, key := range []string{"", "k1"} {
				r := g.post(t, p.client(true), key, "b")
				if r.status != http.StatusBadGateway && r.status != http.StatusServiceUnavailable {
					t.Fatalf("key %q: %d %q, want 502 or 503", key, r.status, r.body)
				}
				if !strings.Contains(r.body, "misaki") {
					t.Errorf("key %q: body %q does not say what happened", key, r.body)
				}
			}
			// Not stored: the same key gets the same error again, not a replay.
			if r := g.post(t, p.client(true), "k1", "b"); r.header.Get("Misaki-Replayed") != "" {
				t.Fatalf("an error was stored for the key: %d %v", r.status, r.header)
			}
		})
	}
}
