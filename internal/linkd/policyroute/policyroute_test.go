//go:build linux

package policyroute

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/misaki-io/misaki/internal/linkd/hostnet"
)

const (
	testPriority = 15100
	testTable    = 15100
	maxLinks     = 64
	markA        = 0x4d5a0000
	markB        = 0x4d5a0001
	cloud        = "10.201.9.1"
)

// twoLinks is a node with two uplinks to one peer, veth pairs standing in
// for the Wi-Fi (a0) and the modem (b0): addresses of both families, a
// default route over each, the main table preferring a0; and, preferred
// above both, an equal-cost default over the two. The peer holds the
// cloud's address.
func twoLinks(t *testing.T) (node, peer *netns) {
	node, peer = newNetns(t, "n"), newNetns(t, "p")
	for i, dev := range []string{"a", "b"} {
		node.ip("link", "add", dev+"0", "type", "veth", "peer", "name", dev+"1", "netns", peer.name)
		node.ip("addr", "add", fmt.Sprintf("10.201.%d.2/24", i+1), "dev", dev+"0")
		node.ip("addr", "add", fmt.Sprintf("fd01:%d::2/64", i+1), "dev", dev+"0", "nodad")
		peer.ip("addr", "add", fmt.Sprintf("10.201.%d.1/24", i+1), "dev", dev+"1")
		peer.ip("addr", "add", fmt.Sprintf("fd01:%d::1/64", i+1), "dev", dev+"1", "nodad")
		node.ip("link", "set", dev+"0", "up")
		peer.ip("link", "set", dev+"1", "up")
	}
	peer.ip("addr", "add", cloud+"/32", "dev", "lo")
	node.ip("route", "add", "default", "via", "10.201.1.1", "dev", "a0", "metric", "10")
	node.ip("route", "add", "default", "via", "10.201.2.1", "dev", "b0", "metric", "20")
	node.ip("route", "add", "default", "metric", "5", "nexthop", "via", "10.201.1.1", "dev", "a0", "nexthop", "via", "10.201.2.1", "dev", "b0")
	node.ip("-6", "route", "add", "default", "via", "fd01:1::1", "dev", "a0", "metric", "10")
	node.ip("-6", "route", "add", "default", "via", "fd01:2::1", "dev", "b0", "metric", "20")
	return node, peer
}

// links are the two links as the agent passes them to Sync: each with
// its usable interfaces, as hostnet.Scan reads them now.
func links(t *testing.T) []Link {
	ifaces, err := hostnet.Scan()
	if err != nil {
		t.Error(err)
		return nil
	}
	ls := []Link{
		{Name: "wifi", Mark: markA, Table: testTable, Ports: [2]uint16{61000, 61999}},
		{Name: "modem", Mark: markB, Table: testTable + 1, Ports: [2]uint16{62000, 62999}},
	}
	for _, f := range ifaces {
		if !f.Usable() {
			continue
		}
		switch f.Name {
		case "a0":
			ls[0].Ifaces = append(ls[0].Ifaces, f)
		case "b0":
			ls[1].Ifaces = append(ls[1].Ifaces, f)
		}
	}
	return ls
}

// ourRules lists the rules at the test's priority, as strings.
func ourRules() ([]string, error) {
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RuleList(fam)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if r.Priority != testPriority {
				continue
			}
			s := fmt.Sprintf("%s table %d", famName(fam), r.Table)
			if r.Mark != 0 || r.Mask != nil {
				s += fmt.Sprintf(" fwmark %#x", r.Mark)
				if r.Mask != nil {
					s += fmt.Sprintf("/%#x", *r.Mask)
				}
			}
			if r.Sport != nil {
				s += fmt.Sprintf(" ipproto %d sport %d-%d", r.IPProto, r.Sport.Start, r.Sport.End)
			}
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, nil
}

func famName(fam int) string {
	if fam == netlink.FAMILY_V6 {
		return "v6"
	}
	return "v4"
}

// tableRoutes lists a table's routes of both families, as strings naming
// the device.
func tableRoutes(table int) ([]string, error) {
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			dst := "default"
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones > 0 {
					dst = r.Dst.String()
				}
			}
			s := famName(fam) + " "
			if r.Type == unix.RTN_UNREACHABLE {
				s += "unreachable "
			}
			s += dst
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			if r.LinkIndex > 0 && r.Type == unix.RTN_UNICAST {
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return nil, err
				}
				s += " dev " + l.Attrs().Name
			}
			for _, h := range r.MultiPath {
				s += fmt.Sprintf(" nexthop %v dev %d", h.Gw, h.LinkIndex)
			}
			s += fmt.Sprintf(" proto %d", r.Protocol)
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, nil
}

func diff(what string, want, got []string) error {
	if slices.Equal(want, got) {
		return nil
	}
	return fmt.Errorf("%s:\n got  %s\n want %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
}

// wantRulesFor are the rules Sync must install for the links, by name.
func wantRulesFor(names ...string) []string {
	var out []string
	for _, fam := range []string{"v4", "v6"} {
		for _, n := range names {
			switch n {
			case "wifi":
				out = append(out, fam+" table 15100 fwmark 0x4d5a0000/0xffffffff", fam+" table 15100 ipproto 6 sport 61000-61999")
			case "modem":
				out = append(out, fam+" table 15101 fwmark 0x4d5a0001/0xffffffff", fam+" table 15101 ipproto 6 sport 62000-62999")
			}
		}
	}
	sort.Strings(out)
	return out
}

func wantTable(dev string) []string {
	n := map[string]string{"a0": "1", "b0": "2"}[dev]
	out := []string{
		"v4 10.201." + n + ".0/24 dev " + dev + " proto 77",
		"v4 default via 10.201." + n + ".1 dev " + dev + " proto 77", // metric 5: its own hop of the equal-cost route
		"v4 default via 10.201." + n + ".1 dev " + dev + " proto 77", // metric 10 or 20
		"v4 unreachable default proto 77",
		"v6 default via fd01:" + n + "::1 dev " + dev + " proto 77",
		"v6 fd01:" + n + "::/64 dev " + dev + " proto 77",
		"v6 fe80::/64 dev " + dev + " proto 77",
		"v6 unreachable default proto 77",
	}
	sort.Strings(out)
	return out
}

var unreachableOnly = []string{"v4 unreachable default proto 77", "v6 unreachable default proto 77"}

func checkState(rules []string, tables map[int][]string) error {
	got, err := ourRules()
	if err != nil {
		return err
	}
	errs := []error{diff("rules", rules, got)}
	for tb, want := range tables {
		got, err := tableRoutes(tb)
		if err != nil {
			return err
		}
		errs = append(errs, diff(fmt.Sprintf("table %d", tb), want, got))
	}
	return errors.Join(errs...)
}

func TestSync(t *testing.T) {
	node, peer := twoLinks(t)
	ln := listenIn(t, peer, cloud+":0")

	// Both links: a rule of each kind per link and family, and tables
	// with only their link's routes.
	node.run(func() error {
		if err := Sync(testPriority, testTable, maxLinks, links(t)); err != nil {
			return fmt.Errorf("first Sync: %w", err)
		}
		return checkState(wantRulesFor("wifi", "modem"), map[int][]string{
			testTable: wantTable("a0"), testTable + 1: wantTable("b0"),
		})
	})

	// Again: nothing to do, and nothing done.
	node.run(func() error {
		events, err := watchRouting()
		if err != nil {
			return err
		}
		defer events.close()
		if err := Sync(testPriority, testTable, maxLinks, links(t)); err != nil {
			return fmt.Errorf("second Sync: %w", err)
		}
		if changes, err := events.untilSentinel(); err != nil || len(changes) > 0 {
			return fmt.Errorf("a second Sync changed the kernel: %v %v", changes, err)
		}
		return checkState(wantRulesFor("wifi", "modem"), map[int][]string{
			testTable: wantTable("a0"), testTable + 1: wantTable("b0"),
		})
	})

	// A socket with the modem's mark leaves by the modem though the main
	// table prefers the Wi-Fi, and so does one bound to a port of the
	// modem's range; others take the main table's way.
	node.run(func() error {
		var errs []error
		for _, tt := range []struct {
			mark uint32
			dev  string
		}{{0, ""}, {markA, "a0"}, {markB, "b0"}} {
			rs, err := netlink.RouteGetWithOptions(net.ParseIP(cloud), &netlink.RouteGetOptions{Mark: tt.mark})
			if err != nil {
				return fmt.Errorf("route get mark %#x: %w", tt.mark, err)
			}
			if tt.dev == "" {
				continue // equal-cost: either link
			}
			if l, err := netlink.LinkByIndex(rs[0].LinkIndex); err != nil || l.Attrs().Name != tt.dev {
				errs = append(errs, fmt.Errorf("route get %s mark %#x: %+v, want dev %s", cloud, tt.mark, rs[0], tt.dev))
			}
		}
		return errors.Join(errs...)
	})
	for _, tt := range []struct {
		name string
		mark uint32
		port int
		from string
	}{
		{"mark of the modem", markB, 0, "10.201.2.2"},
		{"mark of the wifi", markA, 0, "10.201.1.2"},
		{"port of the modem", 0, 62345, "10.201.2.2"},
		{"port of the wifi", 0, 61345, "10.201.1.2"},
	} {
		var local string
		node.run(func() error {
			c, err := dialFrom(ln.Addr().String(), tt.mark, tt.port)
			if err != nil {
				return fmt.Errorf("%s: %w", tt.name, err)
			}
			local = c.LocalAddr().String()
			return c.Close()
		})
		if got := <-ln.from; got != tt.from {
			t.Errorf("%s: the cloud saw the connection from %s (local %s), want %s", tt.name, got, local, tt.from)
		}
	}

	// The modem is dropped from the list: its rules and routes go.
	node.run(func() error {
		if err := Sync(testPriority, testTable, maxLinks, links(t)[:1]); err != nil {
			return fmt.Errorf("Sync without the modem: %w", err)
		}
		return checkState(wantRulesFor("wifi"), map[int][]string{testTable: wantTable("a0"), testTable + 1: nil})
	})

	// The Wi-Fi goes down: the agent passes it without interfaces, and
	// its table keeps only "unreachable", so marked packets fail rather
	// than leave by the modem.
	node.ip("link", "set", "a0", "down")
	node.run(func() error {
		ls := links(t)
		if len(ls[0].Ifaces) != 0 {
			return fmt.Errorf("a0 is down but usable: %+v", ls[0].Ifaces)
		}
		if err := Sync(testPriority, testTable, maxLinks, ls); err != nil {
			return fmt.Errorf("Sync with the wifi down: %w", err)
		}
		if err := checkState(wantRulesFor("wifi", "modem"), map[int][]string{testTable: unreachableOnly, testTable + 1: wantTable("b0")}); err != nil {
			return err
		}
		if _, err := netlink.RouteGetWithOptions(net.ParseIP(cloud), &netlink.RouteGetOptions{Mark: markA}); !errors.Is(err, unix.EHOSTUNREACH) {
			return fmt.Errorf("route get with the wifi's mark while it is down: %v, want EHOSTUNREACH", err)
		}
		return nil
	})

	// Remove leaves nothing of ours.
	node.run(func() error {
		if err := Remove(testPriority, testTable, maxLinks); err != nil {
			return fmt.Errorf("Remove: %w", err)
		}
		return checkState(nil, map[int][]string{testTable: nil, testTable + 1: nil})
	})
}

// Routes of another protocol in the range of tables are left alone when
// no link has their table; a link's own table holds only what Sync put.
func TestSyncKeepsOthersRoutes(t *testing.T) {
	node, _ := twoLinks(t)
	node.ip("route", "add", "unreachable", "198.51.100.0/24", "table", fmt.Sprint(testTable+5))
	node.ip("route", "add", "unreachable", "203.0.113.0/24", "table", fmt.Sprint(testTable))
	node.run(func() error {
		if err := Sync(testPriority, testTable, maxLinks, links(t)); err != nil {
			return err
		}
		if err := Remove(testPriority, testTable, maxLinks); err != nil {
			return err
		}
		return checkState(nil, map[int][]string{testTable + 5: {"v4 unreachable 198.51.100.0/24 proto 3"}, testTable: nil})
	})
}

func TestLooseReversePath(t *testing.T) {
	node, _ := twoLinks(t)
	node.run(func() error {
		set := func(iface, key, v string) error { return writeSysctl(iface, key, v) }
		if err := errors.Join(set("all", "rp_filter", "1"), set("a0", "rp_filter", "1"), set("b0", "rp_filter", "0")); err != nil {
			return err
		}
		if err := errors.Join(LooseReversePath("a0"), LooseReversePath("b0")); err != nil {
			return err
		}
		for _, c := range []struct{ iface, key, want string }{
			{"a0", "rp_filter", "2"}, {"b0", "rp_filter", "2"}, {"all", "src_valid_mark", "1"},
		} {
			if got := readSysctl(c.iface, c.key); got != c.want {
				return fmt.Errorf("%s.%s = %q, want %q", c.iface, c.key, got, c.want)
			}
		}
		return nil
	})
}

// listener accepts in the peer's namespace and reports each connection's
// remote address.
type listener struct {
	net.Listener
	from chan string
}

func listenIn(t *testing.T, n *netns, addr string) *listener {
	t.Helper()
	var l listener
	n.run(func() (err error) {
		l.Listener, err = net.Listen("tcp", addr)
		return err
	})
	l.from = make(chan string, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			l.from <- h
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return &l
}

func dialFrom(addr string, mark uint32, port int) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}
			if serr == nil && port != 0 {
				serr = unix.Bind(int(fd), &unix.SockaddrInet4{Port: port})
			}
		})
		return errors.Join(err, serr)
	}}
	return d.DialContext(context.Background(), "tcp4", addr)
}

// routingEvents is a netlink socket subscribed to route and rule changes.
type routingEvents struct{ fd int }

func watchRouting() (*routingEvents, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	groups := uint32(unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE | unix.RTMGRP_IPV4_RULE | 1<<(unix.RTNLGRP_IPV6_RULE-1))
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &routingEvents{fd: fd}, nil
}

func (e *routingEvents) close() { unix.Close(e.fd) }

// sentinelTable is a table (below 256, so rtmsg carries it) that nothing
// but untilSentinel touches.
const sentinelTable = 199

// untilSentinel adds a route to the sentinel table and returns the changes
// that came before it: what happened since the socket was opened.
func (e *routingEvents) untilSentinel() ([]string, error) {
	r := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(192, 0, 2, 0), Mask: net.CIDRMask(24, 32)}, Table: sentinelTable, Type: unix.RTN_UNREACHABLE}
	if err := netlink.RouteAdd(r); err != nil {
		return nil, err
	}
	defer netlink.RouteDel(r)
	var changes []string
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(e.fd, buf, 0)
		if err != nil {
			return changes, fmt.Errorf("waiting for the sentinel route: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return changes, err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.RTM_NEWROUTE && len(m.Data) > 4 && m.Data[4] == sentinelTable {
				return changes, nil
			}
			changes = append(changes, fmt.Sprintf("type %d", m.Header.Type))
		}
	}
}

func writeSysctl(iface, key, v string) error {
	return os.WriteFile(sysctl(iface, key), []byte(v), 0o644)
}

func readSysctl(iface, key string) string {
	b, _ := os.ReadFile(sysctl(iface, key))
	return strings.TrimSpace(string(b))
}
