package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/smuggletest"
)

// TestSmuggling runs the request-smuggling corpus against the gateway's
// HTTP/1.1 path (net/http over TLS), for requests forwarded as they are
// and for those de-duplicated by Idempotency-Key, whose body the gateway
// also hashes.
func TestSmuggling(t *testing.T) {
	p := newPKI(t)
	up := smuggletest.NewUpstream(t)
	g := startGateway(t, p, up.URL, t.TempDir())
	dial := func() (net.Conn, error) {
		return tls.Dial("tcp", g.Addr(), &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.clientCert},
			NextProtos: []string{"http/1.1"}})
	}
	t.Run("no key", func(t *testing.T) {
		smuggletest.Run(t, smuggletest.Target{Dial: dial, Host: "telemetry.cloud.misaki", Upstream: up})
	})
	t.Run("key", func(t *testing.T) {
		smuggletest.Run(t, smuggletest.Target{Dial: dial, Host: "telemetry.cloud.misaki", Upstream: up,
			Extra: func(id string) string { return "Idempotency-Key: " + id + "\r\n" }})
	})
}

// A vehicle's broken body is answered 400 by the gateway, not by the
// service, so that answer is not stored for its Idempotency-Key: the
// retry with a whole body reaches the service.
func TestBrokenBodyNotStored(t *testing.T) {
	p := newPKI(t)
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "done")
	})
	g := startGateway(t, p, svc.URL, t.TempDir())
	c, err := tls.Dial("tcp", g.Addr(), &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.clientCert},
		NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /v1/events HTTP/1.1\r\nHost: telemetry.cloud.misaki\r\nIdempotency-Key: k1\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("broken body: %s (close %v), want 400 and the connection closed", resp.Status, resp.Close)
	}
	if a := g.post(t, p.client(true), "k1", "abc"); a.status != 200 || a.body != "done" || a.header.Get("Misaki-Replayed") != "" {
		t.Fatalf("retry: %d %q %v, want the service's answer", a.status, a.body, a.header)
	}
}
