//go:build linux

// Package policyroute installs the routing that steers a socket onto one
// link whatever the main table prefers: per link, a routing table holding
// only that link's routes (copied from the main table) and ending in
// "unreachable", so steered packets fail rather than leak onto another
// link when theirs is down; a rule sending packets with the link's
// firewall mark to that table (SO_MARK, for processes in the host's
// network namespace); and a rule sending TCP packets from the link's
// source-port range to it, for pods: the mark is cleared when a packet
// crosses the veth from a pod's network namespace into the host's, and a
// pod's proxy has no CAP_NET_ADMIN to set one, but the source port it
// binds survives the veth and is read by the host's routing decision
// (rule "sport", Linux 4.17).
//
// Sync is idempotent: it computes what the kernel should hold and changes
// only the difference, so it runs after every change of the host.
package policyroute

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/misaki-io/misaki/internal/linkd/hostnet"
)

// Protocol marks the routes this package installs (ip route ... proto 77),
// so that it removes only its own.
const Protocol = 77

// Link is one link's steering and the interfaces it may use, best first.
type Link struct {
	Name   string
	Mark   uint32
	Table  int
	Ports  [2]uint16
	Ifaces []hostnet.Iface // usable interfaces of the link
}

// Sync makes the kernel's rules and link tables match links. Rules at
// priority whose table lies in [firstTable, firstTable+maxLinks) and are
// not wanted are removed, and so are the routes this package installed in
// tables of that range no link has.
func Sync(priority, firstTable, maxLinks int, links []Link) error {
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if err := syncRules(fam, priority, firstTable, maxLinks, links); err != nil {
			errs = append(errs, err)
		}
		have, err := listTables(fam, firstTable, maxLinks)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range links {
			if err := syncTable(fam, l, have[l.Table]); err != nil {
				errs = append(errs, fmt.Errorf("link %s: %w", l.Name, err))
			}
			delete(have, l.Table)
		}
		for t, rs := range have { // tables no link has
			for _, r := range rs {
				if r.Protocol != Protocol {
					continue
				}
				r.Table = t
				if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("policyroute: delete %s from table %d: %w", routeKey(r), t, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// listTables reads the routes of the family in every table of the range,
// with one dump.
func listTables(fam, firstTable, maxLinks int) (map[int][]netlink.Route, error) {
	rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("policyroute: list routes: %w", err)
	}
	out := map[int][]netlink.Route{}
	for _, r := range rs {
		if r.Table >= firstTable && r.Table < firstTable+maxLinks {
			out[r.Table] = append(out[r.Table], r)
		}
	}
	return out, nil
}

func wantRules(fam, priority int, links []Link) []*netlink.Rule {
	var out []*netlink.Rule
	for _, l := range links {
		m := netlink.NewRule()
		m.Family, m.Priority, m.Table = fam, priority, l.Table
		m.Mark = l.Mark
		mask := uint32(0xffffffff)
		m.Mask = &mask
		out = append(out, m)
		p := netlink.NewRule()
		p.Family, p.Priority, p.Table = fam, priority, l.Table
		p.IPProto = unix.IPPROTO_TCP
		p.Sport = netlink.NewRulePortRange(l.Ports[0], l.Ports[1])
		out = append(out, p)
	}
	return out
}

func ruleKey(r *netlink.Rule) string {
	k := fmt.Sprintf("%d/%d/t%d/m%d", r.Family, r.Priority, r.Table, r.Mark)
	if r.Sport != nil {
		k += fmt.Sprintf("/s%d-%d/p%d", r.Sport.Start, r.Sport.End, r.IPProto)
	}
	return k
}

func syncRules(fam, priority, firstTable, maxLinks int, links []Link) error {
	have, err := netlink.RuleList(fam)
	if err != nil {
		return fmt.Errorf("policyroute: list rules: %w", err)
	}
	want := wantRules(fam, priority, links)
	wantKeys := map[string]bool{}
	for _, r := range want {
		wantKeys[ruleKey(r)] = true
	}
	haveKeys := map[string]bool{}
	var errs []error
	for i := range have {
		r := &have[i]
		if r.Priority != priority || r.Table < firstTable || r.Table >= firstTable+maxLinks {
			continue
		}
		r.Family = fam
		k := ruleKey(r)
		if wantKeys[k] && !haveKeys[k] {
			haveKeys[k] = true
			continue
		}
		if err := netlink.RuleDel(r); err != nil {
			errs = append(errs, fmt.Errorf("policyroute: delete rule %s: %w", k, err))
		}
	}
	for _, r := range want {
		if haveKeys[ruleKey(r)] {
			continue
		}
		if err := netlink.RuleAdd(r); err != nil {
			errs = append(errs, fmt.Errorf("policyroute: add rule %s: %w", ruleKey(r), err))
		}
	}
	return errors.Join(errs...)
}

// wantRoutes copies the first usable interface's main-table routes of the
// family into the link's table, and ends it in unreachable.
func wantRoutes(fam int, l Link) []netlink.Route {
	var out []netlink.Route
	for _, i := range l.Ifaces {
		for _, r := range i.Routes {
			if r.Family != fam && !(r.Family == 0 && famOf(r) == fam) {
				continue
			}
			if r.Type != unix.RTN_UNICAST {
				continue
			}
			c := netlink.Route{
				LinkIndex: r.LinkIndex, Dst: r.Dst, Src: r.Src, Gw: r.Gw, Scope: r.Scope,
				Priority: r.Priority, Flags: r.Flags, Type: unix.RTN_UNICAST,
				Table: l.Table, Protocol: Protocol, Family: fam,
			}
			if len(r.MultiPath) > 0 {
				// Only this interface's hops of a route over several
				// links: another link's would let steered packets leak.
				var hops []*netlink.NexthopInfo
				for _, h := range r.MultiPath {
					if h.LinkIndex == i.Index {
						hops = append(hops, h)
					}
				}
				switch len(hops) {
				case 0:
					continue
				case 1:
					c.LinkIndex, c.Gw, c.Flags = hops[0].LinkIndex, hops[0].Gw, hops[0].Flags
				default:
					c.MultiPath = hops
				}
			}
			out = append(out, c)
		}
		if len(out) > 0 {
			break // one interface per link: the first usable one
		}
	}
	dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
	if fam == netlink.FAMILY_V6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	out = append(out, netlink.Route{
		Dst: dst, Table: l.Table, Type: unix.RTN_UNREACHABLE, Priority: 0xffffffff,
		Protocol: Protocol, Family: fam,
	})
	return out
}

func famOf(r netlink.Route) int {
	ip := r.Gw
	if r.Dst != nil {
		ip = r.Dst.IP
	}
	if ip != nil && ip.To4() == nil {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

func routeKey(r netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		dst = r.Dst.String()
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			dst = "default"
		}
	}
	dev := r.LinkIndex
	if r.Type != unix.RTN_UNICAST {
		dev = 0 // the kernel puts IPv6's unreachable routes on lo
	}
	k := fmt.Sprintf("%d %s via %v dev %d metric %d src %v", r.Type, dst, r.Gw, dev, r.Priority, r.Src)
	for _, h := range r.MultiPath {
		k += fmt.Sprintf(" nexthop via %v dev %d", h.Gw, h.LinkIndex)
	}
	return k
}

// syncTable makes the link's table hold what wantRoutes says; have is
// what it holds now.
func syncTable(fam int, l Link, have []netlink.Route) error {
	want := wantRoutes(fam, l)
	wantKeys := map[string]bool{}
	for _, r := range want {
		wantKeys[routeKey(r)] = true
	}
	haveKeys := map[string]bool{}
	var errs []error
	for _, r := range have {
		k := routeKey(r)
		if wantKeys[k] && !haveKeys[k] {
			haveKeys[k] = true
			continue
		}
		r.Table = l.Table
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("policyroute: delete %s from table %d: %w", k, l.Table, err))
		}
	}
	for _, r := range want {
		if haveKeys[routeKey(r)] {
			continue
		}
		if err := netlink.RouteAdd(&r); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("policyroute: add %s to table %d: %w", routeKey(r), l.Table, err))
		}
	}
	return errors.Join(errs...)
}

// Remove deletes every rule and table route Sync installed.
func Remove(priority, firstTable, maxLinks int) error {
	return Sync(priority, firstTable, maxLinks, nil)
}

// LooseReversePath sets net.ipv4.conf.<iface>.rp_filter to 2 (loose): a
// reply to a steered connection arrives on its link, which the main table
// may not prefer for the peer's address, and strict reverse-path filtering
// would drop it. It also lets marked sockets' replies pass the reverse-path
// check (src_valid_mark).
func LooseReversePath(iface string) error {
	// The kernel uses the larger of conf/all and conf/<iface>; loose (2)
	// is larger than strict (1).
	var errs []error
	all, _ := os.ReadFile(sysctl("all", "rp_filter"))
	own, _ := os.ReadFile(sysctl(iface, "rp_filter"))
	if string(all) == "1\n" || string(own) == "1\n" {
		errs = append(errs, os.WriteFile(sysctl(iface, "rp_filter"), []byte("2"), 0o644))
	}
	errs = append(errs, os.WriteFile(sysctl("all", "src_valid_mark"), []byte("1"), 0o644))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("policyroute: loose reverse path on %s: %w", iface, err)
	}
	return nil
}

func sysctl(iface, key string) string {
	return filepath.Join("/proc/sys/net/ipv4/conf", iface, key)
}
