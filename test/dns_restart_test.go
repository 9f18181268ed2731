package test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestDNSThroughKill9AndRestart resolves names through the binary's DNS
// server in a loop while the proxy is killed with SIGKILL and started
// again on the same address, five times: the first three with the upstream
// resolver up, the last two with it stopped. The cache file holds 100,000
// names at the first start (as BenchmarkLoad), so each start spends a
// while loading it; as each start binds its socket, a burst of 1,000
// queries comes too, as when the apps of a pod all start at once.
//
// Every query goes out on a socket of its own, connected to the proxy, as
// Go's and glibc's stub resolvers send them, so a query sent while no
// process is bound gets ICMP port unreachable (refused: the stub fails
// fast, which is acceptable). A query the proxy takes but never answers
// costs a stub its whole timeout. Each query ends as one of:
//
//   - answered: with the right answer (a mesh name's address; a cached
//     name's, from the cache file after a restart, even with the upstream
//     stopped; a learnt name's, which the upstream answered once before
//     the loop began), or any reply for a name only the upstream can
//     answer;
//   - refused: ICMP port unreachable, while no process was bound;
//   - lost in a kill: no reply, sent from inFlight before the SIGKILL until
//     the process was reaped (taken by the process killed, or queued on its
//     socket, which goes with it: kill -9 loses those until the socket
//     outlives the process);
//   - dropped: no reply within noReply otherwise. There must be none;
//   - wrong: a reply that is not the right answer. There must be none.
//
// Answers given while the cache file was still loading (before the
// proxy's "dns: cache loaded" line) are counted too: there must be some,
// or the restarts tested nothing about the load.
func TestDNSThroughKill9AndRestart(t *testing.T) {
	const (
		fileNames = 100_000
		kills     = 5
		offline   = 2 // the last kills, with the upstream stopped
		workers   = 4
		every     = 10 * time.Millisecond  // per worker: 400 queries a second in all, under the kernel's ICMP rate limit (1,000 a second)
		noReply   = 2 * time.Second        // Go's resolver waits 5 s
		inFlight  = 500 * time.Millisecond // more than any answer takes once the load is over, as it is at each kill: dns.timeout is 200ms
		lifetime  = time.Second            // each process runs at least this long before its kill, and until it has loaded the cache file
		burst     = 1000
	)
	dir := t.TempDir()
	cacheFile := filepath.Join(dir, "dns-cache")
	writeDNSCacheFile(t, cacheFile, fileNames)

	// The upstream: A records for names under learnt.example. and for the
	// cache file's names (the same as the file's), an empty answer (not
	// cached: no SOA) for anything else.
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadBuffer(4 << 20) // a burst's misses all come at once
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		a := func(ip string) []dns.RR {
			return []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.ParseIP(ip)}}
		}
		var i int
		switch {
		case q.Qtype != dns.TypeA:
		case strings.HasSuffix(q.Name, ".learnt.example."):
			m.Answer = a(learntAddr)
		case fmtSscanf(q.Name, "c%d.cached.example.", &i):
			m.Answer = a(cachedAddr(i))
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	up.NotifyStartedFunc = func() { close(started) }
	go up.ActivateAndServe()
	<-started
	t.Cleanup(func() { up.Shutdown() })

	// dns.timeout is short: an upstream query that goes unanswered (with
	// the upstream stopped, past the kernel's ICMP rate limit where it
	// applies to loopback, a burst's queries to it are dropped, not
	// refused) costs 200 ms, so every answer comes well within inFlight.
	config := func(dnsAddr string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
admin: 127.0.0.1:0
dns:
  listen: %s
  upstreams: [%s]
  timeout: 200ms
  cacheFile: %s
  saveInterval: 200ms
  maxEntries: 200000
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: http://127.0.0.1:1
    probe: {type: none}
`, dnsAddr, pc.LocalAddr(), cacheFile)
	}
	p := startProxyBinary(t, config(portBelowEphemeral(t)))
	addr, err := net.ResolveUDPAddr("udp", p.dns)
	if err != nil {
		t.Fatalf("DNS address %q: %v", p.dns, err)
	}
	procs := []*runningProxy{p}

	// The resolvers.
	type query struct {
		sent, done time.Time
		kind, name string
		burst      bool
		outcome    string // "answered", "refused", "none" or "wrong: ..."
		err        error  // with "none"
	}
	var (
		mu       sync.Mutex // guards queries
		queries  []*query
		replies  atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		upstream atomic.Bool
		nextSeq  atomic.Int64
	)
	upstream.Store(true)

	// The learnt names are answered once before the resolvers start, each
	// asked until the upstream's answer comes: until then only the upstream
	// has it, and on a loaded machine the proxy's query to it may take
	// longer than dns.timeout, when SERVFAIL is the right reply. From then
	// on the proxy has them, and every query for them must get the
	// upstream's address.
	for i := range learntNames {
		m := new(dns.Msg)
		m.SetQuestion(learntName(i), dns.TypeA)
		waitfor.True(t, "the upstream's answer to "+learntName(i), func() bool {
			r, err := exchangeOnce(addr, m, noReply)
			return err == nil && hasA(r, learntAddr)
		})
	}

	ask := func(seq int, burst bool) {
		q := &query{burst: burst}
		var qtype uint16 = dns.TypeA
		var want string // the address the answer must carry; "" for any reply
		switch seq % 4 {
		case 0:
			q.kind, q.name, want = "mesh", "telemetry.cloud.misaki.", "127.0.0.1"
		case 1:
			// Mostly names at the file's end, the last to load.
			i := fileNames - 1 - mrand.IntN(2000)
			if mrand.IntN(4) == 0 {
				i = mrand.IntN(fileNames)
			}
			q.kind, q.name, want = "cached", fmt.Sprintf("c%d.cached.example.", i), cachedAddr(i)
		case 2:
			q.kind, q.name, want = "learnt", learntName(mrand.IntN(learntNames)), learntAddr
		default: // never cached: the upstream's, or SERVFAIL without it
			q.kind, q.name, qtype = "upstream", fmt.Sprintf("u%d.fresh.example.", seq), dns.TypeTXT
		}
		m := new(dns.Msg)
		m.SetQuestion(q.name, qtype)
		mu.Lock()
		queries = append(queries, q)
		mu.Unlock()
		q.sent = time.Now()
		r, err := exchangeOnce(addr, m, noReply)
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		q.done = now
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			q.outcome = "refused"
		case err != nil:
			q.outcome, q.err = "none", err
		case want == "" || hasA(r, want):
			q.outcome = "answered"
			replies.Add(1)
		default:
			q.outcome = fmt.Sprintf("wrong: %s %s, want %s (upstream up: %v)", dns.RcodeToString[r.Rcode], r.Answer, want, upstream.Load())
		}
	}
	for range workers {
		wg.Go(func() {
			tick := time.NewTicker(every) // the pace of the queries, not a wait for anything
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				seq := int(nextSeq.Add(1))
				wg.Go(func() { ask(seq, false) })
			}
		})
	}
	finish := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	defer finish()

	// The learnt names are written to the cache file before the first
	// kill: after it, the file is all the proxy has of them.
	waitfor.True(t, "the cache file to hold the learnt names", func() bool {
		b, err := os.ReadFile(cacheFile)
		for i := range learntNames {
			if err != nil || !bytes.Contains(b, []byte(learntName(i)+"/A/IN")) {
				return false
			}
		}
		return true
	})

	// Each process is killed once it has loaded the cache file (each
	// restart's load is counted below), however long a loaded machine makes
	// the load take.
	loaded := func(p *runningProxy) bool { return strings.Contains(p.logs.String(), `"msg":"dns: cache loaded"`) }

	// Each start, once bound ("listening"), gets a burst of queries.
	startBurst := func() {
		for range burst {
			seq := int(nextSeq.Add(1))
			wg.Go(func() { ask(seq, true) })
		}
	}
	// The kernel's counts: queries dropped for a full receive buffer, and
	// ICMP errors held back by its rate limit (a query to a port nobody
	// has bound then goes unanswered, not refused; loopback is exempt on
	// recent kernels). Of the whole network namespace: other processes'
	// count too.
	rcvbufErrors, icmpLimited := snmpCounter("Udp:", "RcvbufErrors"), snmpCounter("Icmp:", "OutRateLimitGlobal")
	var killedAt, reapedAt []time.Time
	for k := range kills {
		since, before := time.Now(), replies.Load()
		waitfor.True(t, "the proxy to load the cache file and answer 20 queries", func() bool {
			return replies.Load() >= before+20 && time.Since(since) >= lifetime && loaded(p)
		})
		if k == kills-offline {
			up.Shutdown()
			upstream.Store(false)
		}
		killedAt = append(killedAt, time.Now())
		p.cmd.Process.Kill()
		p.cmd.Wait()
		reapedAt = append(reapedAt, time.Now())
		p = startProxyBinary(t, config(addr.String()))
		procs = append(procs, p)
		startBurst()
	}
	since, before := time.Now(), replies.Load()
	waitfor.True(t, "the last proxy to load the cache file and answer 20 queries", func() bool {
		return replies.Load() >= before+20 && time.Since(since) >= lifetime && loaded(p)
	})
	finish()

	// When each start finished loading the cache file.
	var loadedAt []time.Time
	var tooks []string
	for _, p := range procs[1:] {
		for line := range strings.SplitSeq(p.logs.String(), "\n") {
			var rec struct {
				Time    time.Time     `json:"time"`
				Msg     string        `json:"msg"`
				Entries int           `json:"entries"`
				Took    time.Duration `json:"took"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "dns: cache loaded" {
				loadedAt = append(loadedAt, rec.Time)
				tooks = append(tooks, fmt.Sprintf("%d in %s", rec.Entries, rec.Took))
			}
		}
	}
	if len(loadedAt) != kills {
		t.Fatalf("%d restarts logged loading the cache file, want %d", len(loadedAt), kills)
	}

	mu.Lock()
	defer mu.Unlock()
	var answered, refused, lost, dropped, wrong, whileLoading int
	var latencies [2][]time.Duration // of the loop's queries, of the bursts'
	var burstAnswered int
	for _, q := range queries {
		switch {
		case q.outcome == "answered":
			answered++
			if q.burst {
				burstAnswered++
				latencies[1] = append(latencies[1], q.done.Sub(q.sent))
			} else {
				latencies[0] = append(latencies[0], q.done.Sub(q.sent))
			}
			for k, tk := range killedAt {
				if q.sent.After(tk) && q.done.Before(loadedAt[k]) {
					whileLoading++
					break
				}
			}
		case q.outcome == "refused":
			refused++
		case q.outcome == "none":
			// The first kill whose process was reaped after the query.
			i, _ := slices.BinarySearchFunc(reapedAt, q.sent, func(tr, sent time.Time) int { return tr.Compare(sent) })
			if i < len(killedAt) && killedAt[i].Sub(q.sent) < inFlight {
				lost++
				continue
			}
			if dropped++; dropped <= 20 {
				t.Errorf("no reply to %s %s, sent at %s (kills at %v): %v", q.kind, q.name, q.sent.Format("15:04:05.000"), timesOf(killedAt), q.err)
			}
		default:
			if wrong++; wrong <= 20 {
				t.Errorf("%s %s: %s, sent at %s (kills at %v, loaded at %v)", q.kind, q.name, q.outcome, q.sent.Format("15:04:05.000"), timesOf(killedAt), timesOf(loadedAt))
			}
		}
	}
	times := func(l []time.Duration) string {
		if len(l) == 0 {
			return "none"
		}
		slices.Sort(l)
		at := func(p float64) time.Duration { return l[int(p*float64(len(l)-1))].Round(10 * time.Microsecond) }
		return fmt.Sprintf("p50 %s, p99 %s, max %s", at(0.5), at(0.99), at(1))
	}
	t.Logf("%d kills; loads: %s; the kernel dropped %d UDP datagrams for a full receive buffer and held back %d ICMP errors",
		kills, strings.Join(tooks, ", "), snmpCounter("Udp:", "RcvbufErrors")-rcvbufErrors, snmpCounter("Icmp:", "OutRateLimitGlobal")-icmpLimited)
	t.Logf("%d queries (%d in the bursts): %d answered (%d in the bursts, %d while the cache file was loading), %d refused while no process was bound, %d lost in the kills, %d dropped, %d wrong",
		len(queries), kills*burst, answered, burstAnswered, whileLoading, refused, lost, dropped, wrong)
	t.Logf("reply times: the loop's %s; the bursts' %s", times(latencies[0]), times(latencies[1]))
	if whileLoading == 0 {
		t.Errorf("no query was answered while the cache file was loading")
	}
}

// exchangeOnce sends m to addr from a socket of its own, connected, as a
// stub resolver does, and waits up to timeout for the reply with m's ID.
func exchangeOnce(addr *net.UDPAddr, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == m.Id {
			return r, nil
		}
	}
}

// hasA reports whether r is a NOERROR answer with an A record of ip.
func hasA(r *dns.Msg, ip string) bool {
	if r.Rcode != dns.RcodeSuccess {
		return false
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok && a.A.String() == ip {
			return true
		}
	}
	return false
}

// The learnt names, l<i>.learnt.example. for i below learntNames: the
// upstream's, answered with learntAddr, and in no cache file at first.
const (
	learntNames = 16
	learntAddr  = "192.0.2.1"
)

func learntName(i int) string { return fmt.Sprintf("l%d.learnt.example.", i) }

// cachedAddr is the address of c<i>.cached.example. in the cache file.
func cachedAddr(i int) string { return fmt.Sprintf("198.51.%d.%d", 100+i/250%100, 1+i%250) }

// writeDNSCacheFile writes a cache file, as the proxy's DNS server keeps
// it (internal/proxy/localdns/persist.go), of n answers stored now with a
// TTL of an hour: c<i>.cached.example. A cachedAddr(i).
func writeDNSCacheFile(t *testing.T, path string, n int) {
	t.Helper()
	buf := []byte("misaki-dns-cache-2\n")
	var payload []byte
	stored := time.Now().UnixNano()
	for i := range n {
		name := fmt.Sprintf("c%d.cached.example.", i)
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.Id, m.Response, m.RecursionAvailable = 0, true, true
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.ParseIP(cachedAddr(i))}}
		msg, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		key := name + "/A/IN"
		payload = binary.AppendUvarint(payload[:0], uint64(len(key)))
		payload = append(payload, key...)
		payload = binary.LittleEndian.AppendUint64(payload, uint64(stored))
		payload = binary.LittleEndian.AppendUint32(payload, 3600)
		payload = append(payload, msg...)
		buf = framelog.AppendFrame(buf, 1, payload)
	}
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
}

// portBelowEphemeral returns a loopback address whose port is free for UDP
// and TCP and below the kernel's ephemeral range, as port 53 is: a port
// from the range may be taken by another socket's port 0 (a listener of
// the restarted proxy itself) or a connection's TIME_WAIT between a kill
// and the restart.
func portBelowEphemeral(t *testing.T) string {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ = strconv.Atoi(f[0])
		}
	}
	if lo <= 2048 {
		t.Skipf("the ephemeral port range starts at %d", lo)
	}
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(lo-1-mrand.IntN(min(lo-2048, 20000))))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err != nil {
			continue
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// fmtSscanf is fmt.Sscanf reporting whether all of format matched.
func fmtSscanf(s, format string, args ...any) bool {
	n, err := fmt.Sscanf(s, format, args...)
	return err == nil && n == len(args)
}

// snmpCounter reads a counter of /proc/net/snmp, like ("Udp:",
// "RcvbufErrors"): datagrams dropped for a full receive buffer, in this
// network namespace.
func snmpCounter(proto, name string) int {
	b, _ := os.ReadFile("/proc/net/snmp")
	var names []string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == name && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	return 0
}

func timesOf(ts []time.Time) []string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Format("15:04:05.000"))
	}
	return s
}
