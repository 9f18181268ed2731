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
	for _, srv := range []string{"lean", "stdlib"} {
		t.Run(srv, func(t *testing.T) {
			p := startProxy(t, "http1Server: "+srv+"\n"+simpleRoute(up.URL, ""), false)
			smuggletest.Run(t, smuggletest.Target{
				Dial:     func() (net.Conn, error) { return net.Dial("tcp", p.mesh) },
				Host:     "svc.mesh",
				Upstream: up,
			})
		})
	}
}

// A malformed chunked body on the paths that read it whole before
// forwarding (a held request) or stream it to disk (a spooled one) is
// answered 400 and the connection closed, as on the direct path: never a
// 200 with nothing, nor a 503, and nothing after it read as a request.
func TestMalformedBodyHeldOrSpooled(t *testing.T) {
	up := newUpstream(t, nil)
	for _, tc := range []struct{ name, yaml, extra string }{
		{"held", routeYAML(up.URL, ""), ""},
		{"spooled", spoolYAML(t.TempDir(), up.URL, ""), "Prefer: respond-async\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, tc.yaml, false)
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
			if errors.Is(err, os.ErrDeadlineExceeded) || !strings.HasPrefix(string(got), "HTTP/1.1 400 ") ||
				!strings.Contains(string(got), "\r\nConnection: close\r\n") || strings.Count(string(got), "HTTP/1.1 ") != 1 {
				t.Fatalf("got %q (%v), want one 400 with Connection: close, then the close", got, err)
			}
			if n := p.held(t, "telemetry"); n != 0 {
				t.Fatalf("%d requests held", n)
			}
			if tc.name == "spooled" {
				if _, sp := getJSON(t, "http://"+p.admin+"/v1/spool"); fmt.Sprint(sp["stats"].(map[string]any)["Enqueued"]) != "0" {
					t.Fatalf("spooled: %v", sp)
				}
			}
		})
	}
}
