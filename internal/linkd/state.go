//go:build linux

package linkd

import (
	"fmt"
	"slices"
	"strings"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/linkd/config"
	"github.com/misaki-io/misaki/internal/linkd/hostnet"
)

// Compute classifies ifaces by the config's rules into links and decides
// whether each is up: an interface of it is usable and, when probes are
// configured, the last probe over it reached the gateway; an override
// replaces the verdict and flags. It is pure: links come out in the order
// of their first rule, without Since (the caller keeps it).
func Compute(c *config.Config, ifaces []hostnet.Iface, overrides map[string]linkv1.Override, probes map[string]*linkv1.Probe) []linkv1.Link {
	names := config.LinkNames(c.Links)
	byName := map[string]*linkv1.Link{}
	out := make([]linkv1.Link, len(names))
	for i, n := range names {
		r := c.Links[slices.IndexFunc(c.Links, func(r config.Rule) bool { return r.Name == n })]
		out[i] = linkv1.Link{Name: n, Class: r.Class, Metered: r.Metered, Roaming: r.Roaming, Source: "kernel"}
		if !c.Routing.Disabled {
			out[i].Steer = &linkv1.Steer{
				Mark:  c.Routing.Mark + uint32(i),
				Table: c.Routing.Table + i,
				Ports: [2]uint16{uint16(c.Routing.Ports + i*c.Routing.PortsPerLink), uint16(c.Routing.Ports + (i+1)*c.Routing.PortsPerLink - 1)},
			}
		}
		byName[n] = &out[i]
	}
	for _, f := range ifaces {
		r, ok := config.Classify(c.Links, config.Facts{Name: f.Name, Type: f.Type})
		if !ok {
			continue
		}
		l := byName[r.Name]
		// A later rule of the same link may carry other flags: the first
		// interface's rule decides them.
		if len(l.Interfaces) == 0 {
			l.Metered, l.Roaming = r.Metered, r.Roaming
		}
		l.Interfaces = append(l.Interfaces, linkv1.Interface{
			Name: f.Name, Type: f.Type, Up: f.Up, Running: f.Running,
			Addrs: slices.Clone(f.Addrs), Gateway: f.Gateway,
		})
	}
	for i := range out {
		l := &out[i]
		usable := slices.ContainsFunc(l.Interfaces, linkv1.Interface.Usable)
		switch {
		case len(l.Interfaces) == 0:
			l.Reason = "no interface matches its rules"
		case !usable:
			l.Reason = "no interface is up with carrier and an address: " + ifaceStates(l.Interfaces)
		}
		l.Up = usable
		if len(c.Probe.Targets) > 0 && usable {
			// Up only once the gateway answered over it: a link that just
			// came back has not been probed since, and a captive portal or
			// a dead access point keeps its interface up.
			switch p := probes[l.Name]; {
			case p == nil:
				l.Up = false
				l.Reason = "gateway not probed over it yet"
			case !p.Reachable:
				pc := *p
				l.Probe = &pc
				l.Up = false
				l.Reason = fmt.Sprintf("gateway %s unreachable over it: %s", p.Target, p.Error)
			default:
				pc := *p
				l.Probe = &pc
			}
		}
		if o, ok := overrides[l.Name]; ok {
			if o.State != "auto" {
				l.Up = o.State == "up"
				l.Source = "override"
				l.Reason = ""
				if !l.Up {
					l.Reason = "set down by the connectivity manager"
				}
			}
			if o.Metered != nil {
				l.Metered = *o.Metered
			}
			if o.Roaming != nil {
				l.Roaming = *o.Roaming
			}
		}
	}
	return out
}

func ifaceStates(ifs []linkv1.Interface) string {
	var s []string
	for _, i := range ifs {
		st := "down"
		switch {
		case i.Up && !i.Running:
			st = "no carrier"
		case i.Up && len(i.Addrs) == 0:
			st = "no address"
		case i.Up:
			st = "up"
		}
		s = append(s, i.Name+" "+st)
	}
	return strings.Join(s, ", ")
}

// sameLinks reports whether two views differ only in Since and probe
// timings (which change on every probe and are not worth a publication).
func sameLinks(a, b []linkv1.Link) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Name != y.Name || x.Class != y.Class || x.Metered != y.Metered || x.Roaming != y.Roaming ||
			x.Up != y.Up || x.Reason != y.Reason || x.Source != y.Source ||
			!slices.EqualFunc(x.Interfaces, y.Interfaces, sameIface) ||
			(x.Probe == nil) != (y.Probe == nil) || (x.Probe != nil && x.Probe.Reachable != y.Probe.Reachable) ||
			(x.Steer == nil) != (y.Steer == nil) || (x.Steer != nil && *x.Steer != *y.Steer) {
			return false
		}
	}
	return true
}

func sameIface(a, b linkv1.Interface) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Up == b.Up && a.Running == b.Running &&
		a.Gateway == b.Gateway && slices.Equal(a.Addrs, b.Addrs)
}
