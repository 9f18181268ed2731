package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/waitfor"
)

// pair returns a wrapped and a plain end of one loopback TCP connection.
func pair(t *testing.T) (wrapped net.Conn, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-accepted
	if p == nil {
		t.Fatal("accept failed")
	}
	w := Wrap(c)
	if _, ok := w.(*Conn); !ok && supported {
		t.Fatalf("Wrap(%T) = %T, want *Conn", c, w)
	}
	t.Cleanup(func() { w.Close(); p.Close() })
	return w, p.(*net.TCPConn)
}

// Megabytes both ways at once: reads wait for data and writes wait for
// room in the socket buffer, both on the poller.
func TestFullDuplexBulk(t *testing.T) {
	w, p := pair(t)
	out, in := make([]byte, 8<<20), make([]byte, 8<<20)
	rand.Read(out)
	rand.Read(in)
	var wg sync.WaitGroup
	wg.Add(3)
	var gotByPeer, gotByWrapped []byte
	go func() { defer wg.Done(); mustWrite(t, w, out) }()
	go func() { defer wg.Done(); mustWrite(t, p, in) }()
	go func() { defer wg.Done(); gotByPeer = mustRead(t, p, len(out)) }()
	gotByWrapped = mustRead(t, w, len(in))
	wg.Wait()
	if !bytes.Equal(gotByPeer, out) || !bytes.Equal(gotByWrapped, in) {
		t.Fatal("bytes differ after the round trip")
	}
}

func mustWrite(t *testing.T, c net.Conn, b []byte) {
	if n, err := c.Write(b); err != nil || n != len(b) {
		t.Errorf("write: %d of %d: %v", n, len(b), err)
	}
}

func mustRead(t *testing.T, c net.Conn, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Errorf("read: %v", err)
	}
	return b
}

func TestReadDeadline(t *testing.T) {
	w, p := pair(t)
	w.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := w.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past deadline: %v, want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %#v, want *net.OpError with Op read", err)
	}
	// Without the deadline, reads work again.
	w.SetReadDeadline(time.Time{})
	p.Write([]byte("x"))
	if got := mustRead(t, w, 1); string(got) != "x" {
		t.Fatalf("read %q after clearing the deadline", got)
	}
}

func TestWriteDeadline(t *testing.T) {
	w, _ := pair(t) // the peer never reads: the buffers fill
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := w.Write(make([]byte, 64<<20))
		done <- result{n, err}
	}()
	// Once the buffers are full and the Write waits, the deadline passes.
	// (Set before the Write, a short one could pass before its first
	// byte on a loaded machine.)
	waitParked(t, "TestWriteDeadline.func1")
	w.SetWriteDeadline(time.Now())
	r := <-done
	n, err := r.n, r.err
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write into a full socket: %d bytes, %v; want a timeout", n, err)
	}
	if n == 0 || n >= 64<<20 {
		t.Fatalf("Write reported %d bytes written, want a partial count", n)
	}
}

func TestEOFAndReset(t *testing.T) {
	w, p := pair(t)
	p.Write([]byte("bye"))
	p.CloseWrite()
	got, err := io.ReadAll(w)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want bye and a clean EOF", got, err)
	}

	w, p = pair(t)
	p.SetLinger(0)
	p.Close() // RST; the Read waits for it
	if _, err := w.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after a reset: %v, want ECONNRESET", err)
	}
}

func TestCloseWakesBlockedRead(t *testing.T) {
	w, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := w.Read(make([]byte, 1))
		done <- err
	}()
	waitParked(t, "TestCloseWakesBlockedRead.func1")
	w.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the blocked Read")
	}
}

// waitParked waits until the goroutine running fn (a name in its stack)
// waits on the network poller: blocked in a read.
func waitParked(t *testing.T, fn string) {
	t.Helper()
	waitfor.True(t, fn+" waiting on the network poller", func() bool {
		return waitfor.GoroutineIn(fn, "internal/poll.runtime_pollWait")
	})
}

type outer struct {
	net.Conn
	closed bool
}

func (o *outer) NetConn() net.Conn { return o.Conn }
func (o *outer) Close() error      { o.closed = true; return o.Conn.Close() }

func TestWrap(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}

	_, p := pair(t)
	o := &outer{Conn: p}
	w := Wrap(o)
	if !supported {
		return
	}
	c, ok := w.(*Conn)
	if !ok {
		t.Fatalf("Wrap(wrapper of TCP) = %T, want *Conn", w)
	}
	if _, err := c.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if !o.closed {
		t.Fatal("Close did not reach the outer connection")
	}
}
