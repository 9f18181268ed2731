// Command dnsbench is the authoritative server behind bench/dns.sh: the
// upstream every resolver under test forwards to.
//
// It answers A queries for any name below -zone with one address derived
// from the name, TTL -ttl; other types below the zone get NODATA and names
// outside it NXDOMAIN, both with an SOA so resolvers cache them. With
// -names N it instead writes a dnsperf query file of N names (n0.<zone> A
// ... n<N-1>.<zone> A) to stdout and exits. With -probe ADDR it asks ADDR
// for -name every 2 ms until it gets an answer with records, then prints
// how long that took and exits.
//
//	go run ./bench/dnsbench -listen 127.0.0.1:5399
//	go run ./bench/dnsbench -names 100000 >queries.txt
//	go run ./bench/dnsbench -probe 127.0.0.1:5300 -name n0.bench.test.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5399", "UDP and TCP address to serve on")
	zone := flag.String("zone", "bench.test.", "the zone answered")
	ttl := flag.Uint("ttl", 86400, "TTL of the answers")
	names := flag.Int("names", 0, "write a dnsperf query file of this many names and exit")
	probe := flag.String("probe", "", "ask this server for -name until it answers, print the time taken, and exit")
	name := flag.String("name", "n0.bench.test.", "the name -probe asks for")
	flag.Parse()
	z := dns.Fqdn(*zone)
	if *probe != "" {
		start := time.Now()
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(*name), dns.TypeA)
		c := &dns.Client{Timeout: 50 * time.Millisecond}
		for time.Since(start) < 30*time.Second {
			if r, _, err := c.Exchange(m, *probe); err == nil && len(r.Answer) > 0 {
				fmt.Printf("answered after %v\n", time.Since(start).Round(time.Millisecond))
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		log.Fatalf("dnsbench: %s did not answer %s within 30 s", *probe, *name)
	}
	if *names > 0 {
		w := bufio.NewWriter(os.Stdout)
		for i := range *names {
			fmt.Fprintf(w, "n%d.%s A\n", i, z)
		}
		if err := w.Flush(); err != nil {
			log.Fatal(err)
		}
		return
	}
	soa := &dns.SOA{
		Hdr: dns.RR_Header{Name: z, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: uint32(*ttl)},
		Ns:  "ns." + z, Mbox: "hostmaster." + z, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: uint32(*ttl),
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		switch {
		case !dns.IsSubDomain(z, q.Name):
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		case q.Qtype == dns.TypeA:
			f := fnv.New32a()
			f.Write([]byte(q.Name))
			s := f.Sum32()
			m.Answer = []dns.RR{&dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: uint32(*ttl)},
				A:   net.IPv4(10, byte(s>>16), byte(s>>8), byte(s)),
			}}
		default:
			m.Ns = []dns.RR{soa}
		}
		_ = w.WriteMsg(m)
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		log.Fatal(err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go func() { log.Fatal(udp.ActivateAndServe()) }()
	go func() { log.Fatal(tcp.ActivateAndServe()) }()
	log.Printf("dnsbench: serving %s on %s", z, pc.LocalAddr())
	<-ctx.Done()
	_ = udp.Shutdown()
	_ = tcp.Shutdown()
}
