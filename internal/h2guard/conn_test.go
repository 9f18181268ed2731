package h2guard

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// guarded is one guarded connection on loopback, the server's end
// guarded, the client's end with a Framer; and the server's frame the
// client goes over a limit in the middle of: data, of which the server
// has written the first half.
type guarded struct {
	gc   *conn
	cc   net.Conn
	cfr  *http2.Framer
	data []byte
}

func newGuarded(t *testing.T) *guarded {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); sc.Close() })
	g := New(Limits{Settings: Rate{Burst: 1}}, Options{})
	c := &guarded{gc: g.newConn(sc, true), cc: cc, cfr: http2.NewFramer(cc, cc)}
	var b bytes.Buffer
	http2.NewFramer(&b, nil).WriteData(1, false, bytes.Repeat([]byte("x"), 100))
	c.data = b.Bytes()
	if _, err := c.gc.Write(c.data[:50]); err != nil {
		t.Fatal(err)
	}
	return c
}

// overLimit makes the client go over the SETTINGS limit, and returns
// what the server's reads end with, once they do.
func (c *guarded) overLimit(t *testing.T) <-chan error {
	t.Helper()
	c.cfr.WriteSettings()
	c.cfr.WriteSettings()
	read := make(chan error, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			if _, err := c.gc.Read(buf); err != nil {
				read <- err
				return
			}
		}
	}()
	// Until the read that goes over waits for the frame to end.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.gc.wmu.Lock()
		waiting := c.gc.ending != nil
		c.gc.wmu.Unlock()
		if waiting {
			return read
		}
		if time.Now().After(deadline) {
			t.Fatal("the read over the limit is not waiting for the server's frame")
		}
	}
}

// TestGoAwayAfterFrame: a client that goes over a limit while the
// server is in the middle of a frame (x/net's writer writes its buffer
// out whenever it fills) gets the rest of that frame, then the GOAWAY,
// and none of the server's frames after it.
func TestGoAwayAfterFrame(t *testing.T) {
	c := newGuarded(t)
	read := c.overLimit(t)

	var b bytes.Buffer
	http2.NewFramer(&b, nil).WriteData(1, true, []byte("after"))
	rest := append(bytes.Clone(c.data[50:]), b.Bytes()...)
	if n, err := c.gc.Write(rest); n != len(c.data)-50 || !errors.Is(err, ErrLimit) {
		t.Errorf("the write ending the frame: %d, %v; want %d, ErrLimit", n, err, len(c.data)-50)
	}
	if err := <-read; !errors.Is(err, ErrLimit) {
		t.Errorf("the server's read: %v, want ErrLimit", err)
	}
	if _, err := c.gc.Write(b.Bytes()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a write after the GOAWAY: %v, want net.ErrClosed", err)
	}
	go c.gc.drain()

	f, err := c.cfr.ReadFrame()
	if d, ok := f.(*http2.DataFrame); !ok || len(d.Data()) != 100 {
		t.Fatalf("first frame %v, %v; want DATA of 100 bytes", f, err)
	}
	f, err = c.cfr.ReadFrame()
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "misaki: over limits.http2.settings" {
		t.Fatalf("second frame %v, %v; want GOAWAY ENHANCE_YOUR_CALM over settings", f, err)
	}
	c.cc.(*net.TCPConn).CloseWrite()
	if f, err := c.cfr.ReadFrame(); err != io.EOF {
		t.Errorf("after the GOAWAY: %v, %v; want EOF", f, err)
	}
}

// TestGoAwayGivenUp: when the server does not end its frame in progress,
// the read that went over the limit waits drainTimeout at most, and no
// GOAWAY is sent inside the frame.
func TestGoAwayGivenUp(t *testing.T) {
	c := newGuarded(t)
	start := time.Now()
	read := c.overLimit(t)
	select {
	case err := <-read:
		if !errors.Is(err, ErrLimit) {
			t.Errorf("the server's read: %v, want ErrLimit", err)
		}
	case <-time.After(drainTimeout + 5*time.Second):
		t.Fatal("the server's read still waits")
	}
	if waited := time.Since(start); waited < drainTimeout {
		t.Errorf("gave up after %v, want %v", waited, drainTimeout)
	}
	if _, err := c.gc.Write(c.data[50:]); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a write after giving up: %v, want net.ErrClosed", err)
	}
	go c.gc.drain()
	c.cc.(*net.TCPConn).CloseWrite()
	if f, err := c.cfr.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Errorf("the client read %v, %v; want the frame cut (unexpected EOF)", f, err)
	}
}
