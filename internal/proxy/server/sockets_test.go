package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/listenfd"
	"github.com/misaki-io/misaki/internal/proxy/supervise"
)

// Listen takes the sockets handed over (as the supervisor hands them)
// instead of binding, and closes those the config does not use. No
// request is sent: one HTTP/1.1 server is enough.
func TestListenTakesHandedSockets(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
health: 127.0.0.1:0
dns: {listen: 127.0.0.1:0, upstreams: [127.0.0.1:1]}
`))
	if err != nil {
		t.Fatal(err)
	}
	files, err := supervise.Bind(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Where the supervisor bound them, read from its copies.
	want := map[string]string{}
	for _, f := range files {
		if ln, err := net.FileListener(f.File); err == nil {
			want[f.Name+"/tcp"] = ln.Addr().String()
			ln.Close()
		} else if pc, err := net.FilePacketConn(f.File); err == nil {
			want[f.Name+"/udp"] = pc.LocalAddr().String()
			pc.Close()
		}
	}
	if len(want) != 5 {
		t.Fatalf("the supervisor bound %v", want)
	}
	// The proxy's config no longer has a health listener: its socket is
	// closed.
	cfg.Health = ""
	s, err := New(cfg, slog.New(slog.DiscardHandler), Options{Sockets: listenfd.NewSet(files...)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	defer s.closeListeners()
	got := map[string]string{
		"mesh/tcp": s.MeshAddr(), "admin/tcp": s.AdminAddr(), "health/tcp": want["health/tcp"],
		"dns/udp": s.DNSAddr(), "dns/tcp": s.dnsLn.Addr().String(),
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: the proxy listens on %s, the handed socket is %s", k, got[k], w)
		}
	}
	if _, err := files[2].File.Stat(); err == nil || files[2].Name != listenfd.Health {
		t.Errorf("the unused %s socket is still open", files[2].Name)
	}
}

// A request that waited in the listen backlog before the proxy ran (as
// requests do across a restart under the supervisor) is forwarded, not
// answered 503 because no route had been judged usable yet.
func TestRequestWaitingInTheBacklogIsServed(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		cfg, err := config.Parse([]byte("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n" + srv.yaml() + testLinks + `
routes:
  - {name: api, hosts: [api.mesh], upstream: "` + up.URL + `", probe: {type: none}}
`))
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(cfg, slog.New(slog.DiscardHandler), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Listen(); err != nil {
			t.Fatal(err)
		}
		// Connected and sent before Run: in the backlog.
		c, err := net.Dial("tcp", s.MeshAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: api.mesh\r\nX-Req-Id: early\r\nConnection: close\r\n\r\n")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || up.count("early") != 1 {
			t.Fatalf("the request from the backlog: %d, upstream saw it %d times; want 200, once", resp.StatusCode, up.count("early"))
		}
	})
}
