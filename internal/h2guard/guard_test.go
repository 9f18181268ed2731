package h2guard_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/h2guard"
	"github.com/misaki-io/misaki/internal/h2guard/h2abuse"
)

var testLimits = h2guard.Limits{
	Resets:           h2guard.Rate{Burst: 50, PerSecond: 10},
	Settings:         h2guard.Rate{Burst: 20, PerSecond: 2},
	Pings:            h2guard.Rate{Burst: 20, PerSecond: 2},
	MaxContinuations: 8,
	MaxStreams:       100,
}

// server is a real h2c server on loopback with a guard on a fake clock.
// Requests to /block wait until they are cancelled; others are answered.
type server struct {
	addr    string
	guard   *h2guard.Guard
	clock   *clock.Fake
	started atomic.Int64 // requests the handler saw
}

func startServer(t *testing.T, l h2guard.Limits) *server {
	t.Helper()
	s := &server{clock: clock.NewFake(time.Unix(1_700_000_000, 0))}
	s.guard = h2guard.New(l, h2guard.Options{Clock: s.clock})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Protocols: &protos,
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: l.MaxStreams},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.started.Add(1)
			if r.URL.Path == "/block" {
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return
			}
			w.Write([]byte("ok"))
		}),
	}
	if err := s.guard.ConfigureServer(hs); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	s.addr = ln.Addr().String()
	return s
}

func (s *server) dial(t *testing.T, path string) *h2abuse.Conn {
	t.Helper()
	c, err := h2abuse.Dial(context.Background(), h2abuse.Target{Addr: s.addr, Authority: "test", Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closes reads the guard's metric for limit.
func (s *server) closes(t *testing.T, limit string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.guard)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == limit {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric for %s", limit)
	return 0
}

func await(t *testing.T, c *h2abuse.Conn, what string, cond func(h2abuse.Result) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Await(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (seen %s; read error %v)", what, err, c.Seen(), c.Seen().ReadErr)
	}
}

// roundTrip sends a request and waits for its answer: then the server has
// read everything sent before it.
func roundTrip(t *testing.T, c *h2abuse.Conn) {
	t.Helper()
	var id uint32
	c.Write(func(fr *http2.Framer) (err error) { id, err = c.Request(fr, true); return err })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitAnswer(ctx, id); err != nil {
		t.Fatalf("waiting for the answer on stream %d: %v (seen %s)", id, err, c.Seen())
	}
}

func calmed(r h2abuse.Result) bool { return r.GoAway && r.GoAwayCode == http2.ErrCodeEnhanceYourCalm }

// TestOldStreamsResetFree: cancelling streams that lived a second or
// more spends nothing, however many (a gRPC client ending its calls and
// watches); cancelling young ones does.
func TestOldStreamsResetFree(t *testing.T) {
	s := startServer(t, testLimits)
	c := s.dial(t, "/block")
	const batch = 40                     // within MaxStreams
	for round := 0; round < 5; round++ { // 200 resets, 4x the burst
		ids := make([]uint32, batch)
		c.Write(func(fr *http2.Framer) error {
			for i := range ids {
				ids[i], _ = c.Request(fr, true)
			}
			return nil
		})
		want := (round + 1) * batch
		await(t, c, "answers", func(r h2abuse.Result) bool { return r.Responses >= want })
		s.clock.Advance(h2guard.PrematureReset)
		c.Write(func(fr *http2.Framer) error {
			for _, id := range ids {
				fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
			return nil
		})
	}
	// Then young streams: the burst, and the connection is closed.
	for i := 0; i < testLimits.Resets.Burst+10 && !c.Seen().GoAway; i++ {
		h2abuse.RapidReset(c, i)
	}
	await(t, c, "GOAWAY", calmed)
	if r := c.Seen(); r.GoAwayDebug != "misaki: over limits.http2.resets" {
		t.Errorf("GOAWAY debug %q", r.GoAwayDebug)
	}
	if n := s.closes(t, "resets"); n != 1 {
		t.Errorf("resets closes = %v, want 1", n)
	}
}

// TestResetsRefill: the bucket refills at PerSecond.
func TestResetsRefill(t *testing.T) {
	s := startServer(t, testLimits)
	c := s.dial(t, "/block")
	for i := 0; i < testLimits.Resets.Burst; i++ {
		h2abuse.RapidReset(c, i)
	}
	roundTrip(t, c)
	s.clock.Advance(2 * time.Second) // 20 more
	for i := 0; i < 20; i++ {
		h2abuse.RapidReset(c, i)
	}
	roundTrip(t, c)
	if r := c.Seen(); r.GoAway {
		t.Fatalf("GOAWAY within the limit: %+v", r)
	}
	h2abuse.RapidReset(c, 0)
	await(t, c, "GOAWAY", calmed)
}

// TestServerResetsCount: streams the server resets for the client's
// errors (MadeYouReset) spend the budget; resets without a client error
// do not.
func TestServerResetsCount(t *testing.T) {
	for _, v := range []h2abuse.MadeYouReset{h2abuse.ZeroWindowUpdate, h2abuse.WindowOverflow, h2abuse.DataAfterEndStream, h2abuse.SelfDependency} {
		t.Run(v.String(), func(t *testing.T) {
			s := startServer(t, testLimits)
			c := s.dial(t, "/block")
			for i := 0; i < 4*testLimits.Resets.Burst && !c.Seen().GoAway; i++ {
				if err := v.Attack(c, i); err != nil {
					break
				}
			}
			await(t, c, "GOAWAY", calmed)
			// The reset that goes over is sent, then the GOAWAY.
			if r := c.Seen(); r.ServerResets != testLimits.Resets.Burst+1 || r.GoAwayDebug != "misaki: over limits.http2.resets" {
				t.Errorf("%d server resets, GOAWAY %q; want %d, resets", r.ServerResets, r.GoAwayDebug, testLimits.Resets.Burst+1)
			}
		})
	}
}

// TestPingsAnsweredFree: a PING after the server sent something is free
// (a client probing bandwidth while it receives); PINGs with nothing
// between them are counted.
func TestPingsAnsweredFree(t *testing.T) {
	s := startServer(t, testLimits)
	c := s.dial(t, "/")
	for i := 0; i < 3*testLimits.Pings.Burst; i++ {
		roundTrip(t, c)
		h2abuse.PingFlood(c, i)
	}
	for i := 0; i < 2*testLimits.Pings.Burst && !c.Seen().GoAway; i++ {
		h2abuse.PingFlood(c, i)
	}
	await(t, c, "GOAWAY", calmed)
	if r := c.Seen(); r.GoAwayDebug != "misaki: over limits.http2.pings" {
		t.Errorf("GOAWAY debug %q", r.GoAwayDebug)
	}
}

// TestSettings: the burst, then the rate.
func TestSettings(t *testing.T) {
	s := startServer(t, testLimits)
	c := s.dial(t, "/")
	// Dial sent one SETTINGS.
	for i := 1; i < testLimits.Settings.Burst; i++ {
		h2abuse.SettingsFlood(c, i)
	}
	roundTrip(t, c)
	s.clock.Advance(time.Second) // 2 more
	h2abuse.SettingsFlood(c, 0)
	h2abuse.SettingsFlood(c, 0)
	roundTrip(t, c)
	if c.Seen().GoAway {
		t.Fatal("GOAWAY within the limit")
	}
	h2abuse.SettingsFlood(c, 0)
	await(t, c, "GOAWAY", calmed)
}

// TestContinuations: a header block in MaxContinuations CONTINUATIONs is
// served; one more frame closes the connection, and the request it
// belongs to never reaches the handler.
func TestContinuations(t *testing.T) {
	s := startServer(t, testLimits)
	c := s.dial(t, "/")
	send := func(conts int) {
		c.Write(func(fr *http2.Framer) error {
			id := c.NewStream()
			block := c.HeaderBlock()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:1], EndStream: true})
			for i := 1; i < conts; i++ {
				fr.WriteContinuation(id, false, nil)
			}
			return fr.WriteContinuation(id, true, block[1:])
		})
	}
	send(testLimits.MaxContinuations)
	await(t, c, "the answer", func(r h2abuse.Result) bool { return r.Responses > 0 })
	send(testLimits.MaxContinuations + 1)
	await(t, c, "GOAWAY", calmed)
	if r := c.Seen(); r.GoAwayDebug != "misaki: over limits.http2.continuations" || s.started.Load() != 1 {
		t.Errorf("GOAWAY %q, %d requests started; want continuations, 1", r.GoAwayDebug, s.started.Load())
	}
}

// TestGoAwayThenClose: the client reads the GOAWAY, naming the last
// stream the server took, and then the end of the connection.
func TestGoAwayThenClose(t *testing.T) {
	s := startServer(t, testLimits)
	c := s.dial(t, "/")
	for i := 0; i < 3; i++ { // streams 1, 3, 5
		c.Write(func(fr *http2.Framer) error { _, err := c.Request(fr, true); return err })
	}
	await(t, c, "the answers", func(r h2abuse.Result) bool { return r.Responses == 3 })
	for i := 0; i <= testLimits.Settings.Burst; i++ {
		h2abuse.SettingsFlood(c, i)
	}
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
	if r := c.Seen(); !calmed(r) || r.GoAwayLastStream != 5 || r.ReadErr != io.EOF {
		t.Errorf("GOAWAY %v, last stream %d, then %v; want ENHANCE_YOUR_CALM, 5, EOF", r.GoAwayCode, r.GoAwayLastStream, r.ReadErr)
	}
	if n := s.closes(t, "settings"); n != 1 {
		t.Errorf("settings closes = %v, want 1", n)
	}
}
