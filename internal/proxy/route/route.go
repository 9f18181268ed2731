// Package route finds the route for a request's host and decides, from the
// links' state, whether a route's offline policy lets it use any link now.
// Both are pure: the server calls them and acts on the answer.
package route

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

// Table maps requests to route indexes by host, then path and headers. It
// is immutable once built.
type Table struct {
	exact   map[string][]int // routes serving the host, in config order
	wild    []wildcard       // longest suffix first
	matches [][]config.Match // by route index
}

type wildcard struct {
	suffix string // ".example.com"
	route  int
}

// NewTable indexes the routes' hosts (already validated: lower-case).
func NewTable(routes []config.Route) *Table {
	t := &Table{exact: map[string][]int{}, matches: make([][]config.Match, len(routes))}
	for i, r := range routes {
		t.matches[i] = r.Matches
		for _, h := range r.Hosts {
			h = strings.ToLower(h)
			if s, ok := strings.CutPrefix(h, "*"); ok {
				t.wild = append(t.wild, wildcard{suffix: s, route: i})
				continue
			}
			t.exact[h] = append(t.exact[h], i)
		}
	}
	slices.SortStableFunc(t.wild, func(a, b wildcard) int { return len(b.suffix) - len(a.suffix) })
	return t
}

// stripPort returns host without a ":port" suffix, as net.SplitHostPort
// would, without allocating an error for the common host with no port.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.LastIndexByte(host, ']') > i {
		return host // no port: "a.b", "[::1]"
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// Match returns the index of the route serving a request to host (which
// may carry a port and a trailing dot) with path and headers h, or -1.
func (t *Table) Match(host, path string, h http.Header) int {
	host = stripPort(host)
	host = strings.TrimSuffix(host, ".")
	if i := t.first(t.exact[host], path, h); i >= 0 {
		return i
	}
	if hasUpper(host) {
		host = strings.ToLower(host)
		if i := t.first(t.exact[host], path, h); i >= 0 {
			return i
		}
	}
	for _, w := range t.wild {
		if strings.HasSuffix(host, w.suffix) && len(host) > len(w.suffix) && t.matchesRequest(w.route, path, h) {
			return w.route
		}
	}
	return -1
}

func (t *Table) first(routes []int, path string, h http.Header) int {
	for _, i := range routes {
		if t.matchesRequest(i, path, h) {
			return i
		}
	}
	return -1
}

// matchesRequest reports whether route i's matches let the request in.
func (t *Table) matchesRequest(i int, path string, h http.Header) bool {
	ms := t.matches[i]
	if len(ms) == 0 {
		return true
	}
	for _, m := range ms {
		if matches(m, path, h) {
			return true
		}
	}
	return false
}

// matches reports whether a request with path and headers h satisfies m.
func matches(m config.Match, path string, h http.Header) bool {
	switch {
	case m.Path != "" && path != m.Path:
		return false
	case m.PathPrefix != "" && !hasPathPrefix(path, m.PathPrefix):
		return false
	}
	for _, hm := range m.Headers {
		if !slices.Contains(h.Values(hm.Name), hm.Value) {
			return false
		}
	}
	return true
}

// hasPathPrefix is Envoy's path_separated_prefix: prefix matches at a
// segment boundary, so /api matches /api, /api/ and /api/x but not /apix.
func hasPathPrefix(path, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	rest := path[len(prefix):]
	return rest == "" || rest[0] == '/' || rest[0] == '?'
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

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
func Steer(p config.Offline, links []link.State, always bool) link.Path {
	restricted := always
	var best link.Path
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
		return link.Path{}
	}
	if !anyAllowed {
		return link.Path{Blocked: true}
	}
	return best
}

// pathOf is how a socket leaves by l, if it can be made to.
func pathOf(l link.State) (link.Path, bool) {
	p := link.Path{Link: l.Name, Metered: l.Metered}
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
