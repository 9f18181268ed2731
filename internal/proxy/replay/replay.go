// Package replay delivers spooled requests once a link their route may use
// returns, and keeps what happened to each for the app: the result a poll
// of GET /v1/requests/{id} reads, and the callback the app asked for.
//
// Routes are served highest priority first and FIFO within a route. Few
// requests are in flight at once (spool.replay.concurrency), so live
// requests never queue behind a backlog. A connection error, 5xx, 408 or 429
// (or a 409 with Retry-After, the gateway's "still in flight") puts the
// request back at the head of its route, and the route waits a backoff with
// full jitter. Other answers are final. Every delivery carries
// the request's Idempotency-Key, so that the cloud gateway can answer a
// repeat (after a crash lost a done frame) from its store.
package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/batch"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/spool"
)

// Target is one route as the replayer uses it.
type Target interface {
	// Usable reports whether the route has a usable link now.
	Usable() bool
	// Forward sends r upstream and writes the answer to w (the forwarder's
	// Forward with delivery "spooled").
	Forward(w http.ResponseWriter, r *http.Request) error
	// Failed is told of a Forward error after which the request will be
	// retried (not of one that came because the replayer is stopping).
	// If the error means the upstream was not reached, or gave no answer
	// at all, the route stops being usable until the upstream answers
	// again.
	Failed(err error)
	// Batch, when over 1, is how many requests to send per exchange to
	// the upstream, which must be a Misaki gateway (package batch).
	// Requests whose body is in a file of its own go one by one.
	Batch() int
}

// Outcomes counted by OnOutcome.
const (
	OutcomeDelivered = "delivered"
	OutcomeFailed    = "failed"
	OutcomeRetried   = "retried"
	OutcomeExpired   = "expired"
	OutcomeEvicted   = "evicted"
	OutcomeCancelled = "cancelled"
)

// Options configure a Replayer.
type Options struct {
	Spool   *spool.Spool
	Results *Results
	// Targets returns how to deliver a route's requests; false while the
	// route is unknown (its requests wait).
	Targets          func(route string) (Target, bool)
	Concurrency      int
	BackoffMin       time.Duration
	BackoffMax       time.Duration
	MaxResponseBytes int64
	Clock            clock.Clock
	Log              *slog.Logger
	// Callbacks posts results to apps' Misaki-Callback URLs.
	Callbacks *http.Client
	// OnOutcome counts outcomes for metrics; optional.
	OnOutcome func(route, outcome string)
}

// Replayer drains the spool.
type Replayer struct {
	opts Options
	kick chan struct{}
	wg   sync.WaitGroup // deliveries and callbacks in flight

	mu       sync.Mutex // guards fields below
	inFlight int
	routes   map[string]*routeState
}

type routeState struct {
	notBefore time.Time
	failures  int
}

// New returns a replayer; Run starts it.
func New(o Options) *Replayer {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.OnOutcome == nil {
		o.OnOutcome = func(string, string) {}
	}
	return &Replayer{opts: o, kick: make(chan struct{}, 1), routes: map[string]*routeState{}}
}

// Kick asks the replayer to look at the spool now: after an enqueue, or a
// route becoming usable.
func (p *Replayer) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, then waits for deliveries in flight.
// Callbacks run until ctx ends too.
func (p *Replayer) Run(ctx context.Context) error {
	// Callbacks a crash left owed: read in the background, so that a large
	// store of results does not delay the replay.
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		owed := p.opts.Results.Owed()
		rep := p.opts.Results.Report()
		if rep.DamagedFrames > 0 {
			p.opts.Log.Warn("damaged results skipped (each costs its own request's result)", "frames", rep.DamagedFrames, "bytes", rep.DamagedBytes)
		}
		for _, err := range rep.Unconverted {
			p.opts.Log.Error("a results file of the previous release was kept unconverted; its results are not found until it is", "err", err)
		}
		for _, r := range owed {
			p.callback(ctx, r)
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	resultsAt := p.opts.Clock.Now().Add(time.Minute)
	expire := true // the spool's TTL sweep walks every entry: once a second, not per kick
	for {
		if expire {
			p.sweep(ctx)
			if now := p.opts.Clock.Now(); now.After(resultsAt) {
				p.opts.Results.Sweep()
				resultsAt = now.Add(time.Minute)
			}
			expire = false
		}
		p.dispatch(ctx)
		select {
		case <-ctx.Done():
			p.wg.Wait()
			return nil
		case <-p.kick:
		case <-tick.C:
			expire = true
		}
	}
}

// sweep records the requests the spool expired or evicted.
func (p *Replayer) sweep(ctx context.Context) {
	for _, d := range p.opts.Spool.Sweep() {
		state, reason := OutcomeExpired, "its TTL passed before a usable link returned"
		if d.Outcome == spool.Evicted {
			state, reason = OutcomeEvicted, "dropped to make room for newer requests (offline.eviction: drop-oldest)"
		}
		p.finish(ctx, &Result{ID: ID(d.Seq), Route: d.Route, State: state, Reason: reason, Attempts: d.Attempts}, nil)
	}
}

// dispatch starts deliveries while there are free slots, by priority.
func (p *Replayer) dispatch(ctx context.Context) {
	now := p.opts.Clock.Now()
	for _, rs := range p.opts.Spool.Routes() {
		if rs.Records-int64(rs.InFlight) <= 0 {
			continue
		}
		t, ok := p.opts.Targets(rs.Route)
		if !ok || !t.Usable() {
			continue
		}
		p.mu.Lock()
		st := p.state(rs.Route)
		wait := now.Before(st.notBefore)
		p.mu.Unlock()
		if wait {
			continue
		}
		for {
			p.mu.Lock()
			full := p.inFlight >= p.opts.Concurrency
			if !full {
				p.inFlight++
			}
			p.mu.Unlock()
			if full {
				return
			}
			recs, _ := p.opts.Spool.NextN(rs.Route, max(t.Batch(), 1))
			if len(recs) == 0 {
				p.mu.Lock()
				p.inFlight--
				p.mu.Unlock()
				break
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				var inline []*spool.Record
				for _, rec := range recs {
					if t.Batch() > 1 && rec.BodyFile == "" {
						inline = append(inline, rec)
					} else {
						p.deliver(ctx, rs.Route, t, rec)
					}
				}
				if len(inline) > 0 {
					p.deliverBatch(ctx, rs.Route, t, inline)
				}
				p.mu.Lock()
				p.inFlight--
				p.mu.Unlock()
				p.Kick()
			}()
		}
	}
}

func (p *Replayer) state(route string) *routeState {
	st := p.routes[route]
	if st == nil {
		st = &routeState{}
		p.routes[route] = st
	}
	return st
}

// deliver sends one spooled request and settles it.
func (p *Replayer) deliver(ctx context.Context, route string, t Target, rec *spool.Record) {
	cw := newCapture(p.opts.MaxResponseBytes)
	err := p.send(ctx, t, rec, cw)
	p.settle(ctx, route, t, rec, cw, err)
}

// deliverBatch sends records whose bodies are inline in one exchange with a
// Misaki gateway (package batch) and settles each by its own answer. A
// failed exchange retries them all; the gateway answers any it had already
// answered from its store.
func (p *Replayer) deliverBatch(ctx context.Context, route string, t Target, recs []*spool.Record) {
	items := make([]batch.Item, 0, len(recs))
	sent := recs[:0:0]
	for _, rec := range recs {
		u, err := url.Parse(rec.URL)
		if err != nil {
			p.settle(ctx, route, t, rec, newCapture(0), fmt.Errorf("%w: %w", errUnreadable, err))
			continue
		}
		items = append(items, batch.Item{Method: rec.Method, Target: u.RequestURI(), Host: u.Host, Header: deliveryHeader(rec), Body: rec.Body})
		sent = append(sent, rec)
	}
	if len(sent) == 0 {
		return
	}
	answers, err := p.exchangeBatch(ctx, t, items)
	if errors.Is(err, errBatchAnswerTooLarge) {
		// Retried as a batch it would be too large again: one by one,
		// each answer is cut at spool.maxResponseBytes and kept.
		p.opts.Log.Info("the answer to a batch is too large; delivering its requests one by one", "route", route, "requests", len(sent), "err", err)
		for _, rec := range sent {
			p.deliver(ctx, route, t, rec)
		}
		return
	}
	if err != nil {
		p.opts.Log.Warn("batch delivery failed; its requests will be retried", "route", route, "requests", len(sent), "err", err)
		for _, rec := range sent {
			p.settle(ctx, route, t, rec, newCapture(0), err)
		}
		return
	}
	var results []*Result
	var seqs []uint64
	var outcomes []spool.Outcome
	for i, rec := range sent {
		cw := newCapture(p.opts.MaxResponseBytes)
		for k, vs := range answers[i].Header {
			cw.header[k] = vs
		}
		cw.WriteHeader(answers[i].Status)
		cw.Write(answers[i].Body)
		if res, o := p.outcome(ctx, route, t, rec, cw, nil); res != nil {
			results, seqs, outcomes = append(results, res), append(seqs, rec.Seq), append(outcomes, o)
		}
	}
	if len(results) > 0 {
		p.finishAll(ctx, results, func() error { return p.opts.Spool.FinishAll(seqs, outcomes) })
	}
}

// exchangeBatch POSTs items to the route's gateway and returns its answers,
// one per item, in order.
func (p *Replayer) exchangeBatch(ctx context.Context, t Target, items []batch.Item) ([]batch.Item, error) {
	var body bytes.Buffer
	ct := batch.Write(&body, items)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+items[0].Host+batch.Path, &body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ct)
	req.ContentLength = int64(body.Len())
	cw := newCapture(int64(len(items))*p.opts.MaxResponseBytes + 1<<20)
	if err := t.Forward(cw, req); err != nil {
		return nil, err
	}
	switch {
	case cw.status != http.StatusOK:
		return nil, fmt.Errorf("replay: the upstream answered a batch with %d; is it a Misaki gateway? (offline.batch)", cw.status)
	case cw.truncated:
		return nil, fmt.Errorf("%w: a batch of %d, over %d bytes", errBatchAnswerTooLarge, len(items), cw.max)
	}
	answers, err := batch.Parse(cw.body.Bytes(), cw.header.Get("Content-Type"), false)
	if err == nil && len(answers) != len(items) {
		err = fmt.Errorf("replay: the upstream answered %d of a batch of %d", len(answers), len(items))
	}
	return answers, err
}

// deliveryHeader is rec's header as delivered: the app's, with the
// request's Idempotency-Key.
func deliveryHeader(rec *spool.Record) http.Header {
	h := rec.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Idempotency-Key", rec.IdempotencyKey)
	return h
}

// settle records what came of one delivery: a result, or a retry.
func (p *Replayer) settle(ctx context.Context, route string, t Target, rec *spool.Record, cw *capture, err error) {
	if res, o := p.outcome(ctx, route, t, rec, cw, err); res != nil {
		p.finish(ctx, res, func() error { return p.opts.Spool.Finish(rec.Seq, o) })
	}
}

// outcome decides what came of one delivery: the result to store and how
// the request ends in the spool, or a nil result when it was put back for
// a retry.
func (p *Replayer) outcome(ctx context.Context, route string, t Target, rec *spool.Record, cw *capture, err error) (*Result, spool.Outcome) {
	attempts, _ := p.opts.Spool.Attempts(rec.Seq)
	attempts++
	res := &Result{ID: ID(rec.Seq), Route: route, Attempts: attempts, Callback: rec.Callback}
	switch {
	case err != nil && errors.Is(err, errUnreadable):
		res.State, res.Reason = OutcomeFailed, err.Error()
	case err == nil && cw.status < 300 && grpcRetryable(cw.header):
		p.retry(route, rec.Seq, errors.New("replay: the upstream answered grpc-status "+grpcStatus(cw.header)), cw.status)
		return nil, 0
	case err != nil || retryable(cw.status, cw.header):
		if err != nil && ctx.Err() == nil {
			t.Failed(err)
		}
		p.retry(route, rec.Seq, err, cw.status)
		return nil, 0
	case cw.status >= 400:
		res.State, res.Reason = OutcomeFailed, fmt.Sprintf("the upstream answered %d", cw.status)
		res.Response = cw.response()
	case isGRPCResponse(cw.header) && grpcStatus(cw.header) != "0":
		res.State, res.Reason = OutcomeFailed, "the upstream answered grpc-status "+grpcStatus(cw.header)
		res.Response = cw.response()
	default:
		res.State = OutcomeDelivered
		res.Response = cw.response()
	}
	p.mu.Lock()
	p.state(route).failures = 0
	p.mu.Unlock()
	if res.State == OutcomeFailed {
		return res, spool.Failed
	}
	return res, spool.Delivered
}

var errUnreadable = errors.New("replay: the spooled request cannot be read back")

// errBatchAnswerTooLarge means a batch's answer was larger than its
// requests' answers may be kept together.
var errBatchAnswerTooLarge = errors.New("replay: the answer to a batch is too large")

// send forwards rec, turning a handler abort into an error.
func (p *Replayer) send(ctx context.Context, t Target, rec *spool.Record, w http.ResponseWriter) (err error) {
	body, err := p.opts.Spool.OpenBody(rec)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreadable, err)
	}
	defer body.Close()
	req, err := http.NewRequestWithContext(ctx, rec.Method, rec.URL, body)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreadable, err)
	}
	req.Header = deliveryHeader(rec)
	req.ContentLength = int64(len(rec.Body))
	if rec.BodyFile != "" {
		req.ContentLength = rec.BodySize
	}
	if req.ContentLength == 0 {
		req.Body = http.NoBody
	}
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			err = errors.New("replay: the upstream broke off its response")
		}
	}()
	return t.Forward(w, req)
}

// retryable reports whether an upstream answer means "try again later":
// 5xx, 408, 429, and a 409 with Retry-After (the gateway's answer while an
// earlier delivery of the same key is still being answered).
func retryable(status int, h http.Header) bool {
	return status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests ||
		status == http.StatusConflict && h.Get("Retry-After") != ""
}

// isGRPCResponse reports whether a response is a gRPC one.
func isGRPCResponse(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "application/grpc")
}

// grpcStatus is a gRPC response's grpc-status, from its trailers (or its
// headers, for a Trailers-Only response); "" when it has none (the stream
// broke off before its end).
func grpcStatus(h http.Header) string {
	if v := h.Get(http.TrailerPrefix + "Grpc-Status"); v != "" {
		return v
	}
	return h.Get("Grpc-Status")
}

// grpcRetryable reports whether a gRPC response with HTTP status 2xx means
// "try again later": no grpc-status at all (cut short), UNAVAILABLE (14) or
// RESOURCE_EXHAUSTED (8), the gRPC forms of 503 and 429. Delivery is judged
// by grpc-status as well as the HTTP status.
func grpcRetryable(h http.Header) bool {
	if !isGRPCResponse(h) {
		return false
	}
	switch grpcStatus(h) {
	case "", "14", "8":
		return true
	}
	return false
}

// retry puts the request back at the head of its route, which waits a
// backoff with full jitter before its next delivery.
func (p *Replayer) retry(route string, seq uint64, err error, status int) {
	if rerr := p.opts.Spool.Retry(seq); rerr != nil {
		p.opts.Log.Warn("returning a request to the spool", "seq", seq, "err", rerr)
	}
	p.mu.Lock()
	st := p.state(route)
	now := p.opts.Clock.Now()
	d := st.notBefore.Sub(now)
	if d <= 0 {
		// Failures that come together (the deliveries in flight when the
		// link went, a batch) count once.
		st.failures++
		d = p.backoff().Delay(st.failures-1, rand.Float64())
		st.notBefore = now.Add(d)
	}
	p.mu.Unlock()
	p.opts.OnOutcome(route, OutcomeRetried)
	p.opts.Log.Info("spooled request will be retried", "route", route, "id", ID(seq), "status", status, "err", err, "after", d.Round(time.Millisecond))
}

// finish stores a result, then ends the request in the spool (end may be
// nil when the spool ended it itself), and starts its callback, which runs
// until ctx (Run's) ends. The result is written first: a crash in between
// delivers the request again, and the gateway answers the repeat, rather
// than losing its outcome.
func (p *Replayer) finish(ctx context.Context, res *Result, end func() error) {
	p.finishAll(ctx, []*Result{res}, end)
}

// finishAll is finish for requests that ended together (a batch): their
// results in one write, then their ends in one.
func (p *Replayer) finishAll(ctx context.Context, results []*Result, end func() error) {
	p.record(results, end)
	for _, res := range results {
		p.callback(ctx, res)
	}
}

// record stores results, then ends their requests in the spool, and counts
// them.
func (p *Replayer) record(results []*Result, end func() error) {
	now := p.opts.Clock.Now()
	for _, res := range results {
		res.Finished = now
	}
	if err := p.opts.Results.PutAll(results); err != nil {
		p.opts.Log.Error("storing spooled requests' results", "id", results[0].ID, "requests", len(results), "err", err)
	}
	if end != nil {
		if err := end(); err != nil {
			p.opts.Log.Warn("finishing spooled requests", "id", results[0].ID, "requests", len(results), "err", err)
		}
	}
	for _, res := range results {
		p.opts.OnOutcome(res.Route, res.State)
	}
}

// Cancel removes a queued request and records it as cancelled.
func (p *Replayer) Cancel(id string) error {
	seq, err := ParseID(id)
	if err != nil {
		return spool.ErrNotFound
	}
	_, route, ok := p.opts.Spool.Lookup(seq)
	if !ok {
		return spool.ErrNotFound
	}
	attempts, _ := p.opts.Spool.Attempts(seq)
	if err := p.opts.Spool.Cancel(seq); err != nil {
		return err
	}
	// Recorded only: the result has no callback to post (the spool's
	// Lookup does not return the record's Misaki-Callback), and Cancel runs
	// under an admin request's context, which ends with it.
	p.record([]*Result{{ID: id, Route: route, State: OutcomeCancelled, Reason: "cancelled by DELETE /v1/requests/" + id, Attempts: attempts}}, nil)
	return nil
}

// callback POSTs res to its callback URL in the background, retrying with
// backoff until the app accepts it (2xx), the result's retention ends, or
// ctx ends. A restart picks owed callbacks up again (Results.Sweep).
func (p *Replayer) callback(ctx context.Context, res *Result) {
	if res.Callback == "" || res.CallbackDone || p.opts.Callbacks == nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		body, _ := json.Marshal(res)
		b := backoff.New(p.backoff(), p.opts.Clock)
		deadline := res.Finished.Add(p.opts.Results.retention)
		for attempt := 1; ctx.Err() == nil && p.opts.Clock.Now().Before(deadline); attempt++ {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, res.Callback, bytes.NewReader(body))
			if err != nil {
				p.opts.Log.Warn("callback URL unusable", "id", res.ID, "url", res.Callback, "err", err)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Misaki-Request-Id", res.ID)
			resp, err := p.opts.Callbacks.Do(req)
			if err == nil {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					res.CallbackDone = true
					if err := p.opts.Results.Put(res); err != nil {
						p.opts.Log.Warn("recording a callback", "id", res.ID, "err", err)
					}
					return
				}
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			p.opts.Log.Info("callback failed, will retry", "id", res.ID, "attempt", attempt, "err", err)
			if b.Wait(ctx) != nil {
				return
			}
		}
	}()
}

// backoff is the delay before a route's next delivery after a failure,
// and between a callback's attempts: BackoffMin doubling to BackoffMax,
// each delay drawn from [0, d] (full jitter: the vehicles of a fleet
// that lost the same link do not come back in step).
func (p *Replayer) backoff() backoff.Policy {
	return backoff.Policy{Initial: p.opts.BackoffMin, Max: p.opts.BackoffMax, Multiplier: 2, Jitter: 1}
}

// ID formats a spool sequence number as a request id.
func ID(seq uint64) string { return strconv.FormatUint(seq, 10) }

// ParseID is ID's inverse.
func ParseID(id string) (uint64, error) { return strconv.ParseUint(id, 10, 64) }

// capture is the ResponseWriter a replayed request's answer is written to.
type capture struct {
	max       int64
	header    http.Header
	status    int
	body      bytes.Buffer
	truncated bool
}

func newCapture(max int64) *capture { return &capture{max: max, header: http.Header{}} }

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.status == 0 && code >= 200 {
		c.status = code
	}
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	room := c.max - int64(c.body.Len())
	if int64(len(b)) > room {
		c.truncated = true
		c.body.Write(b[:max(room, 0)])
	} else {
		c.body.Write(b)
	}
	return len(b), nil
}

func (c *capture) Flush() {}

func (c *capture) response() *Response {
	h := c.header.Clone()
	delete(h, "Misaki-Delivery")
	return &Response{Status: c.status, Header: h, Body: c.body.Bytes(), Truncated: c.truncated}
}
