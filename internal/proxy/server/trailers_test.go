package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// rawTrailerUpstream answers every request with a chunked response whose
// trailer section holds allowed and forbidden fields. It writes bytes by
// hand: Go's own server drops forbidden trailers, a real upstream may not.
func rawTrailerUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					fmt.Fprint(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"+
						"5\r\nhello\r\n0\r\n"+
						"X-Checksum: abc\r\nGrpc-Status: 0\r\nContent-Length: 99\r\nHost: evil.example\r\nTransfer-Encoding: gzip\r\n"+
						"Connection: close\r\nKeep-Alive: timeout=1\r\nTe: trailers\r\nUpgrade: h2c\r\nAuthorization: Basic eA==\r\n"+
						"Content-Type: text/evil\r\nIf-Match: *\r\nProxy-Connection: close\r\n\r\n")
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// Trailers: hop-by-hop fields and fields forbidden in trailers
// (Content-Length, Host, Transfer-Encoding, …) are dropped, not forwarded,
// on every server and forwarding path; the others pass.
func TestForbiddenTrailersDropped(t *testing.T) {
	upURL := rawTrailerUpstream(t)
	onEachServer(t, func(t *testing.T, srv http1Server) {
		p := srv.start(t, simpleRoute(upURL, ""), false)
		for _, tc := range []struct{ name, req string }{
			{"GET (the fast path)", "GET /x HTTP/1.1\r\nHost: svc.mesh\r\n\r\n"},
			{"chunked POST (ReverseProxy)", "POST /x HTTP/1.1\r\nHost: svc.mesh\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c, err := net.Dial("tcp", p.mesh)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				fmt.Fprint(c, tc.req)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil || string(body) != "hello" {
					t.Fatalf("body %q, %v", body, err)
				}
				if resp.Trailer.Get("X-Checksum") != "abc" || resp.Trailer.Get("Grpc-Status") != "0" {
					t.Fatalf("allowed trailers lost: %v", resp.Trailer)
				}
				for k := range resp.Trailer {
					switch k {
					case "X-Checksum", "Grpc-Status":
					default:
						t.Errorf("trailer %s: %q forwarded", k, resp.Trailer[k])
					}
				}
				if strings.Contains(resp.Header.Get("Trailer"), "Content-Length") {
					t.Errorf("Trailer header %q", resp.Header.Get("Trailer"))
				}
			})
		}
	})
}
