package localdns

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// upstream is a real DNS server on loopback (UDP and TCP on one port)
// that counts the queries it gets.
type upstream struct {
	addr    string
	queries atomic.Int64
	udp     *dns.Server
	tcp     *dns.Server
}

func startUpstream(t *testing.T, h func(w dns.ResponseWriter, r *dns.Msg)) *upstream {
	t.Helper()
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: pc.LocalAddr().String()}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { u.queries.Add(1); h(w, r) })
	u.udp = &dns.Server{PacketConn: pc, Handler: handler}
	u.tcp = &dns.Server{Listener: ln, Handler: handler}
	started := make(chan struct{}, 2)
	u.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	u.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go u.udp.ActivateAndServe()
	go u.tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(u.stop)
	return u
}

func (u *upstream) stop() { u.udp.Shutdown(); u.tcp.Shutdown() }

// answerA answers A queries with 192.0.2.1 at ttl, NXDOMAIN for names
// starting "nx.", with an SOA whose minimum is 30.
func answerA(ttl uint32) func(w dns.ResponseWriter, r *dns.Msg) {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		soa := &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300}, Ns: "ns.example.", Mbox: "h.example.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: 30}
		switch {
		case len(q.Name) > 3 && q.Name[:3] == "nx.":
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		case q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IPv4(192, 0, 2, 1)}}
		default:
			m.Ns = []dns.RR{soa}
		}
		w.WriteMsg(m)
	}
}

// serve starts s on loopback and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, pc, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String()
}

func query(t *testing.T, addr, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func ede(r *dns.Msg) (uint16, bool) {
	if o := r.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e.InfoCode, true
			}
		}
	}
	return 0, false
}

func newClock() *clock.Fake { return clock.NewFake(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)) }

func TestForwardCacheAndStale(t *testing.T) {
	up := startUpstream(t, answerA(60))
	clk := newClock()
	reg := prometheus.NewRegistry()
	s := New(Config{Upstreams: []string{up.addr}, Clock: clk, StaleAfter: 300 * time.Millisecond, Timeout: time.Second, MaxStale: time.Hour, Metrics: NewMetrics(reg)})
	s.Bind(reg)
	addr := serve(t, s)

	r := query(t, addr, "www.example.", dns.TypeA, true)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 60 {
		t.Fatalf("first answer: %v", r)
	}
	clk.Advance(20 * time.Second)
	r = query(t, addr, "WWW.example.", dns.TypeA, false) // names are case-insensitive
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 40 || up.queries.Load() != 1 {
		t.Fatalf("cached answer: TTL %v, upstream asked %d times", r.Answer, up.queries.Load())
	}
	if _, ok := ede(r); ok || r.IsEdns0() != nil {
		t.Fatal("an OPT record for a client that sent none")
	}

	// Negative answers are cached for the SOA's minimum (RFC 2308).
	if r := query(t, addr, "nx.example.", dns.TypeA, false); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Fatalf("NXDOMAIN: %v", r)
	}
	query(t, addr, "nx.example.", dns.TypeA, false)
	if up.queries.Load() != 2 {
		t.Fatalf("NXDOMAIN not cached: upstream asked %d times", up.queries.Load())
	}

	// The upstream goes away and the TTL passes: a stale answer, after the
	// client response timer, with TTL 30 and EDE 3.
	up.stop()
	clk.Advance(time.Minute)
	start := time.Now()
	r = query(t, addr, "www.example.", dns.TypeA, true)
	waited := time.Since(start)
	if code, ok := ede(r); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL || !ok || code != dns.ExtendedErrorCodeStaleAnswer {
		t.Fatalf("stale answer: %v", r)
	}
	if waited > 2*time.Second {
		t.Fatalf("the stale answer took %v", waited)
	}
	// Past the maximum stale age: SERVFAIL.
	clk.Advance(2 * time.Hour)
	if r := query(t, addr, "www.example.", dns.TypeA, true); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("past the maximum stale age: %v", r)
	}
	if got := testutil.ToFloat64(s.m.queries.WithLabelValues("A", "NOERROR", SourceStale)); got != 1 {
		t.Fatalf("stale answers counted %v", got)
	}
	if got := testutil.ToFloat64(s.m.queries.WithLabelValues("A", "NOERROR", SourceCache)); got != 1 {
		t.Fatalf("cache answers counted %v", got)
	}
}

func TestMeshNamesFollowSetMesh(t *testing.T) {
	up := startUpstream(t, answerA(60))
	s := New(Config{Upstreams: []string{up.addr}})
	addr := serve(t, s)
	s.SetMesh([]string{"telemetry.cloud.misaki", "*.svc.misaki"}, []netip.Addr{netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("fd00::7")})
	for _, name := range []string{"telemetry.cloud.misaki", "Telemetry.Cloud.Misaki", "a.b.svc.misaki"} {
		r := query(t, addr, name, dns.TypeA, false)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.7" || !r.Authoritative {
			t.Fatalf("%s A: %v", name, r)
		}
	}
	if r := query(t, addr, "telemetry.cloud.misaki", dns.TypeAAAA, false); len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "fd00::7" {
		t.Fatalf("AAAA: %v", r)
	}
	if r := query(t, addr, "telemetry.cloud.misaki", dns.TypeMX, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("MX of a mesh name: %v", r)
	}
	if up.queries.Load() != 0 {
		t.Fatal("a mesh name went upstream")
	}
	s.SetMesh([]string{"other.misaki"}, []netip.Addr{netip.MustParseAddr("127.0.0.8")})
	if r := query(t, addr, "other.misaki", dns.TypeA, false); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.8" {
		t.Fatalf("after SetMesh: %v", r)
	}
	query(t, addr, "telemetry.cloud.misaki", dns.TypeA, false)
	if up.queries.Load() != 1 {
		t.Fatal("a name no longer in the mesh was not forwarded")
	}
}

// Replies with the wrong ID, or from the wrong port, are ignored; the
// right one is taken.
func TestSpoofedRepliesIgnored(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	other, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			reply := func(id uint16, name string) []byte {
				m := new(dns.Msg)
				m.SetReply(q)
				m.Id = id
				m.Question[0].Name = name
				m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(10, 6, 6, 6)}}
				b, _ := m.Pack()
				return b
			}
			other.WriteTo(reply(q.Id, q.Question[0].Name), from) // wrong source port
			pc.WriteTo(reply(q.Id+1, q.Question[0].Name), from)  // wrong ID
			pc.WriteTo(reply(q.Id, "elsewhere.example."), from)  // wrong question
			good := reply(q.Id, q.Question[0].Name)
			m := new(dns.Msg)
			m.Unpack(good)
			m.Answer[0].(*dns.A).A = net.IPv4(192, 0, 2, 9)
			good, _ = m.Pack()
			pc.WriteTo(good, from)
		}
	}()
	reg := prometheus.NewRegistry()
	s := New(Config{Upstreams: []string{pc.LocalAddr().String()}, Metrics: NewMetrics(reg)})
	r := query(t, serve(t, s), "www.example.", dns.TypeA, false)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.9" {
		t.Fatalf("answer: %v", r)
	}
	if got := testutil.ToFloat64(s.m.spoofed); got != 2 {
		t.Fatalf("mismatched replies counted %v, want 2 (the wrong port's never reaches the socket)", got)
	}
}

func TestTruncatedRetriedOverTCP(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated = true
		} else {
			for i := range 100 {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(10, 0, byte(i/256), byte(i))})
			}
		}
		w.WriteMsg(m)
	})
	addr := serve(t, New(Config{Upstreams: []string{up.addr}}))
	m := new(dns.Msg)
	m.SetQuestion("big.example.", dns.TypeA)
	r, _, err := (&dns.Client{Net: "tcp"}).Exchange(m, addr)
	if err != nil || len(r.Answer) != 100 {
		t.Fatalf("over TCP: %v %v", r, err)
	}
	// Over UDP without EDNS0 the client gets what fits in 512 bytes, marked.
	if r := query(t, addr, "big.example.", dns.TypeA, false); !r.Truncated || len(r.Answer) >= 100 {
		t.Fatalf("over UDP: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}
}

// One outstanding upstream query per question, however many clients ask.
func TestOneQueryPerQuestion(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		<-release
		answerA(60)(w, r)
	})
	s := New(Config{Upstreams: []string{up.addr}, Timeout: 5 * time.Second})
	var asked atomic.Int64
	s.onMiss = func() { asked.Add(1) } // the client's query waits for the upstream's answer
	addr := serve(t, s)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); query(t, addr, "slow.example.", dns.TypeA, false) }()
	}
	// All 20 wait, the upstream held: none can be answered from the cache.
	waitfor.True(t, "all 20 queries waiting on the upstream", func() bool { return asked.Load() == 20 })
	close(release)
	wg.Wait()
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("upstream asked %d times", n)
	}
}

// The cache survives a restart: saved, loaded by a new server whose
// upstream is gone, and served stale.
func TestCacheSurvivesRestart(t *testing.T) {
	up := startUpstream(t, answerA(60))
	clk := newClock()
	path := filepath.Join(t.TempDir(), "spool", "dns-cache") // spool/ not made yet
	s := New(Config{Upstreams: []string{up.addr}, Clock: clk})
	addr := serve(t, s)
	for _, name := range []string{"a.example.", "b.example.", "nx.example."} {
		query(t, addr, name, dns.TypeA, false)
	}
	if n, err := s.Save(path); err != nil || n != 3 {
		t.Fatalf("Save: %d, %v", n, err)
	}
	up.stop()

	clk.Advance(10 * time.Hour) // a night powered off
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := dead.LocalAddr().String()
	dead.Close() // nothing listens there: queries are refused at once
	s2 := New(Config{Upstreams: []string{deadAddr}, Clock: clk, StaleAfter: 300 * time.Millisecond})
	if n, err := s2.Load(path); err != nil || n != 3 {
		t.Fatalf("Load: %d, %v", n, err)
	}
	addr2 := serve(t, s2)
	r := query(t, addr2, "b.example.", dns.TypeA, true)
	if code, ok := ede(r); len(r.Answer) != 1 || !ok || code != dns.ExtendedErrorCodeStaleAnswer {
		t.Fatalf("after a restart offline: %v", r)
	}
	if r := query(t, addr2, "nx.example.", dns.TypeA, false); r.Rcode != dns.RcodeNameError {
		t.Fatalf("a negative answer after a restart: %v", r)
	}
	if r := query(t, addr2, "never.example.", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("a name never resolved, offline: %v", r)
	}
	// Past the maximum stale age (72h by default) the file's entries are
	// not loaded.
	clk.Advance(73 * time.Hour)
	if n, err := New(Config{Clock: clk}).Load(path); err != nil || n != 0 {
		t.Fatalf("loaded %d entries past their maximum stale age", n)
	}
}

func TestCacheBounds(t *testing.T) {
	c := newCache(3, 1<<20, time.Hour)
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		c.put(k, make([]byte, 100), now, 60)
	}
	c.get([]byte("a"), now, nil) // a is now the most recently used
	c.put("d", make([]byte, 100), now, 60)
	if _, ok := c.get([]byte("b"), now, nil); ok {
		t.Fatal("the least recently used entry was kept past the entry bound")
	}
	if _, ok := c.get([]byte("a"), now, nil); !ok {
		t.Fatal("a recently used entry was evicted")
	}
	// Each entry takes a 128-byte slot (26 + 1 + 100 bytes).
	per := int64(128 + entryOverhead)
	small := newCache(1000, 3*per, time.Hour)
	for _, k := range []string{"a", "b", "c", "d"} {
		small.put(k, make([]byte, 100), now, 60)
	}
	if n, b := small.stats(); n != 3 || b != 3*per {
		t.Fatalf("byte bound: %d entries, %d bytes", n, b)
	}
	if _, ok := small.get([]byte("a"), now, nil); ok {
		t.Fatal("the oldest entry was kept past the byte bound")
	}
}

func FuzzServe(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.", dns.TypeA)
	m.SetEdns0(4096, true)
	b, _ := m.Pack()
	f.Add(b)
	m.SetQuestion("n1.bench.test.", dns.TypeA)
	b, _ = m.Pack()
	f.Add(b)
	s := New(Config{Upstreams: []string{"127.0.0.1:1"}, Timeout: time.Millisecond})
	s.SetMesh([]string{"mesh.misaki", "*.svc.misaki"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	fill(s, 10) // n0.bench.test. to n9.bench.test.
	var fp fastPath
	f.Fuzz(func(t *testing.T, b []byte) {
		out, fast := s.fast(&fp, b, nil) // first: it reads raw bytes
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			if fast {
				t.Fatal("the fast path answered a query that does not unpack")
			}
			return
		}
		if fast {
			if d := sameAnswer(s, req, out); d != "" {
				t.Fatal(d)
			}
		}
		resp, _ := s.answer(req)
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("an answer that does not pack: %v", err)
		}
	})
}

// An expired answer whose refresh hangs: the client gets the stale answer
// when the client response timer fires, and the refresh, once it comes,
// updates the cache.
func TestStaleAfterTheTimer(t *testing.T) {
	release := make(chan struct{})
	var first atomic.Bool
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if first.CompareAndSwap(false, true) {
			answerA(60)(w, r)
			return
		}
		<-release
		answerA(600)(w, r)
	})
	clk := newClock()
	s := New(Config{Upstreams: []string{up.addr}, Clock: clk, Timeout: 10 * time.Second})
	addr := serve(t, s)
	query(t, addr, "www.example.", dns.TypeA, true)
	clk.Advance(61 * time.Second)

	got := make(chan *dns.Msg)
	go func() { got <- query(t, addr, "www.example.", dns.TypeA, true) }()
	waitfor.True(t, "the client response timer armed", func() bool { return clk.Timers() > 0 })
	select { // the timer is the fake clock's: an answer now would come at once
	case r := <-got:
		t.Fatalf("answered before the timer fired: %v", r)
	case <-time.After(100 * time.Millisecond):
	}
	clk.Advance(1800 * time.Millisecond)
	r := <-got
	if code, ok := ede(r); len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL || !ok || code != dns.ExtendedErrorCodeStaleAnswer {
		t.Fatalf("after the timer: %v", r)
	}
	close(release)
	waitfor.NoError(t, 5*time.Second, "the refresh in the cache", func() error {
		r := query(t, addr, "www.example.", dns.TypeA, true)
		if _, stale := ede(r); stale || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 600 {
			return fmt.Errorf("answer %v", r)
		}
		return nil
	})
}

// The generation moves when answers are cached, not when they are served
// from the cache: an unchanged cache need not be saved again.
func TestGeneration(t *testing.T) {
	up := startUpstream(t, answerA(60))
	s := New(Config{Upstreams: []string{up.addr}})
	addr := serve(t, s)
	g0 := s.Generation()
	query(t, addr, "a.example.", dns.TypeA, false)
	g1 := s.Generation()
	query(t, addr, "a.example.", dns.TypeA, false)
	if g1 == g0 || s.Generation() != g1 {
		t.Fatalf("generations %d, %d, %d: want a change for the new answer and none for the cached one", g0, g1, s.Generation())
	}
}

// A bit flipped in the middle of the cache file costs the entry it lands
// in and no other.
func TestCacheFileBitFlipInTheMiddle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dns-cache")
	s := New(Config{Clock: newClock()})
	const n = 40
	fill(s, n)
	if got, err := s.Save(path); err != nil || got != n {
		t.Fatalf("Save: %d, %v", got, err)
	}
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 0x01
	os.WriteFile(path, b, 0o640)
	if got, err := New(Config{Clock: newClock()}).Load(path); err != nil || got != n-1 {
		t.Fatalf("Load after one flipped bit: %d entries, %v; want %d", got, err, n-1)
	}
}

// A crash can cut the cache file anywhere (a file system that does not
// order the rename after the data): every whole entry before the cut is
// loaded.
func TestCacheFileTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dns-cache")
	s := New(Config{Clock: newClock()})
	const n = 10
	fill(s, n)
	if _, err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	for cut := len(b) - 1; cut > len(b)-40; cut-- {
		os.WriteFile(path, b[:cut], 0o640)
		if got, err := New(Config{Clock: newClock()}).Load(path); err != nil || got != n-1 {
			t.Fatalf("cut at %d of %d: %d entries, %v; want %d", cut, len(b), got, err, n-1)
		}
	}
}

// A full disk (or any failed write, fsync or rename) is a clear error
// from Save naming the file, and the file saved before is kept whole.
func TestCacheFileDiskFull(t *testing.T) {
	for _, op := range []framelog.Op{framelog.OpWrite, framelog.OpSync, framelog.OpRename} {
		t.Run(string(op), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "dns-cache")
			s := New(Config{Clock: newClock()})
			fill(s, 5)
			if _, err := s.Save(path); err != nil {
				t.Fatal(err)
			}
			fill(s, 50)
			s.failpoint = func(o framelog.Op, p string) error {
				if o == op && strings.HasPrefix(p, path) {
					return syscall.ENOSPC
				}
				return nil
			}
			if _, err := s.Save(path); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Save on a full disk: %v; want ENOSPC naming %s", err, path)
			}
			if got, err := New(Config{Clock: newClock()}).Load(path); err != nil || got != 5 {
				t.Fatalf("the file saved before: %d entries, %v", got, err)
			}
			if des, _ := os.ReadDir(dir); len(des) != 1 {
				t.Fatalf("files left behind: %v", des)
			}
			s.failpoint = nil
			if n, err := s.Save(path); err != nil || n != 50 {
				t.Fatalf("Save once there is room: %d, %v", n, err)
			}
		})
	}
}

// A cache file of the previous release (cacheMagicV1, frames without
// magic) is loaded, up to its first damaged frame as that release did.
func TestCacheFilePreviousFormat(t *testing.T) {
	clk := newClock()
	s := New(Config{Clock: clk})
	fill(s, 4)
	old := []byte(cacheMagicV1)
	s.cache.each(func(key, msg []byte, stored int64, ttl uint32) error {
		p := binary.AppendUvarint(nil, uint64(len(key)))
		p = append(p, key...)
		p = binary.LittleEndian.AppendUint64(p, uint64(stored))
		p = binary.LittleEndian.AppendUint32(p, ttl)
		p = append(p, msg...)
		old = binary.LittleEndian.AppendUint32(old, uint32(len(p)))
		old = binary.LittleEndian.AppendUint32(old, crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)))
		old = append(old, p...)
		return nil
	})
	path := filepath.Join(t.TempDir(), "dns-cache")
	os.WriteFile(path, old[:len(old)-2], 0o640) // the last entry torn
	s2 := New(Config{Clock: clk})
	if got, err := s2.Load(path); err != nil || got != 3 {
		t.Fatalf("Load of the previous format: %d, %v; want 3", got, err)
	}
	if n, err := s2.Save(path); err != nil || n != 3 {
		t.Fatalf("Save: %d, %v", n, err)
	}
	if b, _ := os.ReadFile(path); !bytes.HasPrefix(b, []byte(cacheMagic)) {
		t.Fatal("the next Save did not write the new format")
	}
}
