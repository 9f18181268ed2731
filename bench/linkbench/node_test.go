//go:build linux

package linkbench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// agentPort is where misaki-linkd listens in the node (every address).
const agentPort = 15021

// node is a vehicle's node as network namespaces: the node itself with
// wlan0 and wwan0 (veths to far, where their other ends are up with
// addresses), and one namespace per pod, joined to the node by a veth
// (pod<i> in the node, eth0 in the pod) with a /30 between them.
type node struct {
	b    *testing.B
	name string   // the node's namespace
	far  string   // the far ends of the links
	pods []string // the pods' namespaces
	nl   *netlink.Handle
	wlan netlink.Link
}

func newNode(b *testing.B, pods int) *node {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: network namespaces and veth pairs")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("needs the ip command (iproute2)")
	}
	if pods > 16000 {
		b.Fatalf("PROXIES=%d: at most 16000 pods fit in 10.78.0.0/16", pods)
	}
	id := fmt.Sprint(os.Getpid() % 100000)
	n := &node{b: b, name: "lbn" + id, far: "lbf" + id}
	for _, ns := range []string{n.name, n.far} {
		n.addNS(ns)
	}
	ip := n.ip
	// Each end gets an index of its own: with equal indexes (both 2 in
	// fresh namespaces) the kernel takes the carrier change as not urgent
	// and announces IFF_RUNNING up to a second after the link is set up
	// (linkwatch), which a Wi-Fi device's carrier change is not.
	for i, l := range []struct{ dev, far string }{{"wlan0", "wlanf"}, {"wwan0", "wwanf"}} {
		ip("-n", n.name, "link", "add", l.dev, "index", fmt.Sprint(1001+i), "type", "veth",
			"peer", "name", l.far, "index", fmt.Sprint(2001+i), "netns", n.far)
		ip("-n", n.name, "addr", "add", fmt.Sprintf("10.77.%d.2/24", i+1), "dev", l.dev)
		ip("-n", n.far, "addr", "add", fmt.Sprintf("10.77.%d.1/24", i+1), "dev", l.far)
		ip("-n", n.far, "link", "set", l.far, "up")
		ip("-n", n.name, "link", "set", l.dev, "up")
	}
	ip("-n", n.name, "route", "add", "default", "via", "10.77.2.1", "dev", "wwan0", "metric", "10")
	for i := range pods {
		ns := fmt.Sprintf("lbp%s-%d", id, i)
		n.addNS(ns)
		n.pods = append(n.pods, ns)
		dev := fmt.Sprintf("pod%d", i)
		ip("-n", n.name, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ip("-n", n.name, "addr", "add", n.podNet(i, 1)+"/30", "dev", dev)
		ip("-n", n.name, "link", "set", dev, "up")
		ip("-n", ns, "addr", "add", n.podNet(i, 2)+"/30", "dev", "eth0")
		ip("-n", ns, "link", "set", "eth0", "up")
	}
	h, err := netns.GetFromName(n.name)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(n.nl.Close)
	if n.wlan, err = n.nl.LinkByName("wlan0"); err != nil {
		b.Fatal(err)
	}
	return n
}

func (n *node) addNS(name string) {
	n.b.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		n.b.Fatalf("ip netns add %s: %v %s", name, err, out)
	}
	n.b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n.ip("-n", name, "link", "set", "lo", "up")
}

func (n *node) ip(args ...string) {
	n.b.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.b.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// podNet is host h (1: the node's end, 2: the pod's) of pod i's /30.
func (n *node) podNet(i, h int) string {
	a := i*4 + h
	return fmt.Sprintf("10.78.%d.%d", a>>8, a&255)
}

// agentAddr is the agent's address as pod i reaches it: the node's end of
// its veth, as the downward API's status.hostIP would give it.
func (n *node) agentAddr(i int) string {
	return net.JoinHostPort(n.podNet(i, 1), fmt.Sprint(agentPort))
}

// hostLink joins this process's network namespace to the node with a
// veth (lb<pid> here, host0 in the node, a /30 in 10.79.0.0/16) and returns
// the agent's address over it. The link monitor dials the agent with its
// own transport from whatever thread runs the dial, so monitors in this
// process reach the agent from this namespace, one connection each, over
// a veth as a pod's proxy does. Deleting the node's namespace deletes the
// pair.
func (n *node) hostLink() string {
	n.b.Helper()
	id := os.Getpid() % 100000
	dev := fmt.Sprintf("lb%d", id)
	a := (id % 16384) * 4
	here, there := fmt.Sprintf("10.79.%d.%d", a>>8, a&255+2), fmt.Sprintf("10.79.%d.%d", a>>8, a&255+1)
	n.ip("link", "add", dev, "type", "veth", "peer", "name", "host0", "netns", n.name)
	n.b.Cleanup(func() { exec.Command("ip", "link", "del", dev).Run() })
	n.ip("addr", "add", here+"/30", "dev", dev)
	n.ip("link", "set", dev, "up")
	n.ip("-n", n.name, "addr", "add", there+"/30", "dev", "host0")
	n.ip("-n", n.name, "link", "set", "host0", "up")
	return net.JoinHostPort(there, fmt.Sprint(agentPort))
}

// setWifi sets wlan0 up or down with one RTM_NEWLINK; it returns once the
// kernel has applied it.
func (n *node) setWifi(up bool) error {
	if up {
		return n.nl.LinkSetUp(n.wlan)
	}
	return n.nl.LinkSetDown(n.wlan)
}

// watchKernel notes, as proxy 0 of o, when the kernel announces wlan0
// usable (up and running) or not, as this process reads it from its own
// netlink socket in the node.
func (n *node) watchKernel(o *observer) {
	n.b.Helper()
	h, err := netns.GetFromName(n.name)
	if err != nil {
		n.b.Fatal(err)
	}
	defer h.Close()
	ch, done := make(chan netlink.LinkUpdate, 256), make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{Namespace: &h}); err != nil {
		n.b.Fatal(err)
	}
	n.b.Cleanup(func() { close(done) })
	go func() {
		for u := range ch {
			if u.Attrs().Name == "wlan0" {
				f := u.IfInfomsg.Flags
				o.note(0, f&unix.IFF_UP != 0 && f&unix.IFF_RUNNING != 0, time.Now())
			}
		}
	}()
}

// nsPath is a named namespace's file, for setns.
func nsPath(name string) string { return "/var/run/netns/" + name }

// enterNS moves the calling goroutine's thread into the namespace for
// good: the caller has locked the thread and never unlocks it, so the
// thread ends with the goroutine instead of carrying the namespace to
// other goroutines.
func enterNS(name string) error {
	fd, err := unix.Open(nsPath(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Setns(fd, unix.CLONE_NEWNET)
}
