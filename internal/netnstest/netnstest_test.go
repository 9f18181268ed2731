//go:build linux

package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNS(t *testing.T) {
	name := fmt.Sprintf("misaki-nt-%d", os.Getpid())
	t.Run("inside", func(t *testing.T) {
		n := New(t, name)
		if _, err := os.Stat(n.Path()); err != nil {
			t.Fatal(err)
		}
		ln := n.Listen("tcp", "127.0.0.1:0")
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		c, err := n.Dial(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 2)
		if _, err := c.Read(b); err != nil || string(b) != "hi" {
			t.Errorf("read %q %v", b, err)
		}
		c.Close()
		// The host's loopback is another: nothing listens there.
		if c, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String()); err == nil {
			c.Close()
			t.Error("the listener is reachable from the host's namespace")
		}
		// Do runs f inside: it sees the namespace's interfaces only.
		n.Run(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
				return fmt.Errorf("interfaces %v, want lo, up", ifs)
			}
			return nil
		})
		if err := n.Do(func() error { panic("boom") }); err == nil || !strings.Contains(err.Error(), "boom") {
			t.Errorf("a panic in f: %v", err)
		}
	})
	if _, err := os.Stat("/var/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("the namespace outlived its test: %v", err)
	}
}
