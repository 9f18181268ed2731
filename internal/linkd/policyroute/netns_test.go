//go:build linux

package policyroute

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// netns is a network namespace made for one test, deleted after it.
type netns struct {
	t    *testing.T
	name string
}

var nsSeq atomic.Int32

// newNetns creates a fresh network namespace. It skips the test unless it
// runs as root with iproute2.
func newNetns(t *testing.T, role string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("policy routing tests create network namespaces: run as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("policy routing tests need ip (iproute2)")
	}
	name := fmt.Sprintf("misaki-pr%s-%d-%d", role, os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n := &netns{t: t, name: name}
	n.ip("link", "set", "lo", "up")
	return n
}

func (n *netns) path() string { return "/var/run/netns/" + n.name }

// ip runs ip -n <namespace> args, failing the test on error.
func (n *netns) ip(args ...string) {
	n.t.Helper()
	args = append([]string{"-n", n.name}, args...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// do runs f on an OS thread inside the namespace; netlink sockets, sockets
// and /proc/sys/net opened by f belong to it. The thread is never handed
// back to the scheduler: it exits with its goroutine.
func (n *netns) do(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(n.path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
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

// run runs f inside the namespace and fails the test with its error.
func (n *netns) run(f func() error) {
	n.t.Helper()
	if err := n.do(f); err != nil {
		n.t.Fatal(err)
	}
}
