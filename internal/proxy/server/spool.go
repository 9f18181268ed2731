package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/proxy/admin"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/replay"
	"github.com/misaki-io/misaki/internal/proxy/spool"
	"github.com/misaki-io/misaki/internal/uuidv7"
)

// Misaki's own headers for spooling.
const (
	headerRequestID = "Misaki-Request-Id"
	headerCallback  = "Misaki-Callback"
	deliverySpooled = "spooled"
)

// spooling is the durable path: the spool, the results of finished
// requests, and the replayer. It exists when some route spools. It serves
// the admin API's /v1/spool and /v1/requests/{id}.
type spooling struct {
	store    *spool.Spool
	results  *replay.Results
	replayer *replay.Replayer
	dir      string // spool.dir
	clock    clock.Clock
	requests string // "http://<admin>/v1/requests/": the 202's Location, less the id
}

var _ admin.Spool = (*spooling)(nil)

// spools reports whether the proxy has a spool: some route spools, or
// routes come from the controller and spool.dir is set. It reads only the
// startup config, so Apply may ask it while Run opens the spool.
func (s *Server) spools() bool {
	// With routes from the controller, any later set may spool.
	return s.cfg.XDS.Server != "" && s.cfg.Spool.Dir != "" ||
		slices.ContainsFunc(s.cfg.Routes, func(r config.Route) bool { return r.Offline.Spool })
}

// openSpool opens the spool and wires the replayer (Run calls it).
func (s *Server) openSpool() error {
	c := s.cfg.Spool
	results, err := replay.NewResults(filepath.Join(c.Dir, "results"), c.Retention.D(), s.clock.Now)
	if err != nil {
		return fmt.Errorf("spool.dir: %w", err)
	}
	sp, err := spool.Open(spool.Options{
		Dir: c.Dir, Sync: spool.SyncPolicy(c.Sync), SyncInterval: c.SyncInterval.D(),
		MaxBytes: int64(c.MaxBytes), MaxRecords: int64(c.MaxRequests),
		Now: s.clock.Now, Log: s.log,
		BeforeSync: results.Flush, // a done frame is never durable before its result
	})
	if err != nil {
		return fmt.Errorf("spool.dir: %w", err)
	}
	s.spool = &spooling{store: sp, results: results, dir: c.Dir, clock: s.clock,
		requests: "http://" + s.AdminAddr() + "/v1/requests/"}
	s.spool.replayer = replay.New(replay.Options{
		Spool: sp, Results: results, Targets: s.replayTarget,
		Concurrency: c.Replay.Concurrency, BackoffMin: c.Replay.Backoff.Initial.D(), BackoffMax: c.Replay.Backoff.Max.D(),
		MaxResponseBytes: int64(c.MaxResponseBytes), Clock: s.clock, Log: s.log.With("component", "replay"),
		Callbacks: &http.Client{Timeout: 30 * time.Second},
		OnOutcome: s.metrics.countSpoolOutcome,
	})
	return nil
}

// runSpool runs the spool's fsync loop and the replayer until ctx ends,
// and closes the spool once httpDone says no request can write to it.
func (s *Server) runSpool(ctx context.Context, httpDone <-chan struct{}) error {
	done := make(chan error, 1)
	go func() { done <- s.spool.store.Run(ctx) }()
	err := s.spool.replayer.Run(ctx)
	<-done
	<-httpDone
	return errors.Join(err, s.spool.store.Close(), s.spool.results.Close())
}

// spoolable reports whether r may be spooled on rt, and if not, why.
func (s *Server) spoolable(rt *liveRoute, r *http.Request) (bool, string) {
	switch {
	case !rt.cfg.Offline.Spool || s.spool == nil:
		return false, ""
	case slices.Contains(rt.cfg.Offline.UnsafeMethods, r.Method):
		return false, fmt.Sprintf("%s is not spooled on this route (offline.unsafeMethods)", r.Method)
	case r.Header.Get("Upgrade") != "":
		return false, "upgrades (WebSocket) cannot be spooled"
	case rt.cfg.Offline.GRPC != config.GRPCSpool && isGRPC(r):
		return false, "gRPC calls are not spooled unless the route sets offline.grpc: spool"
	}
	return true, ""
}

// respondAsync reports whether the app asked for "Prefer: respond-async"
// (RFC 7240 §4.1).
func respondAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for p := range strings.SplitSeq(v, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// spoolRequest writes r to the spool and answers 202, or answers why it
// could not. body is the body already read (held requests); otherwise r.Body
// is streamed to disk.
func (s *Server) spoolRequest(w http.ResponseWriter, r *http.Request, rt *liveRoute, body []byte, bodyRead bool) {
	cb := r.Header.Get(headerCallback)
	if cb != "" {
		if u, err := url.Parse(cb); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			rt.count[outcomeSpoolRefused].Inc()
			http.Error(w, fmt.Sprintf("misaki: %s %q is not an absolute http:// or https:// URL", headerCallback, cb), http.StatusBadRequest)
			return
		}
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		// Time-ordered (UUIDv7), not random: the gateway's store is a
		// B+tree of vehicle and key, so one vehicle's new keys land at the
		// end of its range, on pages a checkpoint writes anyway
		// (BenchmarkCheckpoint in internal/gateway/idem measures both).
		key = uuidv7.New()
	}
	h := r.Header.Clone()
	// The app's grpc-timeout is its deadline for this call, long past when
	// the call is replayed.
	for _, k := range []string{headerCallback, "Idempotency-Key", "Prefer", "Grpc-Timeout", "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Proxy-Connection"} {
		delete(h, k)
	}
	rec := &spool.Record{
		Route: rt.cfg.Name, Method: r.Method, URL: "http://" + r.Host + r.URL.RequestURI(),
		Header: h, IdempotencyKey: key, Callback: cb, Priority: rt.cfg.Offline.Priority,
	}
	if ttl := rt.cfg.Offline.TTL.D(); ttl > 0 {
		rec.Expires = s.clock.Now().Add(ttl).UnixNano()
	}
	var src io.Reader
	var rb *bodyReader
	if bodyRead {
		rec.Body = body
	} else if r.Body != nil && r.Body != http.NoBody {
		rb = &bodyReader{r: r.Body}
		src = rb
	}
	lim := spool.Limits{MaxBytes: int64(rt.cfg.Offline.Quota.Bytes), MaxRecords: int64(rt.cfg.Offline.Quota.Requests), Evict: spool.Reject}
	if rt.cfg.Offline.Eviction == config.EvictDropOldest {
		lim.Evict = spool.DropOldest
	}
	seq, err := s.spool.store.Enqueue(rec, src, lim)
	if err != nil {
		switch {
		case isTooLarge(err):
			s.bodyError(w, rt, err)
		case rb != nil && rb.err != nil:
			// The app's body broke, not the spool.
			s.bodyError(w, rt, rb.err)
		case errors.Is(err, spool.ErrFull), errors.Is(err, syscall.ENOSPC):
			rt.count[outcomeSpoolFull].Inc()
			http.Error(w, fmt.Sprintf("misaki: route %s: the request was not stored: %v", rt.cfg.Name, err), http.StatusInsufficientStorage)
		case r.Context().Err() != nil:
			rt.count[outcomeClientGone].Inc()
		default:
			rt.count[outcomeSpoolFull].Inc()
			s.log.Error("spooling a request", "route", rt.cfg.Name, "err", err)
			s.unavailable(w, r, rt, "the request could not be stored: "+err.Error())
		}
		return
	}
	id := replay.ID(seq)
	rt.count[outcomeSpooled].Inc()
	s.spool.replayer.Kick()
	w.Header().Set(headerRequestID, id)
	w.Header().Set("Location", s.spool.requests+id)
	w.Header().Set(forward.HeaderDelivery, deliverySpooled)
	if isGRPC(r) {
		// Accepted for later: not UNAVAILABLE, which clients retry (and a
		// retry would be a second call). DEADLINE_EXCEEDED says the call
		// did not complete in time and may still complete; the id in the
		// trailers is where its answer will be.
		writeGRPCStatus(w, grpcDeadlineExceeded, fmt.Sprintf("misaki: route %s: accepted for later delivery as request %s; its answer will be at %s", rt.cfg.Name, id, s.spool.requests+id),
			grpcReasonSpooled, map[string]string{"route": rt.cfg.Name, "request-id": id})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(proxyv1.Accepted{ID: id, State: proxyv1.StateQueued, Route: rt.cfg.Name})
}

// bodyReader remembers the first error reading a request body, to tell it
// from the spool's own errors.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// Request serves GET /v1/requests/{id}: a request in the spool, or the
// result of one that finished.
func (sp *spooling) Request(id string) (proxyv1.Request, error) {
	if seq, err := replay.ParseID(id); err == nil {
		if st, route, ok := sp.store.Lookup(seq); ok {
			attempts, _ := sp.store.Attempts(seq)
			return proxyv1.Request{ID: id, Route: route, State: string(st), Attempts: attempts}, nil
		}
	}
	res, err := sp.results.Get(id)
	switch {
	case errors.Is(err, replay.ErrNoResult):
		return proxyv1.Request{}, admin.ErrNotFound
	case err != nil:
		return proxyv1.Request{}, err
	}
	return *res, nil
}

// Cancel serves DELETE /v1/requests/{id}.
func (sp *spooling) Cancel(id string) error {
	switch err := sp.replayer.Cancel(id); {
	case errors.Is(err, spool.ErrNotFound):
		return admin.ErrNotFound
	case errors.Is(err, spool.ErrInFlight):
		return fmt.Errorf("%w: it is being delivered", admin.ErrConflict)
	default:
		return err
	}
}

// Status serves GET /v1/spool.
func (sp *spooling) Status() proxyv1.Spool {
	st := sp.store.Stats()
	out := proxyv1.Spool{
		Enabled: true, Dir: sp.dir, Routes: []proxyv1.SpoolRoute{},
		Stats: st,
	}
	now := sp.clock.Now()
	for _, rs := range sp.store.Routes() {
		r := proxyv1.SpoolRoute{Route: rs.Route, Priority: rs.Priority, Depth: rs.Records, Bytes: rs.Bytes, Delivering: rs.InFlight}
		if !rs.Oldest.IsZero() {
			r.OldestAge = max(0, now.Sub(rs.Oldest).Seconds())
		}
		out.Routes = append(out.Routes, r)
	}
	return out
}

// replayTarget is how the replayer delivers a route's spooled requests:
// through the route of that name in the current set.
func (s *Server) replayTarget(name string) (replay.Target, bool) {
	rt := s.set.Load().byName[name]
	if rt == nil {
		return nil, false
	}
	return replayRoute{s, rt}, true
}

// replayRoute is a route as the replayer delivers its spooled requests.
type replayRoute struct {
	s  *Server
	rt *liveRoute
}

var _ replay.Target = replayRoute{}

func (r replayRoute) Usable() bool { return r.rt.usable.Load() }

func (r replayRoute) Forward(w http.ResponseWriter, req *http.Request) error {
	r.rt.inflight.Add(1)
	defer r.rt.inflight.Add(-1)
	return r.rt.fwd.Forward(w, req, deliverySpooled)
}

// Failed marks the upstream down when the delivery did not reach it, or
// got no answer, as a live request's failure does (notDelivered).
func (r replayRoute) Failed(err error) { r.s.notDelivered(r.rt, err) }

func (r replayRoute) Batch() int { return r.rt.cfg.Offline.Batch }
