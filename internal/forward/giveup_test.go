package forward

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/proxy/config"
)

// stalledAddr returns a loopback address whose connects hang: a listener
// with an accept queue of one, already filled and never accepted, so the
// kernel drops further SYNs (the dial waits as it would for an upstream
// behind a slow or lossy link).
func stalledAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "stalled")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	// Check the premise: the next connect does not complete.
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("connect to a full accept queue completed; the kernel did not drop the SYN")
	}
	return addr
}

// A client that gives up while the proxy is still dialling is not a dial
// failure: it must not come back as ErrNotSent (which marks the upstream
// down for every app), on the fast path or the general one.
func TestClientGivingUpMidDialIsNotADialFailure(t *testing.T) {
	addr := stalledAddr(t)
	f := newForwarder(t, "http://"+addr, func(r *config.Route) {
		r.Timeouts.Connect = config.Duration(5 * time.Second)
	})
	for _, tc := range []struct {
		name string
		body func() *http.Request
	}{
		{"fast path", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "http://svc.mesh/x", nil)
		}},
		{"general path", func() *http.Request {
			// A body of unknown length streams through ReverseProxy.
			r := httptest.NewRequest(http.MethodPost, "http://svc.mesh/x", strings.NewReader("x"))
			r.ContentLength = -1
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.body()
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			err := f.Forward(httptest.NewRecorder(), r.WithContext(ctx), "direct")
			if errors.Is(err, ErrNotSent) || errors.Is(err, ErrNoResponse) {
				t.Fatalf("a request whose client left mid-dial came back as an upstream failure: %v", err)
			}
			if ctx.Err() == nil {
				t.Fatalf("Forward returned before the client gave up: %v", err)
			}
		})
	}
}
