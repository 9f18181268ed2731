package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cloudNS is a network namespace a test creates to play the cloud, joined to
// this namespace (the vehicle) by veth pairs. It is removed with the test.
type cloudNS struct {
	t    *testing.T
	name string
}

// newCloudNS creates the namespace, or skips the test where that cannot be
// done (not root, no iproute2, no namespaces).
func newCloudNS(t *testing.T, name string) *cloudNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and veth pairs (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n := &cloudNS{t: t, name: name}
	n.ip("-n", name, "link", "set", "lo", "up")
	return n
}

// path is the namespace's file, for setns.
func (n *cloudNS) path() string { return "/var/run/netns/" + n.name }

// ip runs the ip command and fails the test if it fails.
func (n *cloudNS) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// link adds a veth pair: dev here with subnet.1/30, peer in the namespace with
// subnet.2/30, both up.
func (n *cloudNS) link(dev, peer, subnet string) {
	n.t.Helper()
	n.ip("link", "add", dev, "type", "veth", "peer", "name", peer)
	n.t.Cleanup(func() { exec.Command("ip", "link", "del", dev).Run() })
	n.ip("link", "set", peer, "netns", n.name)
	n.ip("addr", "add", subnet+".1/30", "dev", dev)
	n.ip("link", "set", dev, "up")
	n.ip("-n", n.name, "addr", "add", subnet+".2/30", "dev", peer)
	n.ip("-n", n.name, "link", "set", peer, "up")
}

// testID keeps interface names (at most 15 bytes) and subnets apart between
// concurrent test binaries.
func testID(offset int) (int, string) {
	id := (os.Getpid() + offset) % 100000
	return id, fmt.Sprint(id)
}

// inNetns runs f on a thread inside the network namespace at nsPath:
// sockets f opens keep that namespace, and can be used from any goroutine.
// The thread is discarded afterwards.
func inNetns(nsPath string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- err
			return
		}
		ch <- f()
	}()
	return <-ch
}

// listenInNetns opens a TCP listener inside the named network namespace.
func listenInNetns(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNetns(nsPath, func() (err error) {
		ln, err = (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", nsPath, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialInNetns connects from inside the namespace, as a process there would.
func dialInNetns(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(nsPath, func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// serve runs an HTTP server with h inside the namespace on addr until the
// test ends, and returns its address.
func (n *cloudNS) serve(addr string, h http.Handler) net.Addr {
	n.t.Helper()
	ln := listenInNetns(n.t, n.path(), addr)
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	n.t.Cleanup(func() { srv.Close() })
	return ln.Addr()
}

// waitFor polls cond every 10ms for up to 5s, and fails the test naming what
// did not happen.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("within 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
