package server

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkServe measures one request through the whole proxy (mesh
// listener, route match, fast path, pooled upstream connection) on
// loopback. The app and the upstream are raw sockets that allocate nothing
// per request, so the allocations reported are the proxy's own. It measures
// the default HTTP/1.1 server (the lean one), which the path is built for.
func BenchmarkServe(b *testing.B) {
	body := strings.Repeat("x", 1024)
	resp := "HTTP/1.1 200 OK\r\nServer: bench\r\nDate: Tue, 24 Nov 2026 10:00:00 GMT\r\n" +
		"Content-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nConnection: keep-alive\r\n\r\n" + body
	up := rawUpstream(b, []byte(resp))
	p := startProxy(b, "routes:\n  - name: bench\n    hosts: [bench.mesh]\n    upstream: http://"+up+"\n", false)

	for _, bc := range []struct{ name, req string }{
		{"GET", "GET /v1/x HTTP/1.1\r\nHost: bench.mesh\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"},
		// A POST the proxy may send twice: it gets an Idempotency-Key.
		{"POST", "POST /v1/x HTTP/1.1\r\nHost: bench.mesh\r\nUser-Agent: bench\r\nContent-Type: application/json\r\nContent-Length: 256\r\n\r\n" + strings.Repeat("y", 256)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", p.mesh)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte(bc.req)
			br := bufio.NewReader(c)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if n := readRawResponse(b, br); n != len(body) {
					b.Fatalf("body %d bytes, want %d", n, len(body))
				}
			}
		})
	}
}

// rawUpstream answers every request on a connection with resp.
func rawUpstream(b *testing.B, resp []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
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
					n := 0
					for { // request head, then a Content-Length body if any
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
						if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
							n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
						}
					}
					if _, err := br.Discard(n); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// readRawResponse reads one Content-Length framed response and returns the
// body length.
func readRawResponse(b *testing.B, br *bufio.Reader) int {
	n := -1
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if first && !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
			b.Fatalf("status line %q", line)
		}
		first = false
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if _, err := br.Discard(n); err != nil {
		b.Fatal(err)
	}
	return n
}
