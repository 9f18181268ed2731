// Package forward sends a request to a route's upstream and streams the
// response back: HTTP/1.1, HTTP/2 over TLS (ALPN) or h2c to the upstream,
// bodies streamed both ways, trailers passed, hop-by-hop headers dropped,
// Via and X-Forwarded-* set, WebSocket upgrades tunnelled.
//
// A request takes one of two paths, chosen per request by Forward:
//
//	                      http:// upstream, fast path not switched off,
//	                      no Upgrade, Expect or Trailer, no body or one of
//	                      known length up to 16 KiB
//	Forward ─┬─ yes ──> the fast path (h1.go): the request written straight
//	         │          onto a pooled connection (h1Pool), the answer read on
//	         │          the calling goroutine, sockets read and written with
//	         │          plain system calls (internal/sockio)
//	         └─ no ───> net/http/httputil.ReverseProxy over an http.Transport:
//	                    streams, chunked and large bodies, WebSockets, TLS,
//	                    HTTP/2
//
// ReverseProxy already does the hop-by-hop, trailer, flushing and upgrade
// work correctly; the fast path does exactly what it would for the requests
// it takes (same headers both ways, compared by TestFastPathMatchesReverseProxy)
// without its per-request clones, contexts and goroutine hand-offs. Which
// one a request took is visible to neither the app nor the upstream. The
// fast path can be switched off (Options.NoFastPath; config
// http1Upstream: stdlib, or --http1-upstream stdlib), which sends every
// request the second way: the way to rule it out when something looks
// wrong, as http1Server: stdlib does for the lean server.
//
// Both paths share the upstream's dialer, so both are steered onto the
// link the route may use (SO_BINDTODEVICE, or the node link agent's mark
// and source port range), and both count the bytes of connections on
// metered links from the kernel's TCP_INFO. And both tell the caller what
// a plain proxy cannot: that nothing of the request was sent (ErrNotSent)
// or that no answer came to a request that may be sent again
// (ErrNoResponse), so the caller may hold it and try again instead of
// failing it.
package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/misaki-io/misaki/internal/proxy/config"
)

// Response headers Misaki adds.
const (
	HeaderDelivery = "Misaki-Delivery"
)

// HeaderIdempotency on a gateway's 409 says why: IdempotencyInFlight, an
// earlier request with the same Idempotency-Key is still being answered.
// The edge knows its own re-sent request by it, and waits and asks again
// instead of passing the 409 to the app.
const (
	HeaderIdempotency   = "Misaki-Idempotency"
	IdempotencyInFlight = "in-flight"
)

// ErrNotSent wraps a connection failure that happened before any byte of the
// request was sent or any byte of the response written: the request is intact
// and may be retried.
var ErrNotSent = errors.New("forward: upstream not reached")

// ErrNoResponse wraps a failure after the request was sent (in part or
// whole) and before any byte of a response arrived: the connection was
// closed or reset at once, or the upstream stayed silent past the
// response-header timeout (a modem out of coverage). Nothing was written to
// the app. Forward returns it only for a request that may be sent again
// whole: a safe method or one with an Idempotency-Key, whose body is absent
// or offered again by GetBody. The upstream may have acted on it, which the
// Idempotency-Key makes harmless at the cloud gateway.
var ErrNoResponse = errors.New("forward: no response from upstream")

// ErrNoLink fails a dial while the route may use no link that is up.
var ErrNoLink = errors.New("forward: no link the route may use is up")

// Upstream forwards to one route's upstream.
type Upstream struct {
	target     *url.URL // scheme http or https
	dialer     *net.Dialer
	endpoints  atomic.Pointer[[]string] // host:port to dial instead of the target's; nil or empty: the target
	next       atomic.Uint32            // round-robin position in endpoints
	path       atomic.Pointer[Path]     // how new connections leave; nil or zero lets the kernel choose
	meter      meter                    // bytes of connections on metered links
	h1         *h1Pool                  // the fast path's pool; nil unless the upstream is http://
	transport  *http.Transport
	proxy      *httputil.ReverseProxy
	reqTimeout time.Duration
	// respHeaderTimeout bounds the wait for response headers on the fast path.
	respHeaderTimeout time.Duration
	onReach           atomic.Pointer[func(answered bool)] // called on every successful dial and response head
	log               *slog.Logger
}

// LoadTLS builds the client TLS configuration for an https upstream from the
// route's files. It returns nil for other schemes.
func LoadTLS(r config.Route) (*tls.Config, error) {
	if !strings.HasPrefix(r.Upstream, "https://") {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.TLS.ServerName}
	if r.TLS.CAFile != "" {
		pem, err := os.ReadFile(r.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("route %s: tls.caFile: %w", r.Name, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("route %s: tls.caFile %s: no PEM certificates found", r.Name, r.TLS.CAFile)
		}
	}
	if r.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.TLS.CertFile, r.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("route %s: tls.certFile/keyFile: %w", r.Name, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Copy buffers: large ones for streams and big bodies, small ones for the
// common small message, so that a burst of released requests does not pin
// 32 KiB each.
var (
	bufPool      = newBufferPool(32 << 10)
	smallBufPool = newBufferPool(4 << 10)
)

func newBufferPool(size int) *bufferPool {
	return &bufferPool{sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

// bufferPool recycles copy buffers; it is also ReverseProxy's BufferPool.
type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// Options are what a forwarder takes beside its route.
type Options struct {
	// TLS is the client configuration for an https:// upstream, from
	// LoadTLS; nil for the others.
	TLS *tls.Config
	// Log is where the forwarder logs, with its component and route added.
	Log *slog.Logger
	// NoFastPath sends every request through ReverseProxy and
	// http.Transport, the fast path's requests too (config
	// http1Upstream: stdlib): the way to rule the fast path out.
	NoFastPath bool
}

// New returns a forwarder for route r.
func New(r config.Route, o Options) (*Upstream, error) {
	u, err := url.Parse(r.Upstream)
	if err != nil {
		return nil, fmt.Errorf("route %s: upstream: %w", r.Name, err)
	}
	target := &url.URL{Scheme: u.Scheme, Host: u.Host}
	f := &Upstream{}
	dialer := &net.Dialer{Timeout: r.Timeouts.Connect.D(), KeepAlive: 30 * time.Second, ControlContext: f.control}
	tr := &http.Transport{
		DialContext:           f.Dial,
		MaxIdleConnsPerHost:   min(r.MaxUpstreamConnections, maxIdleConns),
		MaxConnsPerHost:       r.MaxUpstreamConnections,
		IdleConnTimeout:       r.Timeouts.Idle.D(),
		ResponseHeaderTimeout: r.Timeouts.ResponseHeader.D(),
		TLSHandshakeTimeout:   r.Timeouts.Connect.D(),
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       o.TLS,
		// A proxy must not add Accept-Encoding and decode on the app's behalf.
		DisableCompression: true,
	}
	var protos http.Protocols
	switch target.Scheme {
	case "h2c":
		target.Scheme = "http"
		protos.SetUnencryptedHTTP2(true)
	case "https":
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
	default:
		protos.SetHTTP1(true)
	}
	tr.Protocols = &protos
	*f = Upstream{
		target:            target,
		dialer:            dialer,
		transport:         tr,
		reqTimeout:        r.Timeouts.Request.D(),
		respHeaderTimeout: r.Timeouts.ResponseHeader.D(),
		log:               o.Log.With("component", "forward", "route", r.Name),
	}
	if u.Scheme == "http" && !o.NoFastPath {
		f.h1 = &h1Pool{addr: f.Addr(), dial: f.Dial, idleTTL: r.Timeouts.Idle.D(),
			slots: make(chan struct{}, r.MaxUpstreamConnections)}
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:        f.rewrite,
		Transport:      tr,
		BufferPool:     bufPool,
		ModifyResponse: f.modifyResponse,
		ErrorHandler:   f.errorHandler,
		ErrorLog:       slog.NewLogLogger(f.log.Handler(), slog.LevelWarn),
	}
	return f, nil
}

// BaseURL is the upstream's base URL for probes (scheme http or https).
func (f *Upstream) BaseURL() string { return f.target.String() }

// Addr is the upstream's host:port.
func (f *Upstream) Addr() string {
	if f.target.Port() != "" {
		return f.target.Host
	}
	if f.target.Scheme == "https" {
		return net.JoinHostPort(f.target.Hostname(), "443")
	}
	return net.JoinHostPort(f.target.Hostname(), "80")
}

// Dial connects to addr the way forwarded requests do (same timeout and
// interface); the upstream's own address goes to one of its endpoints,
// when it has some, in turn.
func (f *Upstream) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if eps := f.endpoints.Load(); eps != nil && len(*eps) > 0 && addr == f.Addr() {
		addr = (*eps)[int(f.next.Add(1)-1)%len(*eps)]
	}
	// The path is read once: the socket's options and the byte meter
	// must agree even when the path changes during the dial.
	p := f.path.Load()
	ctx = context.WithValue(ctx, pathKey{}, p)
	c, err := f.dialer.DialContext(ctx, network, addr)
	for i := 0; i < 3 && err != nil && p != nil && p.Ports != [2]uint16{} && errors.Is(err, syscall.EADDRNOTAVAIL); i++ {
		// The source port drawn from the link's range is held by another
		// connection to the same destination: draw again.
		c, err = f.dialer.DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, err
	}
	f.reached(false)
	if p != nil && p.Metered {
		return f.meter.track(c, p.Link), nil
	}
	return c, nil
}

// OnReach sets fn to be called whenever the upstream is reached: a dial
// that succeeds (a request's or a probe's; answered false) or a response
// head that arrives (answered true). The caller's health tracking uses it to
// mark a down route usable at once, without waiting for the next probe. fn
// must be cheap and must not block.
func (f *Upstream) OnReach(fn func(answered bool)) { f.onReach.Store(&fn) }

func (f *Upstream) reached(answered bool) {
	if fn := f.onReach.Load(); fn != nil {
		(*fn)(answered)
	}
}

// SetEndpoints makes new connections go to these host:port addresses in
// turn instead of the upstream URL's host (a Service's ready endpoints, as
// the controller sends them); nil or empty goes back to the URL's host.
// When the list changes, idle connections are closed, so none is reused
// to an endpoint no longer listed.
func (f *Upstream) SetEndpoints(eps []string) {
	old := f.endpoints.Swap(&eps)
	if old != nil && !slices.Equal(*old, eps) {
		f.Close()
	}
}

// SetPath makes new upstream connections leave by p (the zero Path lets
// the kernel's routing table choose) and drops idle connections made the
// other way. It reports whether the choice changed.
func (f *Upstream) SetPath(p Path) bool {
	old := f.path.Swap(&p)
	if (old == nil && p == Path{}) || (old != nil && *old == p) {
		return false
	}
	f.Close()
	return true
}

// Path is how a route's new upstream connections must leave: by an
// interface of the proxy's own namespace (SO_BINDTODEVICE), or by the
// agent's policy routing (SO_MARK where the proxy may set it, and a source
// port in the link's range, which survives the pod's veth). The zero Path
// lets the kernel's routing table choose.
type Path struct {
	// Link is the link's name; Metered its flag, for byte budgets.
	Link      string
	Metered   bool
	Interface string
	Mark      uint32
	Ports     [2]uint16
	// Blocked refuses new connections: the route may not take any link
	// that is up. The hold queue keeps requests back; this stops the ones
	// already past it (a replay that started a moment before the link
	// went) from leaving by whatever the kernel prefers.
	Blocked bool
}

// pathKey carries the path Dial read to control.
type pathKey struct{}

func (f *Upstream) control(ctx context.Context, network, _ string, c syscall.RawConn) error {
	p, _ := ctx.Value(pathKey{}).(*Path)
	switch {
	case p == nil:
		return nil
	case p.Blocked:
		return ErrNoLink
	case p.Interface != "":
		return bindToDevice(c, p.Interface)
	case p.Mark != 0 || p.Ports != [2]uint16{}:
		return steer(c, network, p.Mark, p.Ports, f.log)
	}
	return nil
}

// MeteredBytes returns the bytes carried by this upstream's connections
// over metered links since the last call, by link name (TCP payload both
// ways, retransmissions included, as the kernel counts them). Linux only;
// elsewhere it returns nothing.
func (f *Upstream) MeteredBytes() map[string]int64 { return f.meter.take() }

// Client is an HTTP client over the same transport, for probes.
func (f *Upstream) Client() *http.Client { return &http.Client{Transport: f.transport} }

// Close drops idle upstream connections.
func (f *Upstream) Close() {
	f.transport.CloseIdleConnections()
	if f.h1 != nil {
		f.h1.closeIdle()
	}
}

// FastPath reports whether plain-HTTP/1.1 requests may take the fast path:
// an http:// upstream, and Options.NoFastPath not set.
func (f *Upstream) FastPath() bool { return f.h1 != nil }

type attemptKey struct{}

// attempt carries per-request state between Forward and the ReverseProxy hooks.
type attempt struct {
	delivery string
	body     *trackedBody
	err      error
	// connected and answered are the Transport's own account (its
	// ClientTrace) of whether this request got a connection, and whether
	// a byte of a response arrived on it, over all its tries.
	connected, answered atomic.Bool
	trace               httptrace.ClientTrace // here, not allocated apart
}

// Forward proxies r to the upstream and writes the response to w, marked
// with delivery (direct or held). It returns nil once a response was
// written. Otherwise, with nothing written to the app and the request fit
// to be tried again by the caller: an error wrapping ErrNotSent (nothing was
// sent) or ErrNoResponse (sent, perhaps, and nothing answered). Otherwise an
// error already answered: ErrBadBody (the app's body broke: 400), or
// another (413 for a body over its limit, 504 for a timeout, 502).
func (f *Upstream) Forward(w http.ResponseWriter, r *http.Request, delivery string) error {
	if f.fastEligible(r) {
		return f.forwardFast(w, r, delivery)
	}
	a := &attempt{delivery: delivery}
	if r.Body != nil && r.Body != http.NoBody {
		a.body = &trackedBody{r: r.Body, trailer: r.Trailer}
		r.Body = a.body
	}
	ctx := context.WithValue(r.Context(), attemptKey{}, a)
	a.trace.GotConn = func(httptrace.GotConnInfo) { a.connected.Store(true) }
	a.trace.GotFirstResponseByte = func() { a.answered.Store(true) }
	ctx = httptrace.WithClientTrace(ctx, &a.trace)
	if f.reqTimeout > 0 && r.Header.Get("Upgrade") == "" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.reqTimeout)
		defer cancel()
	}
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
	if a.body != nil {
		r.Body = a.body.r
	}
	return a.err
}

func (f *Upstream) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = f.target.Scheme
	pr.Out.URL.Host = f.target.Host
	// The Host header stays the mesh name the app called, as Envoy and Caddy do.
	pr.Out.Host = pr.In.Host
	// ReverseProxy clones the trailer map before the body is read, so the
	// values the server fills in at the body's end would never be sent.
	// Sharing the map passes request trailers on; the transport reads it
	// only after the body, on the goroutine that read the body.
	pr.Out.Trailer = pr.In.Trailer
	pr.SetXForwarded()
	pr.Out.Header.Add("Via", via(pr.In))
}

func via(r *http.Request) string { return viaValue(r)[0] }

// Via values by the protocol the app spoke, shared: header slices are never
// appended to in place, so a response without Via can take one as it is.
var (
	via11 = []string{"1.1 misaki"}
	via10 = []string{"1.0 misaki"}
	via2  = []string{"2 misaki"}
)

func viaValue(r *http.Request) []string {
	switch {
	case r.ProtoMajor == 2:
		return via2
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return via10
	}
	return via11
}

func (f *Upstream) modifyResponse(resp *http.Response) error {
	f.reached(true)
	resp.Header.Add("Via", via(resp.Request))
	if a, ok := resp.Request.Context().Value(attemptKey{}).(*attempt); ok {
		resp.Header.Set(HeaderDelivery, a.delivery)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil && resp.Body != http.NoBody {
		// Announced trailers are listed to the app before the body; the
		// values arrive after it.
		dropForbiddenTrailers(resp.Trailer)
		resp.Body = &trailerFilter{ReadCloser: resp.Body, resp: resp}
	}
	return nil
}

func (f *Upstream) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	a, _ := r.Context().Value(attemptKey{}).(*attempt)
	// A request whose app left or whose own timeout passed says nothing
	// about the upstream, even when it ended in the middle of a dial.
	if a != nil && r.Context().Err() == nil {
		switch {
		case isDialError(err) && !a.connected.Load() && (a.body == nil || !a.body.touched.Load()):
			// The first dial failed. (A failed dial after a connection
			// is the Transport's own second try: the first may have
			// reached the upstream.)
			a.err = fmt.Errorf("%w: %w", ErrNotSent, err)
			return
		case !a.answered.Load() && (a.connected.Load() || noResponse(err)) && resendable(r) && a.bodyErr() == nil:
			// A connection took the request and no byte of a
			// response came back, however the Transport words it
			// (closed, reset, silent past the response-header
			// timeout, its own second try failing to dial, a close
			// during the write): the upstream may have seen the
			// request; nothing answered it. Without a connection,
			// noResponse tells a handshake cut off from a refusal.
			a.err = fmt.Errorf("%w: %w", ErrNoResponse, err)
			return
		}
	}
	if a != nil {
		a.err = err
	}
	if berr := a.bodyErr(); berr != nil && r.Context().Err() == nil {
		// The app's body broke, not the upstream: 400 and close.
		a.err = fmt.Errorf("%w: %w", ErrBadBody, berr)
		RefuseBody(w, r, berr)
		return
	}
	f.writeError(w, r, err)
}

// writeError answers the app for a failed exchange: nothing if it has gone,
// 504 for timeouts, 413 for an oversized body, 502 otherwise.
func (f *Upstream) writeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case r.Context().Err() == context.Canceled:
		// The client went away; there is no one to answer.
		return
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		f.log.Warn("upstream timeout", "err", err)
		http.Error(w, "misaki: upstream timed out: "+err.Error(), http.StatusGatewayTimeout)
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, fmt.Sprintf("misaki: request body larger than %d bytes", mbe.Limit), http.StatusRequestEntityTooLarge)
			return
		}
		f.log.Warn("upstream error", "err", err)
		http.Error(w, "misaki: upstream error: "+err.Error(), http.StatusBadGateway)
	}
}

// noResponse reports whether a failure before the Transport had a
// connection (in a TLS handshake) was the upstream closing, resetting or
// staying silent, as opposed to refusing the handshake.
func noResponse(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || isTimeout(err)
}

// isDialError reports whether err is a failure to connect (refused, timed
// out, no route, DNS), as opposed to a failure after the request was sent.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// trackedBody records whether the transport read the body, and how
// reading it failed, and keeps the server's body open when the transport
// closes it after a failed dial, so the request can be retried intact. At
// the body's end it drops the trailer fields that must not pass on.
type trackedBody struct {
	r       io.ReadCloser
	trailer http.Header // the request's, shared with the outgoing request; nil if none declared
	touched atomic.Bool // the transport reads on its own goroutine
	err     atomic.Pointer[error]
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.touched.Store(true)
	n, err := b.r.Read(p)
	switch {
	case err == io.EOF && b.trailer != nil:
		// The server filled the trailers in before returning EOF, and
		// the transport writes them after it, on this goroutine.
		dropForbiddenTrailers(b.trailer)
	case err != nil && err != io.EOF && !isTooLarge(err):
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// bodyErr returns the error reading the request body, other than its
// size limit, if any; nil-safe.
func (a *attempt) bodyErr() error {
	if a == nil || a.body == nil {
		return nil
	}
	if p := a.body.err.Load(); p != nil {
		return *p
	}
	return nil
}

func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func (b *trackedBody) Close() error { return nil }
