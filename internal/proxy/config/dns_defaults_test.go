package config_test

import (
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/localdns"
)

// The dns block's defaults are the DNS server's own, stated in both
// packages so that neither imports the other.
func TestDNSDefaultsAreTheServers(t *testing.T) {
	for _, d := range []struct {
		name        string
		config, dns any
	}{
		{"timeout", time.Duration(config.DefaultDNSTimeout), localdns.DefaultTimeout},
		{"staleAfter", time.Duration(config.DefaultDNSStaleAfter), localdns.DefaultStaleAfter},
		{"maxStale", time.Duration(config.DefaultDNSMaxStale), localdns.DefaultMaxStale},
		{"maxTTL", time.Duration(config.DefaultDNSMaxTTL), localdns.DefaultMaxTTL},
		{"maxNegativeTTL", time.Duration(config.DefaultDNSMaxNegativeTTL), localdns.DefaultMaxNegTTL},
		{"maxEntries", config.DefaultDNSMaxEntries, localdns.DefaultMaxEntries},
		{"maxBytes", config.DefaultDNSMaxBytes, localdns.DefaultMaxBytes},
		{"udpSize", config.DefaultDNSUDPSize, localdns.DefaultUDPSize},
	} {
		if d.config != d.dns {
			t.Errorf("dns.%s defaults to %v here and %v in the DNS server", d.name, d.config, d.dns)
		}
	}
}
