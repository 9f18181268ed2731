package demo

import (
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// The cluster's resolver in the demo: it knows one external name, with a
// short TTL, so that an answer the proxy gives offline is a stale one.
const (
	externalName = "maps.example.com"
	externalIP   = "198.51.100.7"
	externalTTL  = 2
)

// resolver is a DNS server on UDP and TCP, run by the orchestrator.
type resolver struct {
	udp, tcp *dns.Server
	once     sync.Once
}

// startResolver serves on addr until stop.
func startResolver(addr string) (*resolver, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo: resolver: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("demo: resolver: %w", err)
	}
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns.example.com.", Mbox: "hostmaster.example.com.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		switch q := r.Question[0]; {
		case !strings.EqualFold(q.Name, externalName+"."):
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		case q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: externalTTL}, A: net.ParseIP(externalIP)}}
		default:
			m.Ns = []dns.RR{soa}
		}
		w.WriteMsg(m)
	})
	r := &resolver{udp: &dns.Server{PacketConn: pc, Handler: h}, tcp: &dns.Server{Listener: ln, Handler: h}}
	started := make(chan struct{}, 2)
	r.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	r.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go r.udp.ActivateAndServe()
	go r.tcp.ActivateAndServe()
	<-started
	<-started
	return r, nil
}

func (r *resolver) stop() {
	r.once.Do(func() { r.udp.Shutdown(); r.tcp.Shutdown() })
}
