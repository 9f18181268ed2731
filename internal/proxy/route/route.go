// Package route decides, from the links' state, whether a route's offline
// policy lets it use any link now (LinkUsable), and which link its new
// connections take (Steer). Both are pure: the server calls them and acts
// on the answer. Finding the route for a request is internal/routematch,
// which the gateway shares.
package route

import (
	"fmt"
	"slices"
	"strings"

	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

// LinkUsable reports whether policy p may use any of links now, and if not,
// why, in words for the admin API and logs. With no links configured at all
// the proxy has no link model and every route may proceed.
func LinkUsable(p config.Offline, links []link.State) (bool, string) {
	if len(links) == 0 {
		return true, ""
	}
	var up, wrongClass, metered, roaming []string
	for _, l := range links {
		if !l.Up {
			continue
		}
		up = append(up, l.Name)
		switch {
		case len(p.Links) > 0 && !slices.Contains(p.Links, l.Class):
			wrongClass = append(wrongClass, fmt.Sprintf("%s (%s)", l.Name, l.Class))
		case l.Metered && p.Metered == config.Deny:
			metered = append(metered, l.Name)
		case l.Roaming && p.Roaming == config.Deny:
			roaming = append(roaming, l.Name)
		default:
			return true, ""
		}
	}
	if len(up) == 0 {
		return false, "no link is up"
	}
	var why []string
	if len(wrongClass) > 0 {
		why = append(why, fmt.Sprintf("up but not of an allowed class %v: %s", p.Links, strings.Join(wrongClass, ", ")))
	}
	if len(metered) > 0 {
		why = append(why, "metered and the route denies metered links: "+strings.Join(metered, ", "))
	}
	if len(roaming) > 0 {
		why = append(why, "roaming and the route denies roaming: "+strings.Join(roaming, ", "))
	}
	return false, "no usable link; " + strings.Join(why, "; ")
}

// Steer picks the path a route's upstream connections must leave by.
// When every link that is up may carry the route, it returns the zero Path
// and the kernel's routing table chooses, unless always is set (a route
// with a byte budget must know which link carries its bytes). Otherwise it
// returns the best allowed link that is up, unmetered before metered, then
// in order: one of the proxy's own interfaces, or the node link agent's
// policy routing, so the packets cannot take a forbidden path. Links that
// cannot be steered onto (no interface glob; an agent without policy
// routing) are skipped. When links that are up exist but none may carry
// the route, the path is Blocked.
func Steer(p config.Offline, links []link.State, always bool) forward.Path {
	restricted := always
	var best forward.Path
	found, anyAllowed := false, false
	for _, l := range links {
		if !l.Up {
			continue
		}
		if !allowed(p, l) {
			restricted = true
			continue
		}
		anyAllowed = true
		if found && (l.Metered || !best.Metered) {
			continue
		}
		if path, ok := pathOf(l); ok {
			best, found = path, true
		}
	}
	if !restricted {
		return forward.Path{}
	}
	if !anyAllowed {
		return forward.Path{Blocked: true}
	}
	return best
}

// pathOf is how a socket leaves by l, if it can be made to.
func pathOf(l link.State) (forward.Path, bool) {
	p := forward.Path{Link: l.Name, Metered: l.Metered}
	if l.Agent {
		if l.Steer == nil {
			return p, false
		}
		p.Mark, p.Ports = l.Steer.Mark, l.Steer.Ports
		return p, true
	}
	for _, i := range l.Interfaces {
		if link.Usable(i) {
			p.Interface = i.Name
			return p, true
		}
	}
	return p, false
}

func allowed(p config.Offline, l link.State) bool {
	return (len(p.Links) == 0 || slices.Contains(p.Links, l.Class)) &&
		!(l.Metered && p.Metered == config.Deny) && !(l.Roaming && p.Roaming == config.Deny)
}
