package deadaddr

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestRefusedAndNotReused(t *testing.T) {
	addr := TCP(t)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded, want refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	// No listener can take the port while the test runs (net.Listen sets
	// SO_REUSEADDR; the dead socket does not, so the bind fails).
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("a listener could bind %s", addr)
	}
}

// Once the test is over the port is free again.
func TestReleasedAfterTheTest(t *testing.T) {
	var addr string
	t.Run("inner", func(t *testing.T) { addr = TCP(t) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("after the test, listen %s: %v", addr, err)
	}
	ln.Close()
}

// Listen brings the same port to life: a dial then connects.
func TestListenOnTheSamePort(t *testing.T) {
	s := New(t)
	ln, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() != s.Addr() {
		t.Fatalf("listening on %s, want %s", ln.Addr(), s.Addr())
	}
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial after Listen: %v", err)
	}
	c.Close()
	if _, err := s.Listen(); err == nil {
		t.Fatal("a second Listen succeeded")
	}
}
