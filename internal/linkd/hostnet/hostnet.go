//go:build linux

// Package hostnet reads the host's interfaces, addresses and routes through
// netlink (github.com/vishvananda/netlink) and wakes the link agent when
// any of them changes (link, address and route multicast groups).
//
// Events only wake a rescan; the state is always read afresh, so a lost or
// reordered event (ENOBUFS under a burst) cannot leave a stale view.
package hostnet

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Iface is one kernel interface as the agent needs it.
type Iface struct {
	Index int
	Name  string
	// Type is wlan or wwan (the device's uevent DEVTYPE, or a wireless
	// directory in sysfs), else the netlink link kind (veth, dummy, ...),
	// "device" for plain hardware.
	Type    string
	Up      bool // administratively up
	Running bool // has carrier (IFF_RUNNING)
	// Addrs are the addresses that can reach an upstream (not link-local),
	// in CIDR form.
	Addrs []string
	// Gateway is the next hop of the interface's lowest-metric default
	// route in the main table; empty if it has none.
	Gateway string
	// Routes are the main table's routes through this interface (IPv4 and
	// IPv6), which the agent copies into the link's own table.
	Routes []netlink.Route
}

// Usable reports whether the interface can carry traffic.
func (i Iface) Usable() bool { return i.Up && i.Running && len(i.Addrs) > 0 }

// Scan lists the interfaces of the agent's network namespace.
func Scan() ([]Iface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("hostnet: list links: %w", err)
	}
	var routes []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("hostnet: list routes: %w", err)
		}
		routes = append(routes, rs...)
	}
	// One dump of every address, not one per interface: each per-link
	// dump lists the whole table anyway, which made a scan grow with the
	// square of the interfaces (a node with 50 pods' veths: 16 ms).
	all, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("hostnet: list addresses: %w", err)
	}
	byLink := map[int][]netlink.Addr{}
	for _, ad := range all {
		byLink[ad.LinkIndex] = append(byLink[ad.LinkIndex], ad)
	}
	out := make([]Iface, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		i := Iface{
			Index:   a.Index,
			Name:    a.Name,
			Type:    devType(a.Name, l.Type()),
			Up:      a.Flags&net.FlagUp != 0,
			Running: a.RawFlags&unix.IFF_RUNNING != 0,
		}
		for _, ad := range byLink[a.Index] {
			if ad.IP.IsLinkLocalUnicast() || ad.Flags&unix.IFA_F_TENTATIVE != 0 {
				continue
			}
			i.Addrs = append(i.Addrs, ad.IPNet.String())
		}
		best := -1
		for _, r := range routes {
			if r.LinkIndex != a.Index && !slices.ContainsFunc(r.MultiPath, func(h *netlink.NexthopInfo) bool { return h.LinkIndex == a.Index }) {
				continue
			}
			i.Routes = append(i.Routes, r)
			if isDefault(r) && r.Gw != nil && (best < 0 || r.Priority < best) {
				best, i.Gateway = r.Priority, r.Gw.String()
			}
		}
		out = append(out, i)
	}
	return out, nil
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// devType prefers the driver's own word (uevent DEVTYPE=wlan or wwan) to
// the link kind, which is "device" for every piece of hardware.
func devType(name, kind string) string {
	dir := filepath.Join("/sys/class/net", name)
	if b, err := os.ReadFile(filepath.Join(dir, "uevent")); err == nil {
		for line := range bytes.Lines(b) {
			if v, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("DEVTYPE=")); ok && len(v) > 0 {
				return string(v)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "wireless")); err == nil {
		return "wlan"
	}
	if kind == "" {
		return "device"
	}
	return kind
}

// Watch subscribes to link, address and route changes and sends on events
// (without blocking) for each change until ctx ends. It returns once the
// subscriptions are in place.
func Watch(ctx context.Context, events chan<- struct{}) error {
	done := make(chan struct{})
	go func() {
		<-ctx.Done()
		close(done)
	}()
	poke := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	lu := make(chan netlink.LinkUpdate, 64)
	au := make(chan netlink.AddrUpdate, 64)
	ru := make(chan netlink.RouteUpdate, 64)
	onErr := func(error) { poke() } // a lost event (ENOBUFS): rescan anyway
	if err := netlink.LinkSubscribeWithOptions(lu, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("hostnet: subscribe to links: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(au, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("hostnet: subscribe to addresses: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(ru, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("hostnet: subscribe to routes: %w", err)
	}
	go func() {
		for {
			select {
			case _, ok := <-lu:
				if !ok {
					lu = nil
				}
			case _, ok := <-au:
				if !ok {
					au = nil
				}
			case u, ok := <-ru:
				if !ok {
					ru = nil
				} else if u.Table != unix.RT_TABLE_MAIN {
					// The agent's own link tables (and anyone else's):
					// Scan reads the main table only.
					continue
				}
			case <-done:
				return
			}
			if lu == nil && au == nil && ru == nil {
				return
			}
			poke()
		}
	}()
	return nil
}
