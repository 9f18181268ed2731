package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/miekg/dns"
)

// DNS configures the proxy's DNS server: mesh names answered with the
// proxy's address, every other name forwarded through a cache that serves
// stale answers while offline and is kept on disk across restarts.
type DNS struct {
	// Listen is where apps send queries, UDP and TCP ("127.0.0.1:53").
	// Empty: no DNS server.
	Listen string `yaml:"listen"`
	// Addresses are what mesh names (route hosts) resolve to. Default: the
	// IP of listen (the mesh listener), which must then not be 0.0.0.0.
	Addresses []string `yaml:"addresses"`
	// Upstreams are the resolvers for other names ("10.96.0.10" or
	// "10.96.0.10:53"). Default: the nameservers of resolvConf, without
	// the proxy's own DNS address.
	Upstreams []string `yaml:"upstreams"`
	// ResolvConf is read for the default upstreams. Default
	// /etc/resolv.conf.
	ResolvConf string `yaml:"resolvConf"`
	// Zones send names under a zone to its own resolvers, such as
	// {cluster.local: [10.96.0.10]}; the longest matching zone wins.
	Zones map[string][]string `yaml:"zones"`
	// Timeout bounds one query to one upstream. Default 2s.
	Timeout Duration `yaml:"timeout"`
	// StaleAfter is how long a client waits for a refresh of an expired
	// answer before it gets the stale one (RFC 8767). Default 1.8s.
	StaleAfter Duration `yaml:"staleAfter"`
	// MaxStale is how long past its TTL an answer may still be served.
	// Default 72h.
	MaxStale Duration `yaml:"maxStale"`
	// MinTTL and MaxTTL bound how long answers are cached; MaxNegativeTTL
	// bounds NXDOMAIN and NODATA answers (RFC 2308). Defaults 0, 24h, 3h.
	MinTTL         Duration `yaml:"minTTL"`
	MaxTTL         Duration `yaml:"maxTTL"`
	MaxNegativeTTL Duration `yaml:"maxNegativeTTL"`
	// MaxEntries and MaxBytes bound the cache. Defaults 100000 and 64MiB.
	MaxEntries int      `yaml:"maxEntries"`
	MaxBytes   ByteSize `yaml:"maxBytes"`
	// UDPSize is the EDNS0 UDP payload size offered and honoured at most.
	// Default 1232.
	UDPSize int `yaml:"udpSize"`
	// CacheFile keeps the cache across restarts. Default dns-cache in
	// spool.dir when that is set; otherwise the cache is not kept.
	CacheFile string `yaml:"cacheFile"`
	// SaveInterval is how often the cache file is written (and at
	// shutdown). Default 1m.
	SaveInterval Duration `yaml:"saveInterval"`
}

// The defaults of the dns block. The DNS server (internal/proxy/localdns)
// fills a zero field of its own Config with the same values: each package
// states them, so that the configuration model does not import the server
// (and its cache, metrics and sockets) nor the server the configuration
// model, and TestDNSDefaultsAreTheServers keeps the two lists equal.
const (
	DefaultDNSResolvConf     = "/etc/resolv.conf"
	DefaultDNSTimeout        = 2 * time.Second
	DefaultDNSStaleAfter     = 1800 * time.Millisecond // RFC 8767's client response timer
	DefaultDNSMaxStale       = 72 * time.Hour
	DefaultDNSMaxTTL         = 24 * time.Hour
	DefaultDNSMaxNegativeTTL = 3 * time.Hour
	DefaultDNSMaxEntries     = 100_000
	DefaultDNSMaxBytes       = 64 << 20
	DefaultDNSUDPSize        = 1232 // no IP fragmentation on common paths (DNS Flag Day 2020)
	DefaultDNSSaveInterval   = time.Minute
)

// setDefaults fills the dns block when the DNS server is on: the
// addresses default to the mesh listener's (listen), the cache file to
// dns-cache in the spool's directory.
func (d *DNS) setDefaults(listen, spoolDir string) {
	if d.Listen == "" {
		return
	}
	setDefault(&d.ResolvConf, DefaultDNSResolvConf)
	setDefault(&d.Timeout, Duration(DefaultDNSTimeout))
	setDefault(&d.StaleAfter, Duration(DefaultDNSStaleAfter))
	setDefault(&d.MaxStale, Duration(DefaultDNSMaxStale))
	setDefault(&d.MaxTTL, Duration(DefaultDNSMaxTTL))
	setDefault(&d.MaxNegativeTTL, Duration(DefaultDNSMaxNegativeTTL))
	setDefault(&d.MaxEntries, DefaultDNSMaxEntries)
	setDefault(&d.MaxBytes, DefaultDNSMaxBytes)
	setDefault(&d.UDPSize, DefaultDNSUDPSize)
	setDefault(&d.SaveInterval, Duration(DefaultDNSSaveInterval))
	if d.CacheFile == "" && spoolDir != "" {
		d.CacheFile = filepath.Join(spoolDir, "dns-cache")
	}
	if len(d.Addresses) == 0 {
		if host, _, err := net.SplitHostPort(listen); err == nil {
			d.Addresses = []string{host}
		}
	}
}

// validate checks the dns block, when the DNS server is on.
func (d DNS) validate(bad report) {
	if d.Listen == "" {
		return
	}
	if _, _, err := net.SplitHostPort(d.Listen); err != nil {
		bad("dns.listen", "%q is not host:port; write it like 127.0.0.1:53", d.Listen)
	}
	for i, a := range d.Addresses {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
			bad(fmt.Sprintf("dns.addresses[%d]", i), "%q is not an IP address", a)
		case ip.IsUnspecified():
			bad(fmt.Sprintf("dns.addresses[%d]", i), "%s is where the mesh listener binds, not an address apps can reach; set dns.addresses to the pod's address, like 127.0.0.1", a)
		}
	}
	self := d.Self()
	checkServers := func(field string, servers []string) {
		for i, u := range servers {
			if n, err := UpstreamResolver(u); err != nil {
				bad(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			} else if self[n] {
				bad(fmt.Sprintf("%s[%d]", field, i), "%s is this proxy's own DNS address: queries would loop", u)
			}
		}
	}
	checkServers("dns.upstreams", d.Upstreams)
	for zone, servers := range d.Zones {
		if _, ok := dns.IsDomainName(zone); !ok || zone == "" {
			bad("dns.zones", "%q is not a domain name", zone)
		}
		if len(servers) == 0 {
			bad("dns.zones."+zone, "lists no resolvers")
		}
		checkServers("dns.zones."+zone, servers)
	}
	for _, dd := range []durationField{
		{"dns.timeout", d.Timeout}, {"dns.staleAfter", d.StaleAfter}, {"dns.maxStale", d.MaxStale},
		{"dns.maxTTL", d.MaxTTL}, {"dns.maxNegativeTTL", d.MaxNegativeTTL}, {"dns.saveInterval", d.SaveInterval},
	} {
		if dd.v <= 0 {
			bad(dd.name, "must be positive")
		}
	}
	if d.MinTTL < 0 || d.MinTTL > d.MaxTTL {
		bad("dns.minTTL", "must be between 0 and dns.maxTTL (%s)", time.Duration(d.MaxTTL))
	}
	if d.MaxEntries < 1 {
		bad("dns.maxEntries", "must be at least 1")
	}
	if d.MaxBytes < 64<<10 {
		bad("dns.maxBytes", "%d bytes is too small for a cache; set 64KiB or more", d.MaxBytes)
	}
	if d.UDPSize < 512 || d.UDPSize > 65535 {
		bad("dns.udpSize", "%d must be between 512 and 65535 (1232 avoids fragmentation)", d.UDPSize)
	}
}

// Self returns the addresses (IP:port) the proxy's own DNS server answers
// on, which must never be its upstream: dns.listen, and each of
// dns.addresses on its port (the pod's address, when it listens on all).
func (d DNS) Self() map[string]bool {
	self := map[string]bool{}
	ap, err := netip.ParseAddrPort(d.Listen)
	if err != nil {
		return self
	}
	self[ap.String()] = true
	for _, a := range d.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			self[netip.AddrPortFrom(ip, ap.Port()).String()] = true
		}
	}
	return self
}

// UpstreamResolver returns a resolver address as host:port, with port 53
// when s is a bare IP address.
func UpstreamResolver(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not an IP address or IP:port; write it like 10.96.0.10 or 10.96.0.10:53", s)
	}
	return ap.String(), nil
}
