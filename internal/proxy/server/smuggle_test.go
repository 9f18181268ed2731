package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/smuggletest"
)

// TestSmuggling runs the request-smuggling corpus against the mesh
// listener on both HTTP/1.1 server paths: the lean server (which hands
// anything unusual to net/http) and net/http alone.
func TestSmuggling(t *testing.T) {
	up := smuggletest.NewUpstream(t)
	onEachServer(t, func(t *testing.T, srv http1Server) {
		p := srv.start(t, simpleRoute(up.URL, ""), false)
		smuggletest.Run(t, smuggletest.Target{
			Dial:     func() (net.Conn, error) { return net.Dial("tcp", p.mesh) },
			Host:     "svc.mesh",
			Upstream: up,
		})
	})
}

// A malformed chunked body on a route that is not usable, whether the
// proxy holds the request (its body read while held, or left unread until
// the short window passes) or spools it at once (the body streamed to
// disk), is answered 400 (503 if the body was never read) with
// Connection: close, and the connection closed: never an empty 200 nor a
// connection left open, and nothing after the body read as a request.
func TestMalformedBodyHeldOrSpooled(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		held := testLinks + fmt.Sprintf(`
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: %s
    probe: {type: none}
    offline: {hold: 300ms}
`, up.URL)
		for _, tc := range []struct{ name, yaml, extra, statuses string }{
			{"held", held, "", "400 503"},
			{"spooled", spoolYAML(t.TempDir(), up.URL, ""), "Prefer: respond-async\r\n", "400"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := srv.start(t, tc.yaml, false)
				p.offline(t)
				c, err := net.Dial("tcp", p.mesh)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				io.WriteString(c, "POST /x HTTP/1.1\r\nHost: telemetry.cloud.misaki\r\nTransfer-Encoding: chunked\r\n"+tc.extra+
					"\r\n3\r\nabc\r\nzz\r\nGET /smuggled HTTP/1.1\r\nHost: telemetry.cloud.misaki\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				got, err := io.ReadAll(c)
				status, _, _ := strings.Cut(strings.TrimPrefix(string(got), "HTTP/1.1 "), " ")
				if errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(" "+tc.statuses+" ", " "+status+" ") ||
					!strings.Contains(string(got), "\r\nConnection: close\r\n") || strings.Count(string(got), "HTTP/1.1 ") != 1 {
					t.Fatalf("got %q (%v), want one %s with Connection: close, then the close", got, err, tc.statuses)
				}
				if n := p.held(t, "telemetry"); n != 0 {
					t.Fatalf("%d requests held", n)
				}
				if up.total() != 0 {
					t.Fatalf("the upstream got %d requests", up.total())
				}
				if tc.name == "spooled" {
					if _, sp := getJSON(t, "http://"+p.admin+"/v1/spool"); fmt.Sprint(sp["stats"].(map[string]any)["Enqueued"]) != "0" {
						t.Fatalf("spooled: %v", sp)
					}
				}
			})
		}
	})
}
