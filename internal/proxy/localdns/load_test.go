package localdns

import (
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/misaki-io/misaki/internal/waitfor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// pausedLoad starts s loading a cache file of 1,000 answers (fill's:
// n<i>.bench.test. A 10.1.2.3), pauses the load halfway (n999 to n500
// loaded, n499 to n0 not yet: the file is most recently used first), and
// serves s. resume lets the load go on; wait returns its result.
func pausedLoad(t *testing.T, s *Server) (addr string, resume func(), wait func() (int, error)) {
	t.Helper()
	src := New(Config{})
	fill(src, 1000)
	path := filepath.Join(t.TempDir(), "dns-cache")
	if _, err := src.Save(path); err != nil {
		t.Fatal(err)
	}
	halfway, release := make(chan struct{}), make(chan struct{})
	read := 0
	s.onLoad = func() {
		if read++; read == 500 {
			close(halfway)
			<-release
		}
	}
	var once sync.Once
	resume = func() { once.Do(func() { close(release) }) }
	t.Cleanup(resume)
	wait = s.StartLoad(path)
	<-halfway
	return serve(t, s), resume, wait
}

// exchange asks addr for name's A record, without failing the test, so
// that it can run in a goroutine of its own.
func exchangeA(addr, name string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	return r, err
}

func aOf(r *dns.Msg) string {
	if r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return ""
	}
	if a, ok := r.Answer[0].(*dns.A); ok {
		return a.A.String()
	}
	return ""
}

// Queries that come while the cache file is loading are answered, none
// held until the load is over: mesh names and the names loaded so far at
// once, other names by the first of the upstream and the file.
func TestQueriesWhileLoading(t *testing.T) {
	t.Run("loaded so far and mesh names at once", func(t *testing.T) {
		up := startUpstream(t, answerA(60))
		s := New(Config{Upstreams: []string{up.addr}})
		s.SetMesh([]string{"api.mesh"}, []netip.Addr{netip.MustParseAddr("127.0.0.9")})
		addr, resume, wait := pausedLoad(t, s)
		for name, want := range map[string]string{"n700.bench.test.": "10.1.2.3", "api.mesh.": "127.0.0.9"} {
			if r, err := exchangeA(addr, name); err != nil || aOf(r) != want {
				t.Fatalf("%s during the load: %v %v, want %s", name, r, err, want)
			}
		}
		if n := up.queries.Load(); n != 0 {
			t.Fatalf("upstream asked %d times for names the server had", n)
		}
		resume()
		if n, err := wait(); err != nil || n != 1000 {
			t.Fatalf("load: %d, %v", n, err)
		}
	})

	t.Run("not loaded yet, upstream answers first, and is kept", func(t *testing.T) {
		up := startUpstream(t, answerA(60)) // 192.0.2.1, not the file's 10.1.2.3
		s := New(Config{Upstreams: []string{up.addr}})
		addr, resume, wait := pausedLoad(t, s)
		g0 := s.Generation()
		if r, err := exchangeA(addr, "n100.bench.test."); err != nil || aOf(r) != "192.0.2.1" {
			t.Fatalf("a name not loaded yet, the load paused: %v %v, want the upstream's answer", r, err)
		}
		resume()
		if n, err := wait(); err != nil || n != 999 {
			t.Fatalf("load: %d, %v; want 999 (the upstream's answer kept over the file's)", n, err)
		}
		if r, err := exchangeA(addr, "n100.bench.test."); err != nil || aOf(r) != "192.0.2.1" || up.queries.Load() != 1 {
			t.Fatalf("after the load: %v %v (upstream asked %d times), want the upstream's answer from the cache", r, err, up.queries.Load())
		}
		if s.Generation() == g0 {
			t.Fatal("the answer got during the load did not change the generation: it would not be saved")
		}
	})

	t.Run("not loaded yet, upstream down: the file's answer", func(t *testing.T) {
		dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
		deadAddr := dead.LocalAddr().String()
		dead.Close() // refused at once
		reg := prometheus.NewRegistry()
		s := New(Config{Upstreams: []string{deadAddr}, Metrics: NewMetrics(reg)})
		addr, resume, wait := pausedLoad(t, s)
		g0 := s.Generation()
		type result struct {
			r   *dns.Msg
			err error
		}
		got := make(chan result, 1)
		go func() { r, err := exchangeA(addr, "n100.bench.test."); got <- result{r, err} }()
		// The query is in: the upstream has failed it.
		waitfor.True(t, "the query failed upstream", func() bool {
			select {
			case res := <-got:
				t.Fatalf("answered before the load went on: %v %v", res.r, res.err)
			default:
			}
			return testutil.ToFloat64(s.m.upstreamFailures) >= 1
		})
		resume()
		if res := <-got; res.err != nil || aOf(res.r) != "10.1.2.3" {
			t.Fatalf("a name not loaded yet, upstream down: %v %v, want the file's answer", res.r, res.err)
		}
		if n, err := wait(); err != nil || n != 1000 {
			t.Fatalf("load: %d, %v", n, err)
		}
		if r, err := exchangeA(addr, "never.example."); err != nil || r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("a name in neither: %v %v, want SERVFAIL", r, err)
		}
		if s.Generation() != g0 {
			t.Fatal("loading the file changed the generation: the file would be written again unchanged")
		}
	})

	t.Run("not loaded yet, upstream silent: the file's answer at the end of the load", func(t *testing.T) {
		hang := make(chan struct{})
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) { <-hang })
		defer close(hang)
		// The upstream's query outlasts the test: an answer that waited for
		// it to fail would not come within exchangeA's 5 s, and r would be
		// nil.
		s := New(Config{Upstreams: []string{up.addr}, Timeout: time.Minute})
		addr, resume, _ := pausedLoad(t, s)
		got := make(chan *dns.Msg, 1)
		go func() { r, _ := exchangeA(addr, "n100.bench.test."); got <- r }()
		waitfor.True(t, "the query in, and upstream", func() bool {
			select {
			case r := <-got:
				t.Fatalf("answered before the load went on: %v", r)
			default:
			}
			return up.queries.Load() >= 1
		})
		resume()
		if r := <-got; aOf(r) != "10.1.2.3" {
			t.Fatalf("a name not loaded yet, upstream silent: %v, want the file's answer", r)
		}
	})
}

// A query that misses the cache while the file is loading, and whose
// upstream fails, gets the file's answer even when the load ends between
// the miss and the query's look at the load: the name is in the cache by
// then. (It got SERVFAIL: the query took the load to be over before it
// began, so nothing could have loaded its name.)
func TestLoadEndsRightAfterAMiss(t *testing.T) {
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := dead.LocalAddr().String()
	dead.Close() // refused at once
	s := New(Config{Upstreams: []string{deadAddr}})
	endLoad := make(chan func(), 1)
	var once sync.Once
	s.onMiss = func() { once.Do(func() { (<-endLoad)() }) } // n100's miss: not loaded yet
	addr, resume, wait := pausedLoad(t, s)
	endLoad <- func() {
		resume()
		if n, err := wait(); err != nil || n != 1000 {
			t.Errorf("load: %d, %v", n, err)
		}
	}
	if r, err := exchangeA(addr, "n100.bench.test."); err != nil || aOf(r) != "10.1.2.3" {
		t.Fatalf("a name the file holds, its load ended right after the miss, upstream down: %v %v, want the file's answer", r, err)
	}
}
