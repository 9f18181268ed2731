package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/proxy/hold"
	"github.com/misaki-io/misaki/internal/uuidv7"
)

// maxNotSentRetries bounds how often one request is sent again after an
// attempt that was not delivered (a failed dial, or no response) while its
// route keeps flapping back to usable.
const maxNotSentRetries = 8

// ServeHTTP serves one app request: match the route, forward it at once if
// the route is usable, otherwise hold it until the route is usable, the hold
// window passes, or the app goes away.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	forward.CloseAmbiguous(w, r)
	set := s.set.Load()
	i := set.table.Match(r.Host, r.URL.Path, r.Header)
	if i < 0 {
		s.metrics.requests.WithLabelValues("", outcomeNoRoute).Inc()
		http.Error(w, fmt.Sprintf("misaki: no route for host %q", r.Host), http.StatusNotFound)
		return
	}
	rt := set.routes[i]
	s.active.Add(1)
	rt.inflight.Add(1)
	defer func() {
		rt.inflight.Add(-1)
		s.active.Add(-1)
	}()
	start := time.Now()
	maxBody := int64(rt.cfg.MaxBodyBytes)
	if r.ContentLength > maxBody {
		rt.count[outcomeTooLarge].Inc()
		http.Error(w, fmt.Sprintf("misaki: request body of %d bytes is larger than the route's limit of %d", r.ContentLength, maxBody), http.StatusRequestEntityTooLarge)
		return
	}
	// A body the lean server has already read in full (a known length
	// within the limit just checked) is taken as it is.
	var read []byte
	if rb, ok := r.Body.(interface{ Bytes() []byte }); ok {
		read = rb.Bytes()
	} else if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if r.ProtoMajor == 1 {
			// Stream both ways at once, as Envoy does: the upstream may
			// answer while the app is still sending (HTTP/2 always can).
			http.NewResponseController(w).EnableFullDuplex()
		}
	}

	delivery := outcomeDirect
	grpc := isGRPC(r)
	var (
		body      []byte
		buffered  bool
		resent    bool // an attempt got no response: the next goes with the same key
		holdUntil time.Time
		window    time.Duration
	)
	switch {
	case read != nil:
		body, buffered = read, true
	case r.ContentLength > 0 && r.ContentLength <= resendBodyMax:
		// A small body of known length is read before the first attempt,
		// so that the request can be sent again whole if the upstream
		// closes or stays silent before answering.
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			s.bodyError(w, rt, err)
			return
		}
		buffered = true
	}
	if (buffered || r.ContentLength == 0) && !safeMethod(r.Method) &&
		r.Header["Idempotency-Key"] == nil && r.Header["X-Idempotency-Key"] == nil {
		// A request the proxy may send twice carries a key from the first
		// attempt, so the cloud gateway can answer a repeat from its store.
		r.Header.Set("Idempotency-Key", uuidv7.New())
	}
	// startWindow starts the request's hold window, once: when it is first
	// held, or when an attempt first fails to deliver. It reports whether
	// this call started it.
	startWindow := func() bool {
		if !holdUntil.IsZero() {
			return false
		}
		window = holdWindow(rt.cfg.Offline.Hold.D(), r.Header)
		holdUntil = s.clock.Now().Add(window)
		return true
	}
	for attempt := 0; ; attempt++ {
		if !rt.usable.Load() {
			if startWindow() {
				if window <= 0 || respondAsync(r.Header) {
					// Nothing to wait for, or the app asked not to wait
					// ("Prefer: respond-async"): spool at once, the body
					// streamed to disk.
					if ok, _ := s.spoolable(rt, r); ok {
						s.spoolRequest(w, r, rt, body, buffered)
						return
					}
				}
			}
			// A body that was not read up front (unknown length, or
			// larger than resendBodyMax) is not read while held either:
			// it stays with the app, its flow control holding the app back,
			// and streams upstream once the route is usable. So a
			// bidirectional gRPC stream or a long upload is held for the
			// window like any request, then answered and released, and a
			// held request costs its headers only.
			proceed, expired := s.hold(w, r, rt, int64(len(body))+headerSize(r), holdUntil)
			if expired {
				s.offline(w, r, rt, body, buffered, window)
				return
			}
			if !proceed {
				return
			}
			delivery = outcomeHeld
		}
		if buffered && (attempt > 0 || read == nil) {
			// A fresh reader over the bytes for each attempt; the lean
			// server's own body serves the first (it offers its bytes, so
			// the forwarder knows it can be sent again).
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.GetBody = bodyGetter(body)
		}
		if grpc && delivery == outcomeHeld && !shortenGRPCTimeout(r.Header, time.Since(start)) {
			// The app's deadline passed while the call was held.
			rt.count[outcomeHoldExpired].Inc()
			writeGRPCStatus(w, grpcDeadlineExceeded, fmt.Sprintf("misaki: route %s: the call's grpc-timeout passed while it was held; it was not sent", rt.cfg.Name),
				grpcReasonNotSent, map[string]string{"route": rt.cfg.Name})
			return
		}
		fw := http.ResponseWriter(w)
		var catcher *inFlightCatcher
		if resent {
			catcher = newInFlightCatcher(w)
			fw = catcher
		}
		err := rt.fwd.Forward(fw, r, delivery)
		if err == nil && catcher != nil && catcher.caught {
			// The gateway is still answering the attempt that got no
			// response: ask again after its Retry-After, within the window.
			startWindow()
			wait := min(catcher.retryAfter, holdUntil.Sub(s.clock.Now()))
			if wait <= 0 {
				s.offline(w, r, rt, body, buffered, window)
				return
			}
			if attempt+1 >= maxNotSentRetries {
				s.gaveUp(w, r, rt, body, buffered, fmt.Sprintf("%d attempts got no response: the gateway was still answering an earlier one", maxNotSentRetries))
				return
			}
			t := s.clock.NewTimer(wait)
			select {
			case <-t.C():
			case <-r.Context().Done():
				t.Stop()
				rt.count[outcomeClientGone].Inc()
				return
			}
			delivery = outcomeHeld
			continue
		}
		if errors.Is(err, forward.ErrNoResponse) {
			resent = true
		}
		if s.notDelivered(rt, err) {
			// Nothing written to the app, and the route re-evaluated
			// with its upstream down: treat the request as the route's
			// offline policy says, held while the window lasts, then
			// spooled or 503.
			startWindow()
			if !s.clock.Now().Before(holdUntil) {
				s.offline(w, r, rt, body, buffered, window)
				return
			}
			if attempt+1 >= maxNotSentRetries {
				// The upstream keeps passing probes yet failing requests.
				// The answer names the last failure itself: the route's
				// reason may already be cleared by the next probe.
				s.gaveUp(w, r, rt, body, buffered, fmt.Sprintf("%d attempts were not delivered; the last: %v", maxNotSentRetries, err))
				return
			}
			continue
		}
		switch {
		case err == nil:
			rt.count[delivery].Inc()
			rt.duration[delivery].Observe(time.Since(start).Seconds())
		case errors.Is(err, forward.ErrBadBody):
			// Answered 400 and the connection closed.
			rt.count[bodyOutcome(err)].Inc()
		case isTooLarge(err):
			rt.count[outcomeTooLarge].Inc()
		case r.Context().Err() != nil:
			rt.count[outcomeClientGone].Inc()
		default:
			rt.count[outcomeUpstreamError].Inc()
		}
		return
	}
}

// notDelivered reports whether err says the request was not delivered
// (forward.ErrNotSent: the upstream could not be reached; ErrNoResponse:
// it closed or stayed silent before answering). If so it marks the route's
// upstream down and re-evaluates the route, for a live request and a
// replayed one alike.
func (s *Server) notDelivered(rt *liveRoute, err error) bool {
	switch {
	case errors.Is(err, forward.ErrNoResponse):
		rt.health.Unanswered(err)
	case errors.Is(err, forward.ErrNotSent):
		rt.health.Failed(err)
	default:
		return false
	}
	s.evaluate()
	return true
}

// bodyGetter returns a GetBody over b. It is a function of its own so that
// the handler's body variable is not captured (and moved to the heap) on
// the path that never needs it.
func bodyGetter(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// resendBodyMax is the largest body of known length read before the first
// attempt (so the request can be sent again); larger ones stream.
const resendBodyMax = 64 << 10

// safeMethod reports whether m is safe to send twice by itself (RFC 9110
// §9.2.1), so needs no Idempotency-Key to be retried.
func safeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// offline answers a request that could not be delivered within its hold
// window: spooled (202) where the route allows it, else 503.
func (s *Server) offline(w http.ResponseWriter, r *http.Request, rt *liveRoute, body []byte, buffered bool, window time.Duration) {
	if ok, why := s.spoolable(rt, r); ok {
		s.spoolRequest(w, r, rt, body, buffered)
	} else {
		s.holdExpired(w, r, rt, window, why)
	}
}

// gaveUp answers a request that maxNotSentRetries attempts did not deliver
// (reason says how) while its hold window lasts: spooled (202) where the
// route allows it, else 503.
func (s *Server) gaveUp(w http.ResponseWriter, r *http.Request, rt *liveRoute, body []byte, buffered bool, reason string) {
	ok, why := s.spoolable(rt, r)
	if ok {
		s.spoolRequest(w, r, rt, body, buffered)
		return
	}
	rt.count[outcomeGaveUp].Inc()
	if why != "" {
		reason += "; " + why
	}
	s.unavailable(w, r, rt, reason)
}

// clientWatcher is implemented by response writers whose request context does
// not end by itself when the client hangs up (internal/proxy/h1).
type clientWatcher interface {
	WatchClient(ctx context.Context) (context.Context, func())
}

// hold waits for rt to become usable. It reports proceed when the request
// should be forwarded, and expired when the window passed (the caller spools
// or answers); otherwise it has answered the app (or the app is gone).
func (s *Server) hold(w http.ResponseWriter, r *http.Request, rt *liveRoute, size int64, until time.Time) (proceed, expired bool) {
	begin := s.clock.Now()
	window := until.Sub(begin)
	ctx := r.Context()
	if cw, ok := w.(clientWatcher); ok {
		// The lean HTTP/1.1 server watches for the app hanging up only
		// while a request is held; net/http always does.
		var stop func()
		ctx, stop = cw.WatchClient(ctx)
		defer stop()
	}
	if window <= 0 {
		return false, true
	}
	o, err := rt.queue.Wait(ctx, size, window)
	if err != nil { // hold.ErrFull
		rt.count[outcomeHoldFull].Inc()
		s.unavailable(w, r, rt, "hold limit reached; too many requests are already waiting")
		return false, false
	}
	if window > 0 {
		s.metrics.holdWait.WithLabelValues(rt.cfg.Name, o.String()).Observe(s.clock.Now().Sub(begin).Seconds())
	}
	switch o {
	case hold.Released:
		return true, false
	case hold.Canceled:
		rt.count[outcomeClientGone].Inc()
		if r.Context().Err() == nil {
			// Only the watch saw the app leave: the response goes nowhere.
			panic(http.ErrAbortHandler)
		}
	case hold.Closed:
		rt.count[outcomeShutdown].Inc()
		s.unavailable(w, r, rt, "the proxy is shutting down")
	case hold.Expired:
		return false, true
	}
	return false, false
}

// holdExpired answers a request whose hold window passed (or that had none)
// and that is not spooled: 503 with Retry-After, and why not spooled.
func (s *Server) holdExpired(w http.ResponseWriter, r *http.Request, rt *liveRoute, window time.Duration, whyNotSpooled string) {
	msg := "no usable link"
	if window > 0 {
		rt.count[outcomeHoldExpired].Inc()
		msg = fmt.Sprintf("no usable link within the hold window of %v", window.Round(time.Millisecond))
	} else {
		rt.count[outcomeUnavailable].Inc()
	}
	if whyNotSpooled != "" {
		msg += "; " + whyNotSpooled
	}
	s.unavailable(w, r, rt, msg)
}

// unavailable answers a request that was not sent: 503 with Retry-After,
// or for a gRPC call grpc-status UNAVAILABLE, which a gRPC client may
// retry safely.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, rt *liveRoute, what string) {
	s.evalMu.Lock()
	reason := rt.reason
	s.evalMu.Unlock()
	secs := int(max(1, rt.cfg.Offline.RetryAfter.D().Round(time.Second)/time.Second))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	msg := fmt.Sprintf("misaki: route %s: %s", rt.cfg.Name, what)
	if reason != "" {
		msg += " (" + reason + ")"
	}
	if isGRPC(r) {
		writeGRPCStatus(w, grpcUnavailable, msg+"; the call was not sent", grpcReasonNotSent, map[string]string{"route": rt.cfg.Name})
		return
	}
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// bodyError answers a request whose body could not be read: 413 past the
// route's limit, else 400. Never 200 with nothing: the connection closes
// after it, which net/http does past the limit (http.MaxBytesReader), and
// CloseAmbiguous asked for on every chunked body, the only kind whose
// framing can break (one of known length can only end early, when the app
// has gone).
func (s *Server) bodyError(w http.ResponseWriter, rt *liveRoute, err error) {
	if isTooLarge(err) {
		rt.count[outcomeTooLarge].Inc()
		http.Error(w, fmt.Sprintf("misaki: request body larger than the route's limit of %d bytes", rt.cfg.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		return
	}
	rt.count[bodyOutcome(err)].Inc()
	http.Error(w, "misaki: malformed request body: "+err.Error(), http.StatusBadRequest)
}

// bodyOutcome is the outcome of a request whose body could not be read.
func bodyOutcome(err error) string {
	if forward.BodyCutShort(err) {
		return outcomeClientGone
	}
	return outcomeBadRequest
}

func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// holdWindow is the route's hold, shortened by the app's "Prefer: wait=N"
// (RFC 7240 §4.3) when it asks for less.
func holdWindow(route time.Duration, h http.Header) time.Duration {
	for _, v := range h.Values("Prefer") {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			name, val, ok := strings.Cut(p, "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			val, _, _ = strings.Cut(val, ";")
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`))
			if err != nil || n < 0 {
				continue
			}
			if d := time.Duration(n) * time.Second; d < route {
				return d
			}
		}
	}
	return route
}

// headerSize estimates the memory a request's line and headers take.
func headerSize(r *http.Request) int64 {
	n := len(r.Method) + len(r.RequestURI) + len(r.Host) + 16
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}
