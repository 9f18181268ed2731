package server

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/misaki-io/misaki/internal/waitfor"
)

func simpleRoute(upstreamURL, extra string) string {
	return fmt.Sprintf(`
routes:
  - name: svc
    hosts: [svc.mesh, "*.wild.mesh"]
    upstream: %s
    probe: {type: none}
%s`, upstreamURL, extra)
}

// TestStreamingBodiesAndTrailers proves that neither direction is buffered:
// the upstream answers each request chunk as it arrives, and the client reads
// that answer before it sends the next chunk. Trailers pass both ways.
func TestStreamingBodiesAndTrailers(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		reqTrailer := make(chan string, 1)
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			rc.EnableFullDuplex()
			w.Header().Set("Trailer", "X-Sum")
			w.WriteHeader(200)
			br := bufio.NewReader(r.Body)
			total := 0
			for {
				line, err := br.ReadString('\n')
				if line != "" {
					total += len(line)
					fmt.Fprintf(w, "got %s", line)
					rc.Flush()
				}
				if err != nil {
					break
				}
			}
			w.Header().Set("X-Sum", fmt.Sprint(total))
			reqTrailer <- r.Trailer.Get("X-Checksum")
		})
		p := srv.start(t, simpleRoute(up.URL, ""), false)

		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.mesh+"/stream", pr)
		req.Host = "svc.mesh"
		req.Trailer = http.Header{"X-Checksum": nil}
		respc := make(chan *http.Response, 1)
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errc <- err
				return
			}
			respc <- resp
		}()
		fmt.Fprint(pw, "one\n")
		var resp *http.Response
		select {
		case resp = <-respc:
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("no response headers while the request body is still open: the proxy buffers")
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for _, chunk := range []string{"one", "two", "three"} {
			if chunk != "one" {
				fmt.Fprintf(pw, "%s\n", chunk)
			}
			line, err := br.ReadString('\n')
			if err != nil || line != "got "+chunk+"\n" {
				t.Fatalf("read %q, %v; want the echo of %q before the body ends", line, err, chunk)
			}
		}
		req.Trailer.Set("X-Checksum", "abc")
		pw.Close()
		if rest, _ := io.ReadAll(br); len(rest) != 0 {
			t.Fatalf("unexpected tail %q", rest)
		}
		if got := resp.Trailer.Get("X-Sum"); got != "14" {
			t.Errorf("response trailer X-Sum = %q, want 14", got)
		}
		if got := <-reqTrailer; got != "abc" {
			t.Errorf("request trailer reached upstream as %q, want abc", got)
		}
	})
}

func TestHeadersViaForwardedAndHopByHop(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		p := srv.start(t, simpleRoute(up.URL, ""), false)
		r := p.send(context.Background(), "svc.mesh", "h", map[string]string{
			"Connection": "X-Secret, keep-alive",
			"X-Secret":   "must not pass",
			"Keep-Alive": "timeout=5",
			"X-App":      "passes",
		}, nil)
		if r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		got := up.lastRequest()
		checks := map[string][2]string{
			"X-Secret":          {got.Header.Get("X-Secret"), ""},
			"Keep-Alive":        {got.Header.Get("Keep-Alive"), ""},
			"X-App":             {got.Header.Get("X-App"), "passes"},
			"Via":               {got.Header.Get("Via"), "1.1 misaki"},
			"X-Forwarded-For":   {got.Header.Get("X-Forwarded-For"), "127.0.0.1"},
			"X-Forwarded-Host":  {got.Header.Get("X-Forwarded-Host"), "svc.mesh"},
			"X-Forwarded-Proto": {got.Header.Get("X-Forwarded-Proto"), "http"},
			"Host":              {got.Host, "svc.mesh"},
			"response Via":      {r.header.Get("Via"), "1.1 misaki"},
		}
		for name, c := range checks {
			if c[0] != c[1] {
				t.Errorf("%s = %q, want %q", name, c[0], c[1])
			}
		}
		if r := p.send(context.Background(), "a.wild.mesh", "w", nil, nil); r.status != 200 {
			t.Errorf("wildcard host: %d", r.status)
		}
		if r := p.send(context.Background(), "other.mesh", "n", nil, nil); r.status != 404 || !strings.Contains(r.body, "no route") {
			t.Errorf("unknown host: %d %q", r.status, r.body)
		}
	})
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func TestH2CFromAppsAndToUpstream(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "Grpc-Status")
			fmt.Fprintf(w, "proto=%s", r.Proto)
			w.Header().Set("Grpc-Status", "0")
		}))
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		up.Config.Protocols = &protos
		up.Start()
		defer up.Close()
		p := srv.start(t, simpleRoute("h2c://"+up.Listener.Addr().String(), ""), false)

		req, _ := http.NewRequest(http.MethodGet, "http://"+p.mesh+"/", nil)
		req.Host = "svc.mesh"
		resp, err := h2cClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("app side spoke %s, want HTTP/2 (h2c)", resp.Proto)
		}
		if string(body) != "proto=HTTP/2.0" {
			t.Errorf("upstream saw %q, want HTTP/2.0", body)
		}
		if resp.Trailer.Get("Grpc-Status") != "0" {
			t.Errorf("trailer Grpc-Status = %q", resp.Trailer.Get("Grpc-Status"))
		}
		if v := resp.Header.Get("Via"); v != "2 misaki" {
			t.Errorf("Via %q, want 2 misaki", v)
		}
	})
}

func TestTLSUpstreamNegotiatesHTTP2(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "proto=%s tls=%v", r.Proto, r.TLS != nil)
		}))
		up.EnableHTTP2 = true
		up.StartTLS()
		defer up.Close()
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		p := srv.start(t, simpleRoute(up.URL, fmt.Sprintf("    tls: {caFile: %s, serverName: example.com}\n", ca)), false)
		r := p.send(context.Background(), "svc.mesh", "tls", nil, nil)
		if r.status != 200 || r.body != "proto=HTTP/2.0 tls=true" {
			t.Fatalf("got %d %q, want HTTP/2 over TLS", r.status, r.body)
		}
	})
}

func TestTLSUpstreamWithUntrustedCertificateIs502(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer up.Close()
		p := srv.start(t, simpleRoute(up.URL, ""), false)
		r := p.send(context.Background(), "svc.mesh", "tls", nil, nil)
		if r.status != http.StatusBadGateway || !strings.Contains(r.body, "certificate") {
			t.Fatalf("got %d %q, want 502 naming the certificate", r.status, r.body)
		}
	})
}

func TestWebSocketEcho(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, msg, err := c.Read(context.Background())
				if err != nil {
					return
				}
				c.Write(context.Background(), typ, append([]byte("echo: "), msg...))
			}
		})
		p := srv.start(t, simpleRoute(up.URL, "    timeouts: {request: 1s}\n"), false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, "ws://"+p.mesh+"/ws", &websocket.DialOptions{Host: "svc.mesh"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if resp.Header.Get("Misaki-Delivery") != "direct" {
			t.Errorf("upgrade response Misaki-Delivery %q", resp.Header.Get("Misaki-Delivery"))
		}
		for i := range 3 {
			msg := fmt.Sprintf("m%d", i)
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.Read(ctx)
			if err != nil || string(got) != "echo: "+msg {
				t.Fatalf("read %q, %v", got, err)
			}
			if i == 1 {
				// Outlive the route's request timeout: it must not cut upgraded connections.
				time.Sleep(1200 * time.Millisecond)
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
}

func TestLimits(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		p := srv.start(t, testLinks+`
limits: {maxHeaderBytes: 4KiB, maxBodyBytes: 1KiB, readHeaderTimeout: 300ms}
`+simpleRoute(up.URL, "    offline: {hold: 30s}\n"), false)

		t.Run("header too large is 431", func(t *testing.T) {
			r := p.send(context.Background(), "svc.mesh", "big", map[string]string{"X-Big": strings.Repeat("a", 8<<10)}, nil)
			if r.status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d", r.status)
			}
		})
		t.Run("body over the limit is 413", func(t *testing.T) {
			r := p.send(context.Background(), "svc.mesh", "big", nil, make([]byte, 2<<10))
			if r.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d %q", r.status, r.body)
			}
		})
		for _, held := range []bool{false, true} {
			t.Run(fmt.Sprintf("chunked body over the limit is 413 (held=%v)", held), func(t *testing.T) {
				if held { // no link at all: the request goes to the hold path
					p.setLink(t, "wlan", "down")
					p.setLink(t, "modem", "down")
					defer p.setLink(t, "modem", "up")
					defer p.setLink(t, "wlan", "up")
				}
				req, _ := http.NewRequest(http.MethodPost, "http://"+p.mesh+"/", io.MultiReader(strings.NewReader(strings.Repeat("b", 2<<10))))
				req.Host = "svc.mesh"
				req.ContentLength = -1
				type answer struct {
					resp *http.Response
					err  error
				}
				done := make(chan answer, 1)
				go func() {
					resp, err := http.DefaultClient.Do(req)
					done <- answer{resp, err}
				}()
				if held {
					// A streaming body is held unread; the limit applies when
					// it streams upstream once the route is usable.
					waitfor.True(t, "the request held", func() bool { return p.held(t, "svc") == 1 })
					p.setLink(t, "wlan", "up")
				}
				a := <-done
				resp, err := a.resp, a.err
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Fatalf("status %d", resp.StatusCode)
				}
			})
		}
		t.Run("slow client is cut by the read-header timeout", func(t *testing.T) {
			c, err := net.Dial("tcp", p.mesh)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: svc.mesh\r\n") // never finishes
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			_, err = io.ReadAll(c)
			if err != nil || time.Since(start) > 4*time.Second {
				t.Fatalf("connection not closed by the server: %v after %v", err, time.Since(start))
			}
		})
	})
}

func TestConnectionsPastTheMaximumGet503(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		p := srv.start(t, "limits: {maxConnections: 3}\n"+simpleRoute(up.URL, ""), false)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 3 {
			c, err := net.Dial("tcp", p.mesh)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		// The server has accepted the three once it answers on each.
		for _, c := range conns {
			fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: svc.mesh\r\nX-Req-Id: c\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("connection within the limit: %v %v", resp, err)
			}
		}
		c, err := net.Dial("tcp", p.mesh)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("fourth connection: %d", resp.StatusCode)
		}
	})
}
