package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/httphead"
	"github.com/misaki-io/misaki/internal/sockio"
)

// The HTTP/1.1 fast path.
//
// Most vehicle traffic is small requests to plain-HTTP upstreams (the cloud
// gateway's local side, services in the pod's cluster). For those,
// ReverseProxy plus http.Transport spend more CPU on bookkeeping than on the
// exchange: a cloned request and header map, per-request contexts and
// timers, and hand-offs between the caller and the transport's read and write
// goroutines (about a hundred allocations per request). The fast path writes
// the request straight from the app's request onto a pooled upstream
// connection and reads the response on the calling goroutine.
//
// It takes only what it can do exactly as ReverseProxy would: an http://
// upstream, no upgrade, no Expect, and no body or a body of known length up to
// fastBodyMax (read in full first, so the exchange is a plain write then
// read). Streams, chunked and large bodies, WebSockets, TLS and HTTP/2 take
// the general path.

// fastBodyMax is the largest request body the fast path takes. Larger bodies
// stream through ReverseProxy, where the upstream may answer while the app
// is still sending.
const fastBodyMax = 16 << 10

// hopHeaders are dropped in both directions (RFC 9110 §7.6.1), as ReverseProxy does.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// Request headers the fast path writes itself, or drops as ReverseProxy's
// Rewrite mode does (the app's X-Forwarded-* and Forwarded are not trusted).
var ownRequestHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "X-Forwarded-For": true,
	"X-Forwarded-Host": true, "X-Forwarded-Proto": true, "Forwarded": true,
}

// fastEligible reports whether r can take the fast path.
func (f *Upstream) fastEligible(r *http.Request) bool {
	if f.h1 == nil || r.ContentLength < 0 || r.ContentLength > fastBodyMax {
		return false
	}
	for _, k := range [...]string{"Upgrade", "Expect", "Trailer"} {
		if _, ok := r.Header[k]; ok {
			return false
		}
	}
	return true
}

// peekAfter is how long a connection may sit idle before get checks that
// the upstream has not closed it.
const peekAfter = time.Second

// maxIdleConns is how many idle connections one upstream's pool keeps (as
// nginx's "keepalive N" and Go's MaxIdleConnsPerHost); connections opened
// past it for a burst are closed when the burst ends.
const maxIdleConns = 256

// h1Pool keeps idle connections to one upstream, most recently used first.
type h1Pool struct {
	addr    string
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	idleTTL time.Duration
	// slots holds a token for every open connection, idle or busy: its
	// capacity is the upstream's connection cap.
	slots chan struct{}

	mu   sync.Mutex    // guards fields below
	idle []*h1Conn     // most recently used last
	wake chan struct{} // closed when a connection is freed; nil if no one waits
	// epoch counts closeIdle calls. A connection made in an older epoch is
	// closed when it comes back instead of going idle: one busy when the
	// endpoints changed would otherwise be reused to an endpoint that left.
	epoch uint64
}

type h1Conn struct {
	epoch    uint64 // the pool's epoch when it was dialled
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	idleFrom time.Time
	rd       time.Time // the read deadline as last set; zero: none
	body     fixedBody
}

// setReadDeadline sets the connection's read deadline unless it is set
// already: each change is a runtime timer update, and one to an earlier
// time can cost a wake-up of the network poller.
func (pc *h1Conn) setReadDeadline(t time.Time) {
	if !t.Equal(pc.rd) {
		pc.c.SetReadDeadline(t)
		pc.rd = t
	}
}

// fixedBody reads a response body of known length from the connection's
// buffer; each h1Conn has one, reused.
type fixedBody struct {
	br *bufio.Reader
	n  int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (*fixedBody) Close() error { return nil }

// bodyOf returns the reader for a response body of n bytes that follows on
// the connection.
func (pc *h1Conn) bodyOf(n int64) io.ReadCloser {
	if n == 0 {
		return http.NoBody
	}
	pc.body = fixedBody{br: pc.br, n: n}
	return &pc.body
}

func (p *h1Pool) get(ctx context.Context) (pc *h1Conn, reused bool, err error) {
	for {
		if pc, ok := p.takeIdle(); ok {
			return pc, true, nil
		}
		select {
		case p.slots <- struct{}{}:
			pc, err := p.dialNew(ctx)
			return pc, false, err
		default:
		}
		// At the cap: wait for a connection to come back or close.
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-p.freed():
		}
	}
}

// dialNew opens a connection for a slot the caller holds. The dial does not
// end with the request: a client that gives up mid-dial must not turn into a
// dial failure (which marks a healthy upstream down), so the dial runs to
// its own timeout and a connection nobody waits for any more goes idle for
// the next request, as http.Transport does.
func (p *h1Pool) dialNew(ctx context.Context) (*h1Conn, error) {
	p.mu.Lock()
	epoch := p.epoch
	p.mu.Unlock()
	type dialed struct {
		pc  *h1Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := p.dial(context.WithoutCancel(ctx), "tcp", p.addr)
		if err != nil {
			ch <- dialed{err: err}
			return
		}
		c = sockio.Wrap(c)
		ch <- dialed{pc: &h1Conn{epoch: epoch, c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}}
	}()
	select {
	case d := <-ch:
		if d.err != nil {
			p.release()
		}
		return d.pc, d.err
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.err != nil {
				p.release()
			} else {
				p.put(d.pc)
			}
		}()
		return nil, ctx.Err()
	}
}

// takeIdle pops the most recently used idle connection that is still good.
func (p *h1Pool) takeIdle() (*h1Conn, bool) {
	now := time.Now()
	for {
		p.mu.Lock()
		if len(p.idle) == 0 {
			p.mu.Unlock()
			return nil, false
		}
		pc := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		// Upstreams close idle connections after seconds (nginx: 75s, Go:
		// 90s, some 5s), so one back in the pool for less than peekAfter is
		// trusted without the extra syscall.
		idle := now.Sub(pc.idleFrom)
		if idle < p.idleTTL && idle < peekAfter {
			return pc, true
		}
		if idle < p.idleTTL {
			// A deadline kept from the last exchange may have passed,
			// and would fail the peek.
			pc.setReadDeadline(time.Time{})
			if alive(pc.c) {
				return pc, true
			}
		}
		p.discard(pc)
	}
}

// freed returns a channel closed the next time a connection goes idle or
// closes; waiters at the cap select on it.
func (p *h1Pool) freed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wake == nil {
		p.wake = make(chan struct{})
	}
	return p.wake
}

func (p *h1Pool) signalLocked() {
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
}

func (p *h1Pool) put(pc *h1Conn) {
	pc.idleFrom = time.Now()
	p.mu.Lock()
	if len(p.idle) >= maxIdleConns || pc.epoch != p.epoch {
		p.mu.Unlock()
		p.discard(pc)
		return
	}
	p.idle = append(p.idle, pc)
	p.signalLocked()
	p.mu.Unlock()
}

// discard closes a connection and frees its slot.
func (p *h1Pool) discard(pc *h1Conn) {
	pc.c.Close()
	p.release()
}

// release frees a slot and wakes a waiter.
func (p *h1Pool) release() {
	<-p.slots
	p.mu.Lock()
	p.signalLocked()
	p.mu.Unlock()
}

// closeIdle closes the idle connections, and the busy ones as they come
// back.
func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.epoch++
	p.mu.Unlock()
	for _, pc := range idle {
		p.discard(pc)
	}
}

// errNoResponse means an exchange failed before any byte of a response
// arrived: the connection was closed or reset, or the response-header
// timeout passed in silence.
var errNoResponse = errors.New("no byte of a response arrived")

// forwardFast proxies an eligible request. Its error contract is Forward's.
func (f *Upstream) forwardFast(w http.ResponseWriter, r *http.Request, delivery string) error {
	ctx := r.Context()
	if f.reqTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.reqTimeout)
		defer cancel()
	}
	var body []byte
	for attempt := 0; ; attempt++ {
		pc, reused, err := f.h1.get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				// The app left, or the request's own timeout passed,
				// while waiting for a connection: not the upstream's fault.
				return f.fail(w, r, ctx.Err())
			}
			if isDialError(err) {
				if attempt > 0 {
					// The first attempt went out on a pooled
					// connection that closed unanswered: the upstream
					// may have seen the request.
					return fmt.Errorf("%w: %w", ErrNoResponse, err)
				}
				return fmt.Errorf("%w: %w", ErrNotSent, err)
			}
			return f.fail(w, r, err)
		}
		if body == nil && r.ContentLength > 0 {
			// Read the body once the upstream is reached: a failed dial
			// leaves it untouched for the caller's hold-and-retry.
			pool := pickPool(r.ContentLength)
			bufp := pool.pool.Get().(*[]byte)
			defer pool.pool.Put(bufp)
			body = (*bufp)[:r.ContentLength]
			if _, err := io.ReadFull(r.Body, body); err != nil {
				f.h1.put(pc)
				return f.fail(w, r, err)
			}
		}
		// If the app leaves (or the request times out), unblock whatever
		// read or write is in progress on the upstream connection. A
		// context that can never end (the lean server's) needs no watch.
		stop := neverStopped
		if ctx.Done() != nil {
			stop = context.AfterFunc(ctx, func() { pc.c.SetDeadline(time.Unix(1, 0)) })
		}
		resp, err := f.exchange(ctx, pc, r, body)
		if err != nil {
			stop()
			f.h1.discard(pc)
			if ctx.Err() != nil {
				return f.fail(w, r, ctx.Err())
			}
			if errors.Is(err, errNoResponse) && resendable(r) {
				if attempt == 0 && reused {
					// A pooled connection the upstream (or a middlebox)
					// had closed: once more on a fresh one.
					continue
				}
				return fmt.Errorf("%w: %w", ErrNoResponse, err)
			}
			return f.fail(w, r, err)
		}
		return f.respond(w, r, pc, resp, delivery, stop)
	}
}

// neverStopped stands in for context.AfterFunc's stop when there is nothing
// to stop: the connection's deadline was never poked.
func neverStopped() bool { return true }

// replayable reports whether r may be sent again after a reused connection
// failed before answering: the rule http.Transport uses.
func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := r.Header["Idempotency-Key"]
	_, b := r.Header["X-Idempotency-Key"]
	return a || b
}

// resendable reports whether r may be sent again, whole, after an attempt
// that got no response: it is replayable and its body can be read again
// (none, one the caller buffered and offers through GetBody, or one that
// holds all its bytes, as the lean HTTP/1.1 server's does).
func resendable(r *http.Request) bool {
	if !replayable(r) {
		return false
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || r.GetBody != nil {
		return true
	}
	_, whole := r.Body.(interface{ Bytes() []byte })
	return whole
}

// exchange writes the request and reads the response headers.
func (f *Upstream) exchange(ctx context.Context, pc *h1Conn, r *http.Request, body []byte) (*http.Response, error) {
	// Small requests fit the socket buffer, so only the wait for the
	// response needs a deadline. One set for an earlier exchange on this
	// connection is kept while it is at least half the timeout away: it can
	// only fire early, and readResponse then sets the exact one.
	var sent time.Time
	if t := f.respHeaderTimeout; t > 0 {
		sent = time.Now()
		if end := sent.Add(t); pc.rd.Sub(sent) < t/2 || pc.rd.After(end) {
			pc.setReadDeadline(end)
		}
	} else {
		pc.setReadDeadline(time.Time{}) // one a timed request left
	}
	writeRequestHead(pc.bw, r, len(body))
	pc.bw.Write(body)
	if err := pc.bw.Flush(); err != nil {
		return nil, fmt.Errorf("forward: write request: %w: %w", errNoResponse, err)
	}
	for first := true; ; first = false {
		resp, err := f.readResponse(ctx, pc, r, sent, first)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				return nil, errors.New("forward: upstream switched protocols without an upgrade request")
			}
			continue // 1xx informational: wait for the final response
		}
		// The body may stream for as long as the request timeout allows;
		// one already buffered needs no deadline.
		if resp.ContentLength < 0 || int64(pc.br.Buffered()) < resp.ContentLength {
			dl, _ := ctx.Deadline()
			pc.setReadDeadline(dl)
		}
		return resp, nil
	}
}

// readResponse reads a response head: with httphead when it is all
// buffered and of the strict form, else with net/http. When first (no 1xx
// came before) and the connection fails before any byte arrives, the error
// wraps errNoResponse.
func (f *Upstream) readResponse(ctx context.Context, pc *h1Conn, r *http.Request, sent time.Time, first bool) (*http.Response, error) {
	for {
		b, _ := pc.br.Peek(pc.br.Buffered())
		if n, ok := httphead.HeadEnd(b); ok {
			if resp := httphead.ParseResponse(b[:n], r); resp != nil {
				pc.br.Discard(n)
				resp.Body = pc.bodyOf(resp.ContentLength)
				return resp, nil
			}
			break
		}
		if len(b) == pc.br.Size() {
			break
		}
		_, err := pc.br.Peek(len(b) + 1)
		if err == nil {
			continue
		}
		if !f.rearm(ctx, pc, err, sent) {
			if first && len(b) == 0 {
				return nil, fmt.Errorf("forward: read response: %w: %w", errNoResponse, err)
			}
			return nil, err
		}
	}
	if t := f.respHeaderTimeout; t > 0 {
		pc.setReadDeadline(sent.Add(t))
	}
	return http.ReadResponse(pc.br, r)
}

// rearm handles a read that hit a deadline kept from an earlier exchange
// before this one's response-header timeout: it sets the exact deadline and
// reports whether to read on.
func (f *Upstream) rearm(ctx context.Context, pc *h1Conn, err error, sent time.Time) bool {
	t := f.respHeaderTimeout
	if t <= 0 || !errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil || time.Since(sent) >= t {
		return false
	}
	pc.setReadDeadline(sent.Add(t))
	// The context's watch may have poked the deadline just before.
	return ctx.Err() == nil
}

// writeRequestHead writes the request line and headers the way ReverseProxy
// with SetXForwarded would send them.
func writeRequestHead(bw *bufio.Writer, r *http.Request, bodyLen int) {
	uri := r.RequestURI
	if uri == "" || (uri[0] != '/' && uri != "*") {
		uri = r.URL.RequestURI()
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if hopHeaders[k] || ownRequestHeaders[k] || (len(conn) > 0 && headerHasToken(conn, k)) {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if te := r.Header["Te"]; len(te) > 0 && headerHasToken(te, "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		bw.WriteString("X-Forwarded-For: ")
		bw.WriteString(host)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Host: ")
	bw.WriteString(r.Host)
	if r.TLS == nil {
		bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	} else {
		bw.WriteString("\r\nX-Forwarded-Proto: https\r\n")
	}
	bw.WriteString("Via: ")
	bw.WriteString(via(r))
	bw.WriteString("\r\n")
	if bodyLen > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.Itoa(bodyLen))
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// respond copies the upstream response to the app and returns the
// connection to the pool once its body is read to the end.
func (f *Upstream) respond(w http.ResponseWriter, r *http.Request, pc *h1Conn, resp *http.Response, delivery string, stop func() bool) error {
	f.reached(true)
	h := w.Header()
	conn := resp.Header["Connection"]
	for k, vs := range resp.Header {
		if hopHeaders[k] || (len(conn) > 0 && headerHasToken(conn, k)) {
			continue
		}
		h[k] = vs
	}
	if vs := h["Via"]; len(vs) == 0 {
		h["Via"] = viaValue(r)
	} else {
		h["Via"] = append(vs[:len(vs):len(vs)], via(r))
	}
	h[HeaderDelivery] = deliveryValue(delivery)
	w.WriteHeader(resp.StatusCode)

	pool := pickPool(resp.ContentLength)
	bufp := pool.pool.Get().(*[]byte)
	defer pool.pool.Put(bufp)
	buf := *bufp
	var flusher http.Flusher
	if resp.ContentLength < 0 {
		// Unknown length: a stream (server-sent events, chunked progress);
		// pass each piece on at once, as ReverseProxy does.
		flusher, _ = w.(http.Flusher)
	}
	var werr error
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr = w.Write(buf[:n]); werr != nil {
				break
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			werr = rerr
			break
		}
	}
	intact := stop() // false: the deadline was poked, the connection is spoiled
	if werr != nil {
		// The app went away or the upstream broke off mid-body: the
		// connection cannot be reused, and the app's response is cut.
		f.h1.discard(pc)
		if r.Context().Err() == nil {
			f.log.Warn("upstream response body", "err", werr)
			panic(http.ErrAbortHandler)
		}
		return werr
	}
	for k, vs := range resp.Trailer {
		if TrailerAllowed(k) {
			h[http.TrailerPrefix+k] = vs
		}
	}
	if resp.Close || !intact {
		f.h1.discard(pc)
		return nil
	}
	f.h1.put(pc)
	return nil
}

var deliveryValues = map[string][]string{"direct": {"direct"}, "held": {"held"}}

// deliveryValue returns a shared header value for the common deliveries;
// header slices are never appended to in place, so sharing is safe.
func deliveryValue(d string) []string {
	if v, ok := deliveryValues[d]; ok {
		return v
	}
	return []string{d}
}

// pickPool returns the small buffer pool for messages known to fit in it.
func pickPool(contentLength int64) *bufferPool {
	if contentLength >= 0 && contentLength <= 4<<10 {
		return smallBufPool
	}
	return bufPool
}

// fail answers a request the fast path could not complete.
func (f *Upstream) fail(w http.ResponseWriter, r *http.Request, err error) error {
	f.writeError(w, r, err)
	return err
}

// headerHasToken reports whether the comma-separated values hold token,
// case-insensitively (as header names listed in Connection are).
func headerHasToken(vs []string, token string) bool {
	for _, v := range vs {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}
