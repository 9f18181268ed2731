package gateway

// Vehicle services (gateway.vehicleServices, docs/gateway.md): the hub
// runs the cloud half of vehicle <id> in the cloud namespace misaki-v-<id>
// and gives the vehicle a mesh Route for each of its Services, whose hosts
// are the Service's cluster DNS names and whose destination is this
// gateway. Such a request arrives with Host <svc>.<ns>.svc.cluster.local
// (or <svc>.<ns>.svc, <svc>.<ns>) and goes to Service <svc> in the
// namespace of the vehicle that sent it, named by its client certificate.
// The <ns> in the Host is what the vehicle's app called, passed on in
// HeaderOriginNamespace and never dialled: a vehicle reaches its own
// namespace and no other.

import (
	"container/list"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// HeaderOriginNamespace carries, to a vehicle service, the namespace the
// vehicle's app named in the Host (shuttle in api.shuttle.svc.cluster.local):
// where the component runs when it is placed on the vehicle. A value sent
// by the vehicle is replaced.
const HeaderOriginNamespace = "Misaki-Origin-Namespace"

// routeVehicleServices is the "route" label of vehicle services' requests.
const routeVehicleServices = "vehicle-services"

// vehicleURIPrefix starts the URI SAN of a vehicle's certificate; the rest
// is the vehicle ID.
const vehicleURIPrefix = "spiffe://misaki/vehicle/"

// vehicleID returns the vehicle ID of a verified client certificate: the
// rest of its first URI SAN after spiffe://misaki/vehicle/, when that is a
// DNS label (as the hub's vehicle IDs are); else "". The common name is
// never taken for one.
func vehicleID(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 || len(cs.PeerCertificates[0].URIs) == 0 {
		return ""
	}
	id, ok := strings.CutPrefix(cs.PeerCertificates[0].URIs[0].String(), vehicleURIPrefix)
	if !ok || !dnsLabel(id) {
		return ""
	}
	return id
}

// serviceHost splits the Host of a request for a cloud Service:
// <service>.<namespace>.svc.<clusterDomain>, <service>.<namespace>.svc or
// <service>.<namespace>, case-insensitive, with an optional trailing dot
// and port (default 80). ok is false for any other Host.
func serviceHost(hostport, clusterDomain string) (service, namespace string, port int, ok bool) {
	host, port := hostport, 80
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		host = hostport[:i]
		if p := hostport[i+1:]; p != "" {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil || n == 0 {
				return "", "", 0, false
			}
			port = int(n)
		}
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, suffix := range [...]string{".svc." + clusterDomain, ".svc", ""} {
		rest, cut := strings.CutSuffix(host, suffix)
		if !cut {
			continue
		}
		if s, ns, two := strings.Cut(rest, "."); two && dnsLabel(s) && dnsLabel(ns) {
			return s, ns, port, true
		}
	}
	return "", "", 0, false
}

// dnsLabel reports whether s is an RFC 1123 label, as Kubernetes names
// namespaces and Services: lower-case letters, digits and '-', at most 63,
// not starting or ending with '-'.
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isGRPC reports whether r is a gRPC call (as the edge tells one).
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") && (len(ct) == len("application/grpc") || ct[len("application/grpc")] == '+' || ct[len("application/grpc")] == ';')
}

// vehicleServices is the gateway's half of gateway.vehicleServices.
type vehicleServices struct {
	cfg       config.VehicleServices
	upstreams *upstreamCache
}

func newVehicleServices(cfg config.VehicleServices, s *Server) *vehicleServices {
	v := &vehicleServices{cfg: cfg}
	v.upstreams = &upstreamCache{
		build: v.build(s),
		max:   cfg.MaxUpstreams,
		now:   s.now,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "misaki_gateway_vehicle_upstreams_dropped_total",
			Help: "Vehicle services' upstreams dropped, with their idle connections: past gateway.vehicleServices.maxUpstreams (reason bound) or unused for its timeouts.idle (reason idle).",
		}, []string{"reason"}),
		byKey: map[upstreamKey]*list.Element{},
	}
	return v
}

// upstreamKey names one upstream of vehicle services.
type upstreamKey struct {
	service, namespace string
	port               int
	h2c                bool
}

// vehicleUpstream is one upstream of vehicle services.
type vehicleUpstream struct {
	key  upstreamKey
	fwd  *forward.Upstream
	host string    // the Host its requests carry: the URL's host[:port]
	used time.Time // guarded by the cache's mu
}

// build returns the function that makes the upstream for a key, through
// the machinery the static routes use. It does no I/O.
func (v *vehicleServices) build(s *Server) func(upstreamKey) (*vehicleUpstream, error) {
	return func(k upstreamKey) (*vehicleUpstream, error) {
		raw := strings.NewReplacer(config.PlaceholderService, k.service, config.PlaceholderNamespace, k.namespace,
			config.PlaceholderClusterDomain, v.cfg.ClusterDomain, config.PlaceholderPort, strconv.Itoa(k.port)).Replace(v.cfg.Upstream)
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("gateway.vehicleServices.upstream %q: %w", raw, err)
		}
		if k.h2c {
			raw = "h2c://" + u.Host
		}
		fwd, err := forward.New(config.Route{
			Name: routeVehicleServices, Upstream: raw, Timeouts: v.cfg.Timeouts,
			MaxBodyBytes: v.cfg.MaxBodyBytes, MaxUpstreamConnections: v.cfg.MaxUpstreamConnections,
		}, forward.Options{Log: s.log, NoFastPath: s.cfg.NoFastPath()})
		if err != nil {
			return nil, err
		}
		if s.vehicleEndpoints != nil {
			fwd.SetEndpoints(s.vehicleEndpoints(fwd.Addr()))
		}
		return &vehicleUpstream{key: k, fwd: fwd, host: u.Host}, nil
	}
}

// serve answers a request for a cloud Service from the calling vehicle's
// namespace. It reports false, having written nothing, when the Host is not
// a Service name.
func (v *vehicleServices) serve(s *Server, w http.ResponseWriter, r *http.Request, identity string) bool {
	service, origin, port, ok := serviceHost(r.Host, v.cfg.ClusterDomain)
	if !ok {
		return false
	}
	ns := ""
	if id := vehicleID(r.TLS); id != "" {
		ns = strings.ReplaceAll(v.cfg.Namespace, config.PlaceholderVehicle, id)
	}
	if !dnsLabel(ns) {
		s.requests.WithLabelValues(routeVehicleServices, outcomeForbidden).Inc()
		http.Error(w, fmt.Sprintf("misaki gateway: %s is a cloud Service name, which only a vehicle reaches, in its own namespace; "+
			"this client certificate (%q) names no vehicle: its first URI SAN must be %s<vehicle ID>, the ID a DNS label", r.Host, identity, vehicleURIPrefix), http.StatusForbidden)
		return true
	}
	k := upstreamKey{service: service, namespace: ns, port: port,
		h2c: v.cfg.Protocol == config.VehicleProtocolH2C || v.cfg.Protocol == config.VehicleProtocolAuto && isGRPC(r)}
	u, err := v.upstreams.get(k)
	if err != nil {
		s.requests.WithLabelValues(routeVehicleServices, outcomeError).Inc()
		s.log.Error("vehicle service upstream", "err", err)
		http.Error(w, "misaki gateway: "+err.Error(), http.StatusInternalServerError)
		return true
	}
	r.Host = u.host
	r.Header.Del(HeaderOriginNamespace)
	r.Header.Set(HeaderOriginNamespace, origin)
	s.serve(w, r, identity, routeVehicleServices, u.fwd, v.cfg.MaxBodyBytes)
	return true
}

// upstreamCache keeps the upstreams of vehicle services, made on first
// use: at most max, the least recently used dropped past it, and those
// unused for a while dropped by sweep, so that memory and idle connections
// stay bounded however many vehicles call. A dropped upstream's idle
// connections are closed at once; one busy with a request then is closed
// when the request ends (HTTP/1.1), or after timeouts.idle (HTTP/2).
type upstreamCache struct {
	build   func(upstreamKey) (*vehicleUpstream, error)
	max     int
	now     func() time.Time
	dropped *prometheus.CounterVec // by reason: bound, idle

	mu    sync.Mutex // guards fields below and vehicleUpstream.used
	byKey map[upstreamKey]*list.Element
	lru   list.List // of *vehicleUpstream, most recently used first
}

// get returns the upstream for k, made if need be.
func (c *upstreamCache) get(k upstreamKey) (*vehicleUpstream, error) {
	now := c.now()
	c.mu.Lock()
	if e, ok := c.byKey[k]; ok {
		c.lru.MoveToFront(e)
		u := e.Value.(*vehicleUpstream)
		u.used = now
		c.mu.Unlock()
		return u, nil
	}
	c.mu.Unlock()
	// Made outside the lock (no I/O, but tens of microseconds), so that
	// requests to upstreams kept do not wait behind it; of two made at
	// once for one key, the first kept serves both.
	u, err := c.build(k)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if e, ok := c.byKey[k]; ok {
		c.lru.MoveToFront(e)
		kept := e.Value.(*vehicleUpstream)
		kept.used = now
		c.mu.Unlock()
		u.fwd.Close()
		return kept, nil
	}
	u.used = now
	c.byKey[k] = c.lru.PushFront(u)
	var drop *vehicleUpstream
	if c.lru.Len() > c.max {
		drop = c.lru.Remove(c.lru.Back()).(*vehicleUpstream)
		delete(c.byKey, drop.key)
	}
	c.mu.Unlock()
	if drop != nil {
		drop.fwd.Close()
		c.dropped.WithLabelValues("bound").Inc()
	}
	return u, nil
}

// sweep drops the upstreams unused for idle or longer.
func (c *upstreamCache) sweep(idle time.Duration) int {
	cutoff := c.now().Add(-idle)
	var drop []*vehicleUpstream
	c.mu.Lock()
	for e := c.lru.Back(); e != nil; {
		u := e.Value.(*vehicleUpstream)
		if u.used.After(cutoff) {
			break
		}
		prev := e.Prev()
		c.lru.Remove(e)
		delete(c.byKey, u.key)
		drop = append(drop, u)
		e = prev
	}
	c.mu.Unlock()
	for _, u := range drop {
		u.fwd.Close()
	}
	c.dropped.WithLabelValues("idle").Add(float64(len(drop)))
	return len(drop)
}

// len is the number of upstreams kept.
func (c *upstreamCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// closeAll drops every upstream's idle connections, at shutdown.
func (c *upstreamCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*vehicleUpstream).fwd.Close()
	}
}
