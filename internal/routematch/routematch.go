// Package routematch finds the route for a request: by host (exact, then
// the longest wildcard suffix), then path and headers, in the order the
// configuration lists the routes. The edge and the gateway match the same
// way, so both use it; what a route may do once found (its links, its
// offline policy) is the edge's own (internal/proxy/route).
package routematch

import (
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/misaki-io/misaki/internal/proxy/config"
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

// NewTable indexes the routes' hosts, lower-cased (config validation
// lower-cases them already; a table built another way gets the same keys).
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

// canonical is host as the table keys it: no port, no trailing dot,
// lower-case. (strings.ToLower returns a host with no upper-case letter
// as it is, without allocating.)
func canonical(host string) string {
	return strings.ToLower(strings.TrimSuffix(stripPort(host), "."))
}

// covers reports whether the wildcard serves host (canonical): a name
// under its suffix, not the suffix itself.
func (w wildcard) covers(host string) bool {
	return len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix)
}

// Match returns the index of the route serving a request to host (which
// may carry a port and a trailing dot) with path and headers h, or -1.
func (t *Table) Match(host, path string, h http.Header) int {
	host = canonical(host)
	if i := t.first(t.exact[host], path, h); i >= 0 {
		return i
	}
	for _, w := range t.wild {
		if w.covers(host) && t.matchesRequest(w.route, path, h) {
			return w.route
		}
	}
	return -1
}

// ServesHost reports whether any route serves host (which may carry a port
// and a trailing dot), whatever the request's path and headers: the
// gateway leaves such a host to the routes, never to a vehicle's service.
func (t *Table) ServesHost(host string) bool {
	host = canonical(host)
	return len(t.exact[host]) > 0 || slices.ContainsFunc(t.wild, func(w wildcard) bool { return w.covers(host) })
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
