//go:build linux

package policyroute

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/misaki-io/misaki/internal/netnstest"
)

// netns is a network namespace made for one test (internal/netnstest's),
// under the names this package's tests use.
type netns struct {
	ns   *netnstest.NS
	t    *testing.T
	name string
}

var nsSeq atomic.Int32

// newNetns creates a fresh network namespace, its loopback up. It skips
// the test unless it runs as root with iproute2.
func newNetns(t *testing.T, role string) *netns {
	t.Helper()
	ns := netnstest.New(t, fmt.Sprintf("misaki-pr%s-%d-%d", role, os.Getpid(), nsSeq.Add(1)))
	return &netns{ns: ns, t: t, name: ns.Name}
}

// ip runs ip -n <namespace> args, failing the test on error.
func (n *netns) ip(args ...string) {
	n.t.Helper()
	n.ns.IP(args...)
}

// run runs f on an OS thread inside the namespace (netlink sockets,
// sockets and /proc/sys/net opened by f belong to it) and fails the test
// with its error.
func (n *netns) run(f func() error) {
	n.t.Helper()
	n.ns.Run(f)
}
