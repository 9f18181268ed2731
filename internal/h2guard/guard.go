// Package h2guard bounds, per HTTP/2 connection, the work a client can
// make a server do with frames that are not requests: streams reset as
// soon as they are opened (rapid reset, CVE-2023-44487), streams the
// client makes the server reset (MadeYouReset, CVE-2025-8671), header
// blocks that never end (CONTINUATION flood, CVE-2024-27316), and floods
// of SETTINGS and PING frames. Over a limit, the connection gets GOAWAY
// with ENHANCE_YOUR_CALM and is closed.
//
// It sits between the server and the connection: the connection is
// wrapped, and the frame headers going each way are followed (never the
// payloads, and nothing is decoded), so that a client's resets and the
// server's resets, pings and the server's answers, can be counted
// together. It is written here because Go's HTTP/2 server is the wrong
// shape for it: it bounds concurrent handlers (so a reset stream's
// handler still runs, and its upstream request still goes out: about
// 2,000 to 4,800 a second from one connection, docs/proxy.md) and header
// bytes, but not how fast streams may be reset, nor how many empty
// CONTINUATION frames, SETTINGS or PINGs a client may send while it reads
// the answers; and it has no hook to see frames. net/http serves HTTP/2
// over TLS only on a *tls.Conn it accepted itself, so the guarded
// connections are served by golang.org/x/net/http2's Server, installed in
// the http.Server's TLSNextProto (ConfigureServer).
package h2guard

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/misaki-io/misaki/internal/clock"
)

// Rate is a token bucket: Burst frames at once, refilled at PerSecond.
// A zero Burst is no limit.
type Rate struct {
	Burst     int
	PerSecond float64
}

// Limits are per connection. Zero fields are no limit.
type Limits struct {
	// Resets counts streams the client resets within PrematureReset of
	// opening them, and streams the server resets because of the client's
	// error (PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED,
	// FRAME_SIZE_ERROR).
	Resets Rate
	// Settings counts SETTINGS frames (not acknowledgements).
	Settings Rate
	// Pings counts PING frames (not acknowledgements) sent when the server
	// has sent no HEADERS or DATA since the client's previous PING: as
	// grpc-go's server counts them, so that a client's bandwidth probes
	// while it receives are free.
	Pings Rate
	// MaxContinuations bounds the CONTINUATION frames of one header block.
	MaxContinuations int
	// MaxStreams is the server's MaxConcurrentStreams: the streams the
	// guard follows are at most 4x that, or the connection is closed.
	MaxStreams int
}

// PrematureReset is how young a stream the client resets must be for
// the reset to count (Envoy's premature_reset_min_stream_lifetime). A
// stream that lived longer held one of the connection's
// MaxConcurrentStreams while it did, so the concurrency limit bounds how
// fast a client can cancel those; a gRPC client cancelling long calls or
// streams never spends its budget.
const PrematureReset = time.Second

// drainTimeout is how long a connection closed over a limit is read (and
// the bytes dropped) after its GOAWAY, so that closing it with unread
// bytes does not reset it and discard the GOAWAY before the client
// reads it.
const drainTimeout = time.Second

// The limits a connection can go over, the "limit" label of the metric.
const (
	limitResets        = "resets"
	limitSettings      = "settings"
	limitPings         = "pings"
	limitContinuations = "continuations"
	limitStreams       = "streams"
)

// ErrLimit is what the server reads from a connection closed over a limit.
var ErrLimit = errors.New("h2guard: connection over an HTTP/2 limit")

// Options are a Guard's optional dependencies.
type Options struct {
	Log   *slog.Logger // default: discard
	Clock clock.Clock  // default: clock.Real
	// MetricPrefix names the metric, PREFIX_http2_limit_closes_total.
	// Default "misaki".
	MetricPrefix string
}

// Guard wraps a server's HTTP/2 connections with its Limits.
type Guard struct {
	limits Limits
	log    *slog.Logger
	clock  clock.Clock
	closes *prometheus.CounterVec
}

var _ prometheus.Collector = (*Guard)(nil)

// New returns a guard; it does no I/O.
func New(l Limits, opt Options) *Guard {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Clock == nil {
		opt.Clock = clock.Real{}
	}
	if opt.MetricPrefix == "" {
		opt.MetricPrefix = "misaki"
	}
	g := &Guard{limits: l, log: opt.Log, clock: opt.Clock,
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: opt.MetricPrefix + "_http2_limit_closes_total",
			Help: "HTTP/2 connections sent GOAWAY(ENHANCE_YOUR_CALM) and closed, by the limit they went over (resets, settings, pings, continuations, streams).",
		}, []string{"limit"}),
	}
	for _, l := range []string{limitResets, limitSettings, limitPings, limitContinuations, limitStreams} {
		g.closes.WithLabelValues(l)
	}
	return g
}

// Describe and Collect make the guard's metric registrable.
func (g *Guard) Describe(ch chan<- *prometheus.Desc) { g.closes.Describe(ch) }
func (g *Guard) Collect(ch chan<- prometheus.Metric) { g.closes.Collect(ch) }

// ConfigureServer makes hs serve HTTP/2 on guarded connections, both h2
// negotiated by ALPN over TLS and h2c with prior knowledge (when
// hs.Protocols allows it). Call it before hs serves; hs.HTTP2 configures
// the HTTP/2 server as usual.
func (g *Guard) ConfigureServer(hs *http.Server) error {
	// x/net's Server is deprecated for net/http's own, which has no way to
	// serve a wrapped TLS connection (it serves HTTP/2 over TLS only on a
	// *tls.Conn it accepted); from Go 1.27 it is a thin wrapper around
	// net/http's. ConfigureServer also makes hs.Shutdown send its
	// connections GOAWAY.
	//lint:ignore SA1019 net/http cannot serve HTTP/2 on a wrapped connection (see above)
	h2 := &http2.Server{}
	//lint:ignore SA1019 installs h2 in hs.TLSNextProto and hs.Shutdown (see above)
	if err := http2.ConfigureServer(hs, h2); err != nil {
		return err
	}
	serve := func(hs *http.Server, gc *conn, c net.Conn, h http.Handler, sawPreface bool) {
		var ctx context.Context
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		//lint:ignore SA1019 serves HTTP/2 on the guarded connection (see above)
		h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs, SawClientPreface: sawPreface})
		// net/http closes the connection when this returns.
		gc.drain()
	}
	hs.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		gc := g.newConn(tc, false)
		serve(hs, gc, &tlsConn{gc, tc}, h, false)
	}
	// net/http hands h2c connections, their preface read, to this key
	// (unexported in net/http; x/net's ConfigureServer uses it too).
	hs.TLSNextProto["unencrypted_http2"] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		nc, ok := tc.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			tc.Close()
			return
		}
		gc := g.newConn(nc.UnencryptedNetConn(), true)
		serve(hs, gc, gc, h, true)
	}
	return nil
}

// tlsConn keeps a guarded TLS connection's ConnectionState visible to the
// HTTP/2 server, which checks the version and cipher and sets
// Request.TLS from it.
type tlsConn struct {
	*conn
	tc *tls.Conn
}

func (c *tlsConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// conn is one guarded connection. Read follows the client's frames and
// Write the server's.
type conn struct {
	net.Conn
	g *Guard

	wmu sync.Mutex // guards the fields below, and the underlying Write; taken before mu
	out scanner    // the server's frames
	// ending is set while the frame the server was in the middle of
	// writing when the client went over a limit is let through, to be
	// followed by the GOAWAY (trip, finishFrame).
	ending *dueGoAway
	torn   bool // a write failed: the client may have part of a frame, and no GOAWAY can follow

	mu        sync.Mutex       // guards the fields below
	in        scanner          // the client's frames
	streams   map[uint32]int64 // client streams the server has not ended: when opened (clock ns)
	maxStream uint32           // the highest client stream the server has read
	resets    bucket
	settings  bucket
	pings     bucket
	answered  bool           // the server sent HEADERS or DATA since the client's last PING
	conts     int            // CONTINUATION frames since the last HEADERS
	tripped   string         // the limit gone over; "" while within them
	tripping  sync.WaitGroup // trip in progress: drain waits for its GOAWAY
}

// dueGoAway is a GOAWAY waiting for the end of the server's frame in
// progress.
type dueGoAway struct {
	last  uint32
	limit string
	done  chan struct{} // closed once the GOAWAY is sent, or cannot be
}

func (g *Guard) newConn(c net.Conn, sawPreface bool) *conn {
	l := g.limits
	gc := &conn{Conn: c, g: g, streams: map[uint32]int64{}, answered: true,
		resets: newBucket(l.Resets), settings: newBucket(l.Settings), pings: newBucket(l.Pings)}
	if !sawPreface {
		gc.in.preface = len(clientPreface)
	}
	return gc
}

// Read reads the client's frames and passes on those within the limits;
// the frame that goes over one, and everything after it, is not passed on.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if c.tripped != "" {
		c.mu.Unlock()
		return 0, ErrLimit
	}
	var limit string
	ok, start, _ := c.in.scan(p[:n], func(f frame) bool {
		limit = c.fromClient(f)
		return limit == ""
	})
	c.mu.Unlock()
	if !ok {
		c.trip(limit, false, false)
		if start <= 0 {
			return 0, ErrLimit
		}
		return start, nil
	}
	return n, err
}

// fromClient accounts for a frame from the client and returns the limit
// it goes over, if any. Called with mu held.
func (c *conn) fromClient(f frame) string {
	l := &c.g.limits
	switch f.typ {
	case frameHeaders:
		if f.stream%2 == 1 && f.stream > c.maxStream { // a new stream, not trailers
			c.maxStream = f.stream
			c.streams[f.stream] = c.g.clock.Now().UnixNano()
			if l.MaxStreams > 0 && len(c.streams) > 4*l.MaxStreams {
				return limitStreams
			}
		}
		c.conts = 0
	case frameContinuation:
		c.conts++
		if l.MaxContinuations > 0 && c.conts > l.MaxContinuations {
			return limitContinuations
		}
	case frameRSTStream:
		if opened, ok := c.streams[f.stream]; ok {
			delete(c.streams, f.stream)
			now := c.g.clock.Now().UnixNano()
			if now-opened < int64(PrematureReset) && !c.resets.take(now) {
				return limitResets
			}
		}
	case frameSettings:
		if f.flags&flagAck == 0 && !c.settings.take(c.g.clock.Now().UnixNano()) {
			return limitSettings
		}
	case framePing:
		if f.flags&flagAck == 0 {
			if !c.answered && !c.pings.take(c.g.clock.Now().UnixNano()) {
				return limitPings
			}
			c.answered = false
		}
	}
	return ""
}

// Write writes the server's frames, following them.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ending != nil {
		return c.finishFrame(p)
	}
	c.mu.Lock()
	if c.tripped != "" {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	var limit string
	ok, _, end := c.out.scan(p, func(f frame) bool {
		limit = c.fromServer(f)
		return limit == ""
	})
	c.mu.Unlock()
	if ok {
		n, err := c.Conn.Write(p)
		if err != nil {
			c.torn = true
		}
		return n, err
	}
	// Only a server's RST_STREAM takes the client over a limit here, and
	// it ends where the scan stopped: it is sent, then the GOAWAY.
	n, err := c.Conn.Write(p[:end])
	if err != nil {
		c.torn = true
	}
	c.trip(limit, true, err == nil)
	return n, ErrLimit
}

// finishFrame writes p up to the end of the frame the server was in the
// middle of when the client went over a limit, and then the GOAWAY; the
// server's frames after that one are not sent. Called with wmu held and
// c.ending set.
func (c *conn) finishFrame(p []byte) (int, error) {
	e := c.ending
	n, done := c.out.finish(p)
	m, err := c.Conn.Write(p[:n])
	if err != nil {
		c.torn = true
	} else if done {
		c.goAway(e.last, e.limit)
	}
	if err != nil || done {
		c.ending = nil
		close(e.done)
	}
	switch {
	case err != nil:
		return m, err
	case m < len(p):
		return m, ErrLimit
	}
	return m, nil
}

// fromServer accounts for a frame from the server and returns the limit
// it takes the client over, if any. Called with mu held.
func (c *conn) fromServer(f frame) string {
	switch f.typ {
	case frameHeaders, frameData:
		c.answered = true
		if f.flags&flagEndStream != 0 {
			delete(c.streams, f.stream)
		}
	case frameRSTStream:
		delete(c.streams, f.stream)
		switch f.code {
		case codeProtocol, codeFlowControl, codeStreamClosed, codeFrameSize:
			// The client's error: what MadeYouReset makes the server do.
			// Not REFUSED_STREAM: a refused stream started no handler.
			if !c.resets.take(c.g.clock.Now().UnixNano()) {
				return limitResets
			}
		}
	}
	return ""
}

// trip closes the connection over limit: GOAWAY(ENHANCE_YOUR_CALM), the
// server's reads and writes fail from now on, and once the server closes
// the connection, the client's bytes are drained until it closes too or
// drainTimeout passes. The GOAWAY must not tear one of the server's
// frames: inWrite says the caller is Write, which holds wmu and knows
// whether it stopped between frames (if not, no GOAWAY is sent);
// otherwise the caller is Read, and the GOAWAY follows the server's write
// in progress, and the frame in progress if that write stopped in the
// middle of one.
//
// That is common: x/net's writer goes through a 4 KiB buffer and writes
// it out whenever it fills, between frames or not. A GOAWAY sent then
// would tear the frame, and none sent leaves the client with part of a
// frame and its connection cut for no reason it can see. x/net writes
// the rest of the frame from its buffer soon, with no read needed (its
// frame writer runs apart from its reader): the server's writes are let
// through to the end of that frame, and finishFrame sends the GOAWAY
// after it. The read that went over the limit, the caller, waits for
// that, so that the server does not see ErrLimit and stop first; after
// drainTimeout the GOAWAY is given up. The connection is marked tripped
// with wmu held, in the same step as the frame in progress is looked at:
// a write in between would be refused, and the rest of the frame lost.
func (c *conn) trip(limit string, inWrite, between bool) {
	if !inWrite {
		// After the server's write in progress, if any: one waiting for
		// a client that does not read fails by this deadline.
		c.Conn.SetWriteDeadline(time.Now().Add(drainTimeout))
		c.wmu.Lock()
	}
	c.mu.Lock()
	if c.tripped != "" {
		c.mu.Unlock()
		if !inWrite {
			c.wmu.Unlock()
		}
		return
	}
	c.tripped = limit
	c.tripping.Add(1)
	defer c.tripping.Done()
	last := c.maxStream
	c.mu.Unlock()
	// Counted before the client can read the GOAWAY.
	c.g.closes.WithLabelValues(limit).Inc()
	var due *dueGoAway
	switch {
	case inWrite:
		if between {
			c.goAway(last, limit)
		}
	case c.out.between():
		c.goAway(last, limit)
	case !c.torn:
		due = &dueGoAway{last: last, limit: limit, done: make(chan struct{})}
		c.ending = due
	}
	if !inWrite {
		c.wmu.Unlock()
	}
	c.g.log.Warn("HTTP/2 connection over a limit: GOAWAY and closed", "remote", c.RemoteAddr().String(),
		"limit", "limits.http2."+limit, "lastStream", last)
	if due != nil {
		t := time.NewTimer(drainTimeout)
		select {
		case <-due.done:
		case <-t.C:
		}
		t.Stop()
		c.wmu.Lock()
		c.ending = nil // the server's writes fail from now on
		c.wmu.Unlock()
	}
	// Wake the server's reader, which then closes the connection.
	c.Conn.SetReadDeadline(time.Now())
}

// goAway writes GOAWAY(ENHANCE_YOUR_CALM), last being the highest
// stream the server may have acted on, unless a failed write may have
// left part of a frame. Called with wmu held, between frames.
func (c *conn) goAway(last uint32, limit string) {
	if c.torn {
		return
	}
	debug := "misaki: over limits.http2." + limit
	n := 8 + len(debug)
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), frameGoAway, 0, 0, 0, 0, 0,
		byte(last >> 24), byte(last >> 16), byte(last >> 8), byte(last), 0, 0, 0, codeCalm}
	c.Conn.SetWriteDeadline(time.Now().Add(drainTimeout))
	if _, err := c.Conn.Write(append(b, debug...)); err != nil {
		c.torn = true
	}
}

// SetReadDeadline is the server's, unless the connection is being closed
// over a limit.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tripped != "" {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the connection, unless it goes over a limit: then drain
// closes it.
func (c *conn) Close() error {
	c.mu.Lock()
	tripped := c.tripped != ""
	c.mu.Unlock()
	if tripped {
		return nil
	}
	return c.Conn.Close()
}

// drain reads and drops what a connection closed over a limit still
// receives, until the client closes it or drainTimeout passes, and then
// closes it: closed with unread bytes, it would be reset, and the client
// could lose the GOAWAY before it reads it.
func (c *conn) drain() {
	c.mu.Lock()
	tripped := c.tripped != ""
	c.mu.Unlock()
	if !tripped {
		return
	}
	c.tripping.Wait()
	// A FIN after the GOAWAY where the connection can send one.
	if cw, ok := underlying(c.Conn).(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.Conn.SetReadDeadline(time.Now().Add(drainTimeout))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Conn.Read(buf); err != nil {
			break
		}
	}
	c.Conn.Close()
}

// underlying is the TCP connection under TLS and listener wrappers, as
// far as they expose it.
func underlying(c net.Conn) net.Conn {
	for {
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = nc.NetConn()
	}
}

// bucket is a token bucket; the zero Rate never runs out.
type bucket struct {
	rate   Rate
	tokens float64
	last   int64 // clock ns of the last take
}

func newBucket(r Rate) bucket { return bucket{rate: r, tokens: float64(r.Burst)} }

// take takes a token at now and reports whether there was one.
func (b *bucket) take(now int64) bool {
	if b.rate.Burst <= 0 {
		return true
	}
	if b.last != 0 && now > b.last {
		b.tokens = min(float64(b.rate.Burst), b.tokens+float64(now-b.last)/1e9*b.rate.PerSecond)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
