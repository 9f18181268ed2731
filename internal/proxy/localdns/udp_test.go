package localdns

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// sameAnswer reports how the fast path's answer differs from the full
// path's for req, or "" when they agree. The fast path keeps the
// upstream's name compression and the full path packs without it, so
// the two are compared unpacked.
func sameAnswer(s *Server, req *dns.Msg, fast []byte) string {
	full, err := s.respond(req.Copy(), true).Pack()
	if err != nil {
		return "the full path's answer does not pack: " + err.Error()
	}
	a, b := new(dns.Msg), new(dns.Msg)
	if err := a.Unpack(fast); err != nil {
		return "the fast path's answer does not unpack: " + err.Error()
	}
	if err := b.Unpack(full); err != nil {
		return "the full path's answer does not unpack: " + err.Error()
	}
	if a.String() != b.String() {
		return fmt.Sprintf("fast path:\n%s\nfull path:\n%s", a, b)
	}
	return ""
}

// TestFastPathAsFullPath asks mesh names and cached names, in mixed
// case, with and without EDNS0, DO, CD and RD, and checks that the fast
// path answers each one exactly as the full path does, or leaves it to
// the full path.
func TestFastPathAsFullPath(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		m := new(dns.Msg)
		m.SetReply(r)
		m.Compress = true
		switch {
		case strings.HasPrefix(q.Name, "big"):
			for i := range 60 { // about 1,000 bytes: over 512, under 1,232
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, byte(i))})
			}
		case q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{
				&dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300}, Target: "target." + q.Name},
				&dns.A{Hdr: dns.RR_Header{Name: "target." + q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 200}, A: net.IPv4(192, 0, 2, 1)},
			}
			m.AuthenticatedData = r.CheckingDisabled
		default:
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300}, Ns: "ns.example.", Mbox: "h.example.", Serial: 1, Minttl: 60}}
		}
		w.WriteMsg(m)
	})
	clk := newClock()
	s := New(Config{Upstreams: []string{up.addr}, Clock: clk})
	s.SetMesh([]string{"api.mesh", "*.svc.mesh"}, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")})
	names := []string{"www.example.", "WwW.ExAmPlE.", "big.example.", "a-b_c.example.", "api.mesh.", "API.Mesh.", "x.svc.mesh.", "y.z.SVC.mesh.", "svc.mesh."}
	types := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeANY}
	var f fastPath
	answered, left := 0, 0
	for _, name := range names {
		for _, qt := range types {
			for flags := range 16 {
				req := new(dns.Msg)
				req.SetQuestion(name, qt)
				req.Id = uint16(rand.IntN(1 << 16))
				req.RecursionDesired = flags&1 != 0
				req.CheckingDisabled = flags&2 != 0
				if flags&4 != 0 {
					req.SetEdns0(uint16(512+flags*100), flags&8 != 0)
				}
				// Once through the full path, so that the answer is cached.
				s.respond(req.Copy(), true)
				b, _ := req.Pack()
				out, ok := s.fast(&f, b, nil)
				if !ok {
					left++
					continue
				}
				answered++
				if d := sameAnswer(s, req, out); d != "" {
					t.Fatalf("%s %s flags %b: %s", name, dns.TypeToString[qt], flags, d)
				}
				// With the clock on, the TTLs count down alike.
				clk.Advance(1500 * time.Millisecond)
				out, _ = s.fast(&f, b, nil)
				if d := sameAnswer(s, req, out); out != nil && d != "" {
					t.Fatalf("%s %s flags %b, later: %s", name, dns.TypeToString[qt], flags, d)
				}
			}
		}
	}
	// big.example. without EDNS0 is over 512 bytes: the full path
	// truncates it.
	t.Logf("the fast path answered %d queries and left %d", answered, left)
	if answered < len(names)*len(types)*16*3/4 || left == 0 {
		t.Fatalf("the fast path answered %d and left %d", answered, left)
	}
}

// The fast path leaves to the full path what it does not fully read.
func TestFastPathLeaves(t *testing.T) {
	s := New(Config{})
	s.SetMesh([]string{"api.mesh"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	var f fastPath
	mk := func(edit func(m *dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetQuestion("api.mesh.", dns.TypeA)
		edit(m)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, ok := s.fast(&f, mk(func(*dns.Msg) {}), nil); !ok {
		t.Fatal("a plain mesh query was not answered")
	}
	for what, b := range map[string][]byte{
		"a response":      mk(func(m *dns.Msg) { m.Response = true }),
		"an update":       mk(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }),
		"two questions":   mk(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }),
		"an escaped name": mk(func(m *dns.Msg) { m.Question[0].Name = `a\.b.mesh.` }),
		"EDNS version 1":  mk(func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }),
		"a record in extra": mk(func(m *dns.Msg) {
			m.Extra = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: 1}}}
		}),
		"trailing bytes": append(mk(func(*dns.Msg) {}), 0),
		"a cut question": mk(func(*dns.Msg) {})[:20],
		"the CH class":   mk(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }),
	} {
		if _, ok := s.fast(&f, b, nil); ok {
			t.Errorf("%s was answered on the fast path", what)
		}
	}
}

// TestCacheModel puts, gets and evicts at random and checks the cache
// against a plain model: the same entries, messages, and LRU order, also
// after a save and a load. Slots are freed and reused throughout.
func TestCacheModel(t *testing.T) {
	const maxEntries = 200
	c := newCache(maxEntries, 1<<30, time.Hour)
	type val struct {
		msg []byte
		ttl uint32
	}
	model := map[string]val{}
	var order []string // most recently used first
	touch := func(k string) {
		for i, o := range order {
			if o == k {
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
		order = append([]string{k}, order...)
	}
	now := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20_000 {
		k := fmt.Sprintf("k%d", r.IntN(400))
		if r.IntN(2) == 0 {
			msg := bytes.Repeat([]byte{byte(i)}, r.IntN(2000)) // many size classes
			c.put(k, msg, now, uint32(i))
			model[k] = val{msg, uint32(i)}
			touch(k)
			if len(order) > maxEntries {
				delete(model, order[maxEntries])
				order = order[:maxEntries]
			}
			continue
		}
		h, ok := c.get([]byte(k), now, nil)
		want, inModel := model[k]
		if ok != inModel {
			t.Fatalf("step %d: %s cached %v, model %v", i, k, ok, inModel)
		}
		if ok {
			if !bytes.Equal(h.msg, want.msg) || h.ttl != want.ttl {
				t.Fatalf("step %d: %s holds another answer", i, k)
			}
			touch(k)
		}
	}
	check := func(c *cache, when string) {
		t.Helper()
		var got []string
		c.each(func(key, msg []byte, _ int64, ttl uint32) error {
			if v := model[string(key)]; !bytes.Equal(msg, v.msg) || ttl != v.ttl {
				t.Fatalf("%s: %s holds another answer", when, key)
			}
			got = append(got, string(key))
			return nil
		})
		if strings.Join(got, " ") != strings.Join(order, " ") {
			t.Fatalf("%s: LRU order\n%v\nwant\n%v", when, got, order)
		}
	}
	check(c, "after the churn")
	s := New(Config{})
	s.cache = c
	file := filepath.Join(t.TempDir(), "dns-cache")
	if _, err := s.Save(file); err != nil {
		t.Fatal(err)
	}
	s2 := New(Config{})
	if n, err := s2.Load(file); err != nil || n != len(order) {
		t.Fatalf("loaded %d of %d: %v", n, len(order), err)
	}
	check(s2.cache, "after a save and a load")
}

// An upstream that ignores the EDNS0 size offered and sends a longer UDP
// reply: the question is asked again over TCP, and the client gets the
// whole answer.
func TestLongUDPReplyRetriedOverTCP(t *testing.T) {
	var tcp, udp atomic.Int64
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
			udp.Add(1)
		} else {
			tcp.Add(1)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		for i := range 120 { // about 1,900 bytes, more than the 1,232 offered
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i))})
		}
		w.WriteMsg(m)
	})
	s := New(Config{Upstreams: []string{up.addr}})
	addr := serve(t, s)
	m := new(dns.Msg)
	m.SetQuestion("big.example.", dns.TypeA)
	r, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 120 || udp.Load() != 1 || tcp.Load() != 1 {
		t.Fatalf("%d records; upstream asked over UDP %d and TCP %d times", len(r.Answer), udp.Load(), tcp.Load())
	}
}
