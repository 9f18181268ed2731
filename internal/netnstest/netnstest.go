//go:build linux

// Package netnstest makes network namespaces for tests that run as root,
// as CI does: New creates one with ip netns add (loopback up), skips the
// test where that cannot be done (not root, no iproute2, no namespaces),
// and deletes it when the test ends; Do runs a function on an OS thread
// inside it, so that the sockets, netlink sockets and /proc/sys/net files
// the function opens belong to it; Listen and Dial open sockets there. IP
// runs the ip command for the test.
//
// It uses iproute2 rather than creating namespaces with unshare itself so
// that a namespace has a name: tests run binaries in it with ip netns exec
// and configure it with ip -n.
package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is a network namespace made for one test.
type NS struct {
	// Name is the namespace's name, for ip -n and ip netns exec.
	Name string
	t    testing.TB
}

// New creates the network namespace name with its loopback interface up,
// deleted when the test ends. It skips the test unless it runs as root
// with iproute2 where network namespaces can be made. Names must be unique
// on the machine: tests of several packages may run at once.
func New(t testing.TB, name string) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n := &NS{Name: name, t: t}
	n.IP("link", "set", "lo", "up")
	return n
}

// Path is the namespace's file, for setns.
func (n *NS) Path() string { return "/var/run/netns/" + n.Name }

// IP runs ip -n <namespace> args, failing the test if it fails.
func (n *NS) IP(args ...string) {
	n.t.Helper()
	IP(n.t, append([]string{"-n", n.Name}, args...)...)
}

// IP runs the ip command with args, failing the test if it fails.
func IP(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Do runs f on an OS thread inside the namespace and returns its error.
func (n *NS) Do(f func() error) error { return Do(n.Path(), f) }

// Run runs f inside the namespace and fails the test with its error.
func (n *NS) Run(f func() error) {
	n.t.Helper()
	if err := n.Do(f); err != nil {
		n.t.Fatal(err)
	}
}

// Listen opens a listener inside the namespace (net.Listen's network and
// address), closed when the test ends. It fails the test if it cannot.
func (n *NS) Listen(network, addr string) net.Listener {
	n.t.Helper()
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = (&net.ListenConfig{}).Listen(context.Background(), network, addr)
		return err
	})
	if err != nil {
		n.t.Fatalf("listen in %s: %v", n.Name, err)
	}
	n.t.Cleanup(func() { ln.Close() })
	return ln
}

// Dial connects from inside the namespace, as a process there would.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return Dial(ctx, n.Path(), network, addr)
}

// Do runs f on an OS thread inside the network namespace at path (a file
// under /var/run/netns, or /proc/<pid>/ns/net) and returns its error, or
// an error for a panic in f. Sockets f opens keep that namespace and can
// be used from any goroutine. The thread is never handed back to the
// scheduler: it exits with its goroutine.
func Do(path string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- err
			return
		}
		defer func() {
			if p := recover(); p != nil {
				ch <- fmt.Errorf("panic: %v", p)
			}
		}()
		ch <- f()
	}()
	return <-ch
}

// Dial connects from inside the network namespace at path.
func Dial(ctx context.Context, path, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(path, func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
