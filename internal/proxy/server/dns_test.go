package server

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/misaki-io/misaki/internal/proxy/config"
)

// Without dns.upstreams, resolv.conf's nameservers are used, less the
// proxy's own DNS addresses: a pod whose resolv.conf names the proxy by the
// pod's address must not send the proxy's queries back to itself.
func TestDNSUpstreamsLeaveOutTheProxy(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(rc, []byte("nameserver 10.1.2.3\nnameserver 10.96.0.10\nsearch svc.cluster.local\n"), 0o644)
	s := &Server{cfg: &config.Config{DNS: config.DNS{Listen: "0.0.0.0:53", Addresses: []string{"10.1.2.3"}, ResolvConf: rc}}}
	ups, err := s.dnsUpstreams()
	if err != nil || !slices.Equal(ups, []string{"10.96.0.10:53"}) {
		t.Fatalf("upstreams %v, %v; want only 10.96.0.10:53", ups, err)
	}
	s.cfg.DNS.Upstreams = []string{"10.0.0.2"}
	if ups, _ := s.dnsUpstreams(); !slices.Equal(ups, []string{"10.0.0.2:53"}) {
		t.Fatalf("configured upstreams: %v", ups)
	}
}
