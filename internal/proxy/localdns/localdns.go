// Package localdns is the proxy's DNS server: it answers the mesh's names
// with the proxy's own address, and forwards every other name to upstream
// resolvers through a cache that keeps answering while the vehicle is
// offline.
//
//   - Mesh names (route hosts) get A and AAAA records of the proxy's
//     address, from a set that SetMesh swaps at once.
//   - Other names go to the upstreams for their zone (the longest matching
//     suffix; "." for the rest), in order, one outstanding query per
//     question however many clients ask (singleflight).
//   - Answers are cached, negative ones too (RFC 2308), with their TTLs
//     within a floor and a ceiling, bounded in entries and bytes.
//   - Serve-stale (RFC 8767): an expired entry is refreshed from upstream;
//     if no answer comes within StaleAfter (1.8 s by default), or the
//     upstreams fail, the stale answer is given, with TTL 30 and Extended
//     DNS Error 3 (Stale Answer), up to MaxStale past its TTL.
//   - Upstream replies are accepted only when their source address and
//     port (a connected UDP socket per query, on a random port), ID and
//     question match (RFC 5452); truncated ones are asked again over TCP.
//
// Built on miekg/dns for the wire format and the listeners; the
// forwarding and cache are written here because CoreDNS's forward and
// cache plugins come with CoreDNS's plugin chain and Caddy-style config,
// and neither keeps its cache across restarts.
package localdns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/framelog"
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	// Upstreams are the resolvers ("host:port") for names no zone below
	// covers, tried in order.
	Upstreams []string
	// Zones maps a zone ("svc.cluster.local.") to the resolvers for it.
	Zones map[string][]string
	// Timeout bounds one query to one upstream. Default 2s.
	Timeout time.Duration
	// StaleAfter is how long a client waits for a refresh before a stale
	// answer (RFC 8767's client response timer). Default 1.8s.
	StaleAfter time.Duration
	// MaxStale is how long past its TTL an answer may still be served.
	// Default 72h.
	MaxStale time.Duration
	// MinTTL and MaxTTL bound the TTL answers are cached for; MaxNegTTL
	// bounds negative answers'. Defaults 0, 24h and 3h.
	MinTTL, MaxTTL, MaxNegTTL time.Duration
	// MaxEntries and MaxBytes bound the cache. Defaults 100,000 and 64 MiB.
	MaxEntries int
	MaxBytes   int64
	// UDPSize is the EDNS0 UDP payload size offered to upstreams and
	// clients, and the most a client's is taken for. Default 1232.
	UDPSize uint16
	// MeshTTL is the TTL of mesh answers. Default 5s.
	MeshTTL time.Duration
	// Clock is the wall clock and the stale timer's. Default clock.Real.
	Clock clock.Clock
	// Log receives upstream failures and damage found in the cache file.
	// Default: discard.
	Log *slog.Logger
	// Metrics, when set, counts what the server does.
	Metrics *Metrics
}

// staleTTL is the TTL of a stale answer (RFC 8767 §4 recommends 30 s).
const staleTTL = 30

// The defaults of Config. The proxy's configuration states the same
// defaults for its dns block (internal/proxy/config/dns.go), and a test
// there keeps the two equal.
const (
	DefaultTimeout    = 2 * time.Second
	DefaultStaleAfter = 1800 * time.Millisecond // RFC 8767 §5's client response timer
	DefaultMaxStale   = 72 * time.Hour
	DefaultMaxTTL     = 24 * time.Hour
	DefaultMaxNegTTL  = 3 * time.Hour
	DefaultMaxEntries = 100_000
	DefaultMaxBytes   = 64 << 20
	DefaultUDPSize    = 1232 // no IP fragmentation on common paths (DNS Flag Day 2020)
)

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Timeout, DefaultTimeout)
	def(&c.StaleAfter, DefaultStaleAfter)
	def(&c.MaxStale, DefaultMaxStale)
	def(&c.MaxTTL, DefaultMaxTTL)
	def(&c.MaxNegTTL, DefaultMaxNegTTL)
	def(&c.MeshTTL, 5*time.Second)
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.UDPSize == 0 {
		c.UDPSize = DefaultUDPSize
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Server answers DNS queries (Serve).
type Server struct {
	cfg    Config
	cache  *cache
	zones  []zone // longest first; the last is "." (cfg.Upstreams)
	mesh   atomic.Pointer[meshSet]
	flight singleflight.Group
	m      *Metrics

	// loading is closed when the cache file's load ends; nil when none
	// is on.
	loading atomic.Pointer[chan struct{}]

	failpoint framelog.Failpoint // fails the cache file's writes on purpose (tests)
	onLoad    func()             // called after each entry read from the cache file (tests)
	onMiss    func()             // called when the full path misses the cache, once it has asked for the upstream's answer (tests)
}

// zone is a suffix (lower case, fully qualified) and its resolvers.
type zone struct {
	name      string
	upstreams []string
}

// meshSet is the mesh's names (lower case, fully qualified; "*." prefixes
// cover every name below) and the addresses they resolve to.
type meshSet struct {
	names     map[string]bool
	wildcards []string // ".example.mesh." for "*.example.mesh."
	v4, v6    []netip.Addr
}

// New returns a server with cfg.
func New(cfg Config) *Server {
	cfg.defaults()
	s := &Server{cfg: cfg, cache: newCache(cfg.MaxEntries, cfg.MaxBytes, cfg.MaxStale), m: cfg.Metrics}
	for name, ups := range cfg.Zones {
		if name = strings.ToLower(dns.Fqdn(name)); name != "." {
			s.zones = append(s.zones, zone{name, ups})
		}
	}
	slices.SortFunc(s.zones, func(a, b zone) int { return cmp.Or(len(b.name)-len(a.name), strings.Compare(a.name, b.name)) })
	s.zones = append(s.zones, zone{".", cfg.Upstreams})
	if ups, ok := cfg.Zones["."]; ok {
		s.zones[len(s.zones)-1].upstreams = ups
	}
	s.mesh.Store(&meshSet{})
	return s
}

// SetMesh makes hosts the mesh's names, answered with addrs. It takes
// effect for the next query.
func (s *Server) SetMesh(hosts []string, addrs []netip.Addr) {
	ms := &meshSet{names: map[string]bool{}}
	for _, h := range hosts {
		h = strings.ToLower(dns.Fqdn(h))
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			ms.wildcards = append(ms.wildcards, "."+rest)
		} else {
			ms.names[h] = true
		}
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			ms.v4 = append(ms.v4, a.Unmap())
		} else {
			ms.v6 = append(ms.v6, a)
		}
	}
	s.mesh.Store(ms)
}

// Sources of an answer, for the metrics.
const (
	SourceMesh     = "mesh"
	SourceCache    = "cache"
	SourceStale    = "stale"
	SourceUpstream = "upstream"
	SourceError    = "error"
)

// respond answers req on the full path, truncated to the client's UDP
// size over UDP, and counts it.
func (s *Server) respond(req *dns.Msg, udp bool) *dns.Msg {
	resp, source := s.answer(req)
	if udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(min(max(opt.UDPSize(), dns.MinMsgSize), s.cfg.UDPSize))
		}
		resp.Truncate(size)
	}
	if s.m != nil && len(req.Question) == 1 {
		s.m.observe(req.Question[0].Qtype, resp.Rcode, source)
	}
	return resp
}

// answer makes the reply to req and says where it came from.
func (s *Server) answer(req *dns.Msg) (*dns.Msg, string) {
	resp := new(dns.Msg)
	switch {
	case req.Response || req.Opcode != dns.OpcodeQuery:
		resp.SetRcode(req, dns.RcodeNotImplemented)
		return resp, SourceError
	case len(req.Question) != 1:
		resp.SetRcode(req, dns.RcodeFormatError)
		return resp, SourceError
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	opt := req.IsEdns0()
	do := opt != nil && opt.Do()
	if ms := s.mesh.Load(); q.Qclass == dns.ClassINET && ms.has([]byte(name)) {
		return s.meshAnswer(req, ms, opt), SourceMesh
	}
	key := cacheKey(q, do)
	// Whether a load is on, taken before the lookup: a load that ends
	// between a miss and a later look would seem never to have been on,
	// and the name it put in the cache meanwhile would not be looked for.
	loading := s.loadingDone()
	h, cached := s.cache.get([]byte(key), s.cfg.Clock.Now(), nil)
	if cached && h.fresh() {
		if r := s.fromEntry(req, opt, h.msg, h.ttlLeft(), false); r != nil {
			return r, SourceCache
		}
	}
	// Missing or expired: ask upstream; with a stale entry, wait only
	// StaleAfter for it.
	ch := s.flight.DoChan(key, func() (any, error) { return s.resolve(q, do, key) })
	if !cached && s.onMiss != nil {
		s.onMiss()
	}
	var res singleflight.Result
	got := false // res is ch's
	if loading != nil && !cached {
		// The cache file was loading at the miss, and may hold the name
		// further on: whichever comes first of the upstream's answer and
		// the end of the load, and the end of the load if the upstream
		// fails.
		select {
		case res = <-ch:
			got = true
			if res.Err != nil {
				<-loading
			}
		case <-loading:
		}
		if !got || res.Err != nil {
			h, cached = s.cache.get([]byte(key), s.cfg.Clock.Now(), nil)
			if cached && h.fresh() {
				if r := s.fromEntry(req, opt, h.msg, h.ttlLeft(), false); r != nil {
					return r, SourceCache
				}
			}
		}
	}
	if !got {
		var timer <-chan time.Time
		if cached {
			t := s.cfg.Clock.NewTimer(s.cfg.StaleAfter)
			defer t.Stop()
			timer = t.C()
		}
		select {
		case res = <-ch:
			got = true
		case <-timer:
		}
	}
	if got && res.Err == nil {
		// Shared with the other clients that asked: a copy each.
		return s.reply(req, res.Val.(*dns.Msg).Copy(), opt, false), SourceUpstream
	}
	if cached {
		if r := s.fromEntry(req, opt, h.msg, staleTTL, true); r != nil {
			return r, SourceStale
		}
	}
	resp.SetRcode(req, dns.RcodeServerFailure)
	resp.RecursionAvailable = true
	s.setOPT(resp, opt, false)
	return resp, SourceError
}

// meshAnswer answers a mesh name with the proxy's addresses.
func (s *Server) meshAnswer(req *dns.Msg, ms *meshSet, opt *dns.OPT) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative, resp.RecursionAvailable = true, true
	q := req.Question[0]
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: uint32(s.cfg.MeshTTL / time.Second)}
	}
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		for _, a := range ms.v4 {
			resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
		}
	}
	if q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY {
		for _, a := range ms.v6 {
			resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	s.setOPT(resp, opt, false)
	return resp
}

// fromEntry makes the reply to req from a cached message, with every TTL
// set to ttl; a stale one carries Extended DNS Error 3.
func (s *Server) fromEntry(req *dns.Msg, opt *dns.OPT, msg []byte, ttl uint32, stale bool) *dns.Msg {
	r := new(dns.Msg)
	if r.Unpack(msg) != nil {
		return nil
	}
	setTTLs(r, ttl)
	return s.reply(req, r, opt, stale)
}

// reply turns r, an upstream's answer (without OPT), into the reply to
// req: its ID and question, its rcode kept, not authoritative.
func (s *Server) reply(req, r *dns.Msg, opt *dns.OPT, stale bool) *dns.Msg {
	rcode := r.Rcode
	r.SetReply(req)
	r.Rcode = rcode
	r.Authoritative, r.RecursionAvailable = false, true
	s.setOPT(r, opt, stale)
	return r
}

// setOPT gives r, which has none, an OPT record when the client sent one:
// the server's UDP size, the client's DO bit, and the Stale Answer error
// when stale.
func (s *Server) setOPT(r *dns.Msg, clientOPT *dns.OPT, stale bool) {
	if clientOPT == nil {
		return
	}
	r.SetEdns0(s.cfg.UDPSize, clientOPT.Do())
	if stale {
		o := r.IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer})
	}
}

// resolve asks the question's upstreams in turn and caches what is
// cacheable. A SERVFAIL or REFUSED is a failure: the next upstream is
// tried, and in the end a stale answer is preferred to it.
func (s *Server) resolve(q dns.Question, do bool, key string) (*dns.Msg, error) {
	ups := s.upstreamsFor(q.Name)
	if len(ups) == 0 {
		return nil, errors.New("localdns: no upstream resolvers")
	}
	var errs []error
	for _, up := range ups {
		m := new(dns.Msg)
		m.SetQuestion(q.Name, q.Qtype)
		m.Question[0].Qclass = q.Qclass
		m.RecursionDesired = true
		m.SetEdns0(s.cfg.UDPSize, do)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		start := time.Now()
		r, err := exchange(ctx, up, m, int(s.cfg.UDPSize), func() {
			if s.m != nil {
				s.m.spoofed.Inc()
			}
		})
		cancel()
		if s.m != nil {
			s.m.upstreamSeconds.Observe(time.Since(start).Seconds())
		}
		if err == nil && (r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused) {
			err = fmt.Errorf("localdns: %s answered %s", up, dns.RcodeToString[r.Rcode])
		}
		if err != nil {
			if s.m != nil {
				s.m.upstreamFailures.Inc()
			}
			s.cfg.Log.Debug("upstream resolver failed", "upstream", up, "name", q.Name, "err", err)
			errs = append(errs, err)
			continue
		}
		r.Extra = dropOPT(r.Extra)
		if ttl, ok := answerTTL(r, s.cfg.MinTTL, s.cfg.MaxTTL, s.cfg.MaxNegTTL); ok {
			r.Id = 0
			setTTLs(r, ttl)
			if packed, err := r.Pack(); err == nil {
				s.cache.put(key, packed, s.cfg.Clock.Now(), ttl)
			}
		}
		return r, nil
	}
	return nil, errors.Join(errs...)
}

func dropOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// upstreamsFor returns the resolvers for name: its longest matching zone's,
// else the default ones.
func (s *Server) upstreamsFor(name string) []string {
	name = strings.ToLower(name)
	for _, z := range s.zones {
		if z.name == "." || name == z.name || strings.HasSuffix(name, "."+z.name) {
			return z.upstreams
		}
	}
	return nil
}

// Listen binds addr over UDP and TCP, on one port. With port 0 the port
// is the one the UDP socket got; when TCP finds it taken, both are tried
// again on another.
func Listen(addr string) (*net.UDPConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: %w", err)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: %w", err)
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenUDP("udp", ua)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: %w", err)
		}
		setReadBuffer(pc) // from the first query on, not from Serve on
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || attempt == 20 {
			return nil, nil, fmt.Errorf("dns: %w", err)
		}
	}
}

// Serve serves on conn (UDP) and ln (TCP) until ctx ends, and closes
// both.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn, ln net.Listener) error {
	started := make(chan struct{})
	tcp := &dns.Server{Listener: ln, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) { w.WriteMsg(s.respond(req, false)) })}
	udpDone, tcpDone := make(chan error, 1), make(chan error, 1)
	go func() { udpDone <- s.serveUDP(conn) }()
	go func() { tcpDone <- tcp.ActivateAndServe() }()
	select { // Shutdown fails on a server that has not started
	case <-started:
	case err := <-tcpDone:
		conn.Close()
		<-udpDone
		return err
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-udpDone:
		udpDone <- err
	case err = <-tcpDone:
		tcpDone <- err
	}
	conn.Close()
	tcp.Shutdown()
	<-udpDone
	<-tcpDone
	return err
}
