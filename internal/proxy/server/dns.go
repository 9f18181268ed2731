package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/localdns"
)

// listenDNS binds the DNS server's UDP and TCP sockets and builds it, when
// dns.listen is set.
func (s *Server) listenDNS() error {
	d := s.cfg.DNS
	if d.Listen == "" {
		return nil
	}
	ups, err := s.dnsUpstreams()
	if err != nil {
		return err
	}
	if len(ups) == 0 {
		s.log.Warn("dns: no upstream resolvers (dns.upstreams is empty and resolv.conf names none but this proxy); only mesh names and cached answers resolve", "resolvConf", d.ResolvConf)
	}
	zones := map[string][]string{}
	for zone, servers := range d.Zones {
		for _, sv := range servers {
			n, _ := config.UpstreamResolver(sv) // validated
			zones[zone] = append(zones[zone], n)
		}
	}
	var addrs []netip.Addr
	for _, a := range d.Addresses {
		addrs = append(addrs, netip.MustParseAddr(a)) // validated
	}
	s.dns = localdns.New(localdns.Config{
		Upstreams: ups, Zones: zones,
		Timeout: d.Timeout.D(), StaleAfter: d.StaleAfter.D(), MaxStale: d.MaxStale.D(),
		MinTTL: d.MinTTL.D(), MaxTTL: d.MaxTTL.D(), MaxNegTTL: d.MaxNegativeTTL.D(),
		MaxEntries: d.MaxEntries, MaxBytes: int64(d.MaxBytes), UDPSize: uint16(d.UDPSize),
		Clock: s.clock, Log: s.log.With("component", "dns"), Metrics: localdns.NewMetrics(s.reg),
	})
	s.dns.Bind(s.reg)
	s.dnsAddrs = addrs
	s.setMesh(s.set.Load())
	s.dnsPC, s.dnsLn, err = s.listenDNSSockets(d.Listen)
	return err
}

// dnsUpstreams returns dns.upstreams, or else resolv.conf's nameservers
// other than this proxy's own DNS addresses.
func (s *Server) dnsUpstreams() ([]string, error) {
	d := s.cfg.DNS
	var ups []string
	for _, u := range d.Upstreams {
		n, _ := config.UpstreamResolver(u) // validated
		ups = append(ups, n)
	}
	if len(ups) > 0 {
		return ups, nil
	}
	rc, err := dns.ClientConfigFromFile(d.ResolvConf)
	if err != nil {
		return nil, fmt.Errorf("dns: reading %s for upstream resolvers (or set dns.upstreams): %w", d.ResolvConf, err)
	}
	self := d.Self()
	for _, sv := range rc.Servers {
		n, err := config.UpstreamResolver(net.JoinHostPort(sv, rc.Port))
		if err != nil || self[n] {
			continue
		}
		ups = append(ups, n)
	}
	return ups, nil
}

// DNSAddr is the bound DNS address (after Listen), or "" without one.
func (s *Server) DNSAddr() string {
	if s.dnsPC == nil {
		return ""
	}
	return s.dnsPC.LocalAddr().String()
}

// runDNS serves DNS until ctx ends. It serves from the start, while the
// cache is loaded from its file (localdns.StartLoad: queries meanwhile
// are answered, not held until the end); the cache is written to the
// file every dns.saveInterval once loaded, and once more at the end.
func (s *Server) runDNS(ctx context.Context) error {
	file := s.cfg.DNS.CacheFile
	saved := s.dns.Generation() // the file holds what is loaded from it
	var wait func() (int, error)
	start := time.Now()
	if file != "" {
		wait = s.dns.StartLoad(file) // before the first query is read
	}
	done := make(chan error, 1)
	go func() { done <- s.dns.Serve(ctx, s.dnsPC, s.dnsLn) }()
	s.log.Info("dns: listening", "addr", s.DNSAddr())
	if wait != nil {
		// Not saved before the load is over: the file would lose what
		// is not loaded yet.
		n, err := wait()
		if err != nil {
			s.log.Warn("dns: the cache file could not be read; starting with what was read of it", "file", file, "entries", n, "err", err)
		} else {
			s.log.Info("dns: cache loaded", "file", file, "entries", n, "took", time.Since(start).Round(time.Microsecond))
		}
	}
	save := func() {
		// An unchanged cache is not written again: a vehicle's flash wears.
		gen := s.dns.Generation()
		if file == "" || gen == saved {
			return
		}
		if n, err := s.dns.Save(file); err != nil {
			s.log.Warn("dns: saving the cache", "file", file, "err", err)
		} else {
			saved = gen
			s.log.Debug("dns: cache saved", "file", file, "entries", n)
		}
	}
	t := time.NewTicker(s.cfg.DNS.SaveInterval.D())
	defer t.Stop()
	for {
		select {
		case err := <-done:
			save()
			return err
		case <-t.C:
			save()
		}
	}
}

// setMesh makes the DNS server answer the set's hosts as mesh names.
func (s *Server) setMesh(set *routeSet) {
	if s.dns == nil {
		return
	}
	var hosts []string
	for _, rt := range set.routes {
		hosts = append(hosts, rt.cfg.Hosts...)
	}
	s.dns.SetMesh(hosts, s.dnsAddrs)
}
