package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"

	"github.com/misaki-io/misaki/internal/netnstest"
)

// cloudNS is a network namespace a test creates to play the cloud, joined to
// this namespace (the vehicle) by veth pairs. It is removed with the test.
type cloudNS struct {
	t    *testing.T
	ns   *netnstest.NS
	name string
}

// newCloudNS creates the namespace, its loopback up, or skips the test where
// that cannot be done (not root, no iproute2, no namespaces).
func newCloudNS(t *testing.T, name string) *cloudNS {
	t.Helper()
	ns := netnstest.New(t, name)
	return &cloudNS{t: t, ns: ns, name: ns.Name}
}

// path is the namespace's file, for setns.
func (n *cloudNS) path() string { return n.ns.Path() }

// ip runs the ip command and fails the test if it fails.
func (n *cloudNS) ip(args ...string) {
	n.t.Helper()
	netnstest.IP(n.t, args...)
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
func inNetns(nsPath string, f func() error) error { return netnstest.Do(nsPath, f) }

// dialInNetns connects from inside the namespace, as a process there would.
func dialInNetns(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	return netnstest.Dial(ctx, nsPath, network, addr)
}

// serve runs an HTTP server with h inside the namespace on addr until the
// test ends, and returns its address.
func (n *cloudNS) serve(addr string, h http.Handler) net.Addr {
	n.t.Helper()
	ln := n.ns.Listen("tcp", addr)
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	n.t.Cleanup(func() { srv.Close() })
	return ln.Addr()
}
