// Package gateway is the cloud side of Misaki (misaki-proxy --role
// gateway): vehicles' edge proxies connect to it with mutual TLS, and it
// forwards to cloud services by route, as the edge does, and a vehicle's
// calls to the cluster DNS names of its cloud-placed Services to those
// Services in the vehicle's own cloud namespace (vehicles.go). It also answers
// every repeat of an Idempotency-Key from what the service answered the
// first time, so a request the edge delivers twice (after a crash lost
// the record of its first delivery) reaches the service once:
//
//   - a repeat of a finished request gets the stored answer, marked
//     Misaki-Replayed: true, and never reaches the service;
//   - the same key with a different method, target or body gets 422;
//   - a repeat while the first is still being answered gets 409;
//   - 5xx, 408 and 429 answers and failures to reach the service are not
//     stored, so that the edge's retry reaches the service again.
//
// Keys are scoped by the vehicle identity from the client certificate (its
// first URI SAN, else its common name), which is also passed on to the
// service in gateway.identityHeader. They are kept in a local store
// (gateway.idempotency.dir, idem.FileStore) for a gateway of one replica,
// or in PostgreSQL (gateway.idempotency.postgres, idem/postgres), shared
// by replicas behind a load balancer, in a build with the misaki_postgres
// tag (store.go).
package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/misaki-io/misaki/internal/batch"
	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/gateway/idem"
	"github.com/misaki-io/misaki/internal/h2guard"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/routematch"
)

// Outcomes, the "outcome" label of misaki_gateway_requests_total.
const (
	outcomeForwarded = "forwarded" // first time: sent to the service (answer stored if final)
	outcomeNoKey     = "no_key"    // no Idempotency-Key: sent as is
	outcomeReplayed  = "replayed"  // a repeat answered from the store
	outcomeConflict  = "conflict"  // 409: the first is still being answered
	outcomeMismatch  = "mismatch"  // 422: same key, different request
	outcomeNoRoute   = "no_route"
	outcomeForbidden = "forbidden" // 403: a cloud Service name from a certificate that names no vehicle
	outcomeError     = "error"
)

// Server is one gateway.
type Server struct {
	cfg    *config.Config
	log    *slog.Logger
	now    func() time.Time
	tls    *tls.Config
	table  *routematch.Table
	routes []*forward.Upstream
	store  idem.Store // opened by Run (store.go)
	// replica names this run in the shared store's claims.
	replica string
	// vs serves cloud Service names no route serves (table.ServesHost;
	// vehicles.go), nil unless gateway.vehicleServices is set.
	vs *vehicleServices
	// vehicleEndpoints, for tests only, gives the addresses a vehicle
	// service's upstream (its host:port) dials instead of resolving it.
	vehicleEndpoints func(addr string) []string

	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	batches  prometheus.Counter

	slots chan struct{} // batch items in flight (batchItemsInFlight)

	ln, adminLn net.Listener
}

// New builds a gateway from a validated config (role gateway). It reads
// the TLS files and does no other I/O.
func New(cfg *config.Config, log *slog.Logger, now func() time.Time) (*Server, error) {
	if now == nil {
		now = time.Now
	}
	if err := CheckBinary(cfg); err != nil {
		return nil, err
	}
	g := cfg.Gateway
	cert, err := tls.LoadX509KeyPair(g.TLS.CertFile, g.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("gateway.tls: %w", err)
	}
	caPEM, err := os.ReadFile(g.TLS.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("gateway.tls.clientCAFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("gateway.tls.clientCAFile: %s holds no PEM certificate", g.TLS.ClientCAFile)
	}
	s := &Server{
		cfg: cfg, log: log.With("component", "gateway"), now: now,
		tls: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
		},
		replica: newReplicaName(),
		table:   routematch.NewTable(cfg.Routes),
		slots:   make(chan struct{}, batchItemsInFlight),
		reg:     prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "misaki_gateway_requests_total",
			Help: "Requests from vehicles by route and outcome (forwarded, no_key, replayed, conflict, mismatch, no_route, forbidden, error).",
		}, []string{"route", "outcome"}),
	}
	s.batches = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "misaki_gateway_batches_total",
		Help: "Batches of requests taken at " + batch.Path + " (each item is also counted in misaki_gateway_requests_total).",
	})
	// The prometheus package's own constructors, as the sidecar's: the
	// collectors package would link database/sql into misaki-proxy, which
	// links this package.
	//lint:ignore SA1019 collectors.NewGoCollector and NewProcessCollector link database/sql (TestEdgeImportsNoHeavyDependencies)
	s.reg.MustRegister(s.batches, s.requests, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	for _, rc := range cfg.Routes {
		tlsConf, err := forward.LoadTLS(rc)
		if err != nil {
			return nil, err
		}
		f, err := forward.New(rc, forward.Options{TLS: tlsConf, Log: log, NoFastPath: cfg.NoFastPath()})
		if err != nil {
			return nil, err
		}
		s.routes = append(s.routes, f)
	}
	if vc := g.VehicleServices; vc != nil {
		s.vs = newVehicleServices(*vc, s)
		s.reg.MustRegister(s.vs.upstreams.dropped, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "misaki_gateway_vehicle_upstreams",
			Help: "Vehicle services' upstreams kept, one per (service, vehicle namespace, port, protocol), at most gateway.vehicleServices.maxUpstreams.",
		}, func() float64 { return float64(s.vs.upstreams.len()) }))
	}
	return s, nil
}

// Listen binds the vehicle-facing and admin listeners.
func (s *Server) Listen() error {
	var err error
	if s.ln, err = net.Listen("tcp", s.cfg.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if s.adminLn, err = net.Listen("tcp", s.cfg.Admin); err != nil {
		s.ln.Close()
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Addr and AdminAddr are the bound addresses (after Listen).
func (s *Server) Addr() string      { return s.ln.Addr().String() }
func (s *Server) AdminAddr() string { return s.adminLn.Addr().String() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	store, err := s.openStore(ctx)
	if err != nil {
		return err
	}
	s.store = store
	defer func() {
		if err := store.Close(); err != nil {
			s.log.Error("closing the idempotency store", "err", err)
		}
	}()
	s.registerStoreMetrics(store)

	srv := &http.Server{
		Handler:           s,
		TLSConfig:         s.tls,
		ReadHeaderTimeout: s.cfg.Limits.ReadHeaderTimeout.D(),
		IdleTimeout:       s.cfg.Limits.IdleTimeout.D(),
		MaxHeaderBytes:    int(s.cfg.Limits.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: s.cfg.Limits.HTTP2.MaxConcurrentStreams},
	}
	guard := h2guard.New(s.cfg.Limits.HTTP2.Guard(), h2guard.Options{Log: s.log, MetricPrefix: "misaki_gateway"})
	s.reg.MustRegister(guard)
	if err := guard.ConfigureServer(srv); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	adminSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	attrs := []any{"addr", s.Addr(), "admin", s.AdminAddr(), "routes", len(s.routes), "vehicleServices", s.vs != nil, "store", s.storeKind()}
	if s.cfg.Gateway.Idempotency.Postgres != nil {
		attrs = append(attrs, "replica", s.replica)
	}
	s.log.Info("listening", attrs...)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.ServeTLS(s.ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		if err := adminSrv.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			if n, err := store.Sweep(gctx); err != nil {
				s.log.Error("sweeping idempotency keys", "err", err)
			} else if n > 0 {
				s.log.Info("idempotency keys past the window removed", "keys", n)
			}
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	if s.vs != nil {
		g.Go(func() error {
			idle := s.vs.cfg.Timeouts.Idle.D()
			t := time.NewTicker(idle)
			defer t.Stop()
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
					if n := s.vs.upstreams.sweep(idle); n > 0 {
						s.log.Debug("idle vehicle service upstreams dropped", "upstreams", n)
					}
				}
			}
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := errors.Join(srv.Shutdown(sctx), adminSrv.Shutdown(sctx))
		for _, f := range s.routes {
			f.Close()
		}
		if s.vs != nil {
			s.vs.upstreams.closeAll()
		}
		return err
	})
	return g.Wait()
}

// identity is the vehicle identity of a verified client certificate.
func identity(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	c := cs.PeerCertificates[0]
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.CommonName
}

// ServeHTTP forwards one vehicle request, de-duplicated by its key.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	forward.CloseAmbiguous(w, r)
	id := identity(r.TLS)
	ih := s.cfg.Gateway.IdentityHeader
	r.Header.Del(ih)
	if id == "" {
		http.Error(w, "misaki gateway: no client certificate", http.StatusUnauthorized)
		return
	}
	r.Header.Set(ih, id)
	if r.URL.Path == batch.Path {
		s.serveBatch(w, r)
		return
	}
	if i := s.table.Match(r.Host, r.URL.Path, r.Header); i >= 0 {
		s.serve(w, r, id, s.cfg.Routes[i].Name, s.routes[i], s.cfg.Routes[i].MaxBodyBytes)
		return
	}
	// The routes' hosts are theirs even when no route's matches take the
	// request: vehicle services only get names no route serves.
	if s.vs != nil && !s.table.ServesHost(r.Host) && s.vs.serve(s, w, r, id) {
		return
	}
	s.requests.WithLabelValues("", outcomeNoRoute).Inc()
	http.Error(w, fmt.Sprintf("misaki gateway: no route for host %q", r.Host), http.StatusNotFound)
}

// serve forwards a request of the vehicle with this identity to fwd, as
// routeName, de-duplicated by its Idempotency-Key.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, id, routeName string, fwd *forward.Upstream, maxBody config.ByteSize) {
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, int64(maxBody))
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		s.requests.WithLabelValues(routeName, outcomeNoKey).Inc()
		notReached(w, fwd.Forward(w, r, "direct"))
		return
	}
	scoped := idem.Scope(id, key)
	// Not cancelled with the vehicle's request: a shared store's claim
	// committed just as the vehicle went away would be left to its lease.
	e, err := s.store.Claim(context.WithoutCancel(r.Context()), scoped)
	if err != nil {
		s.requests.WithLabelValues(routeName, outcomeError).Inc()
		s.log.Error("idempotency store", "err", err)
		http.Error(w, "misaki gateway: idempotency store unavailable", http.StatusServiceUnavailable)
		return
	}
	if e != nil {
		s.repeat(w, r, routeName, e)
		return
	}
	s.first(w, r, routeName, fwd, scoped)
}

// first forwards the request that claimed its key. Once the service has
// given a final answer, that answer is stored, even when passing it on to
// the vehicle then fails: the service has acted, and the vehicle's retry
// must get the answer, not a second execution.
func (s *Server) first(w http.ResponseWriter, r *http.Request, routeName string, fwd *forward.Upstream, key []byte) {
	h := fingerprintHead(r)
	var hb *hashingBody
	if r.Body != nil && r.Body != http.NoBody {
		hb = &hashingBody{rc: r.Body, h: h}
		r.Body = hb
	}
	rec := &recorder{ResponseWriter: w, max: int64(s.cfg.Gateway.Idempotency.MaxStoredBody)}
	var err error
	defer func() {
		p := recover()
		if rec.status == 0 || retryable(rec.status) || errors.Is(err, forward.ErrBadBody) {
			// No final answer (the service failed or was not reached,
			// or the vehicle's body broke and the gateway answered 400):
			// the retry must reach the service.
			hb.seal()
			if err := s.store.Release(context.WithoutCancel(r.Context()), key); err != nil {
				// The claim stays until it ends by itself (a shared
				// store's lease): repeats get 409 until then.
				s.log.Error("releasing an idempotency key", "err", err)
			}
		} else {
			s.complete(r, key, hb, h, rec, err != nil || p != nil)
		}
		if p != nil {
			panic(p)
		}
	}()
	s.requests.WithLabelValues(routeName, outcomeForwarded).Inc()
	// A vehicle that goes away does not cancel the exchange: the service
	// may already be acting on the request, and only its answer, stored,
	// keeps the vehicle's retry from acting twice.
	err = fwd.Forward(rec, r.WithContext(context.WithoutCancel(r.Context())), "direct")
	notReached(rec, err)
}

// notReached answers the vehicle when Forward wrote nothing because the
// service was not reached (503: nothing was sent, try again) or closed the
// connection before any byte of an answer (502). Left unanswered, net/http
// would send an empty 200, which the edge takes as delivered.
func notReached(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, forward.ErrNotSent):
		w.Header().Set("Retry-After", "1")
		http.Error(w, "misaki gateway: the service was not reached: "+err.Error(), http.StatusServiceUnavailable)
	case errors.Is(err, forward.ErrNoResponse):
		http.Error(w, "misaki gateway: the service gave no answer: "+err.Error(), http.StatusBadGateway)
	}
}

// complete stores the service's final answer. cut means relaying it to
// the vehicle broke off, so the body kept may be incomplete: repeats get
// the status and headers only.
//
// The fingerprint needs the whole body. A service may answer before reading
// it, so the rest is read here; if the vehicle's body broke off, the
// fingerprint covers the method and target only (BodyUnknown), and a
// repeat is matched on those.
func (s *Server) complete(r *http.Request, key []byte, hb *hashingBody, h hash.Hash, rec *recorder, cut bool) {
	var fingerprint []byte
	bodyUnknown := hb != nil && !hb.drain()
	if bodyUnknown {
		fingerprint = fingerprintHead(r).Sum(nil)
	} else {
		fingerprint = h.Sum(nil)
	}
	hdr := rec.Header().Clone()
	delete(hdr, forward.HeaderDelivery)
	truncated := rec.truncated || cut
	entry := &idem.Entry{Fingerprint: fingerprint, BodyUnknown: bodyUnknown, Status: rec.status, Header: hdr, Truncated: truncated}
	if !truncated {
		entry.Body = rec.body
	}
	// The answer is stored even if the vehicle went away: it is what its
	// retry must get.
	if err := s.store.Complete(context.WithoutCancel(r.Context()), key, entry); err != nil {
		s.log.Error("storing an answer", "err", err)
	}
}

// retryable reports whether an answer is one the edge retries (and so is
// not stored).
func retryable(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
}

// repeat answers a key seen before.
func (s *Server) repeat(w http.ResponseWriter, r *http.Request, routeName string, e *idem.Entry) {
	if e.State == idem.InFlight {
		s.requests.WithLabelValues(routeName, outcomeConflict).Inc()
		w.Header().Set("Retry-After", "1")
		// The edge proxy knows its own re-sent request by this: it waits
		// and asks again instead of passing the 409 to the app.
		w.Header().Set(forward.HeaderIdempotency, forward.IdempotencyInFlight)
		http.Error(w, "misaki gateway: a request with this Idempotency-Key is still being answered", http.StatusConflict)
		return
	}
	h := fingerprintHead(r)
	if r.Body != nil && !e.BodyUnknown {
		if _, err := io.Copy(h, r.Body); err != nil {
			forward.RefuseBody(w, r, err)
			return
		}
	}
	if string(h.Sum(nil)) != string(e.Fingerprint) {
		s.requests.WithLabelValues(routeName, outcomeMismatch).Inc()
		http.Error(w, "misaki gateway: this Idempotency-Key was used for a different request (method, target or body differ)", http.StatusUnprocessableEntity)
		return
	}
	s.requests.WithLabelValues(routeName, outcomeReplayed).Inc()
	for k, vs := range e.Header {
		w.Header()[k] = vs
	}
	w.Header().Set("Misaki-Replayed", "true")
	if e.Truncated {
		w.Header().Del("Content-Length")
		w.Header().Set("Misaki-Replayed-Body", "omitted; longer than gateway.idempotency.maxStoredBody")
	}
	w.WriteHeader(e.Status)
	w.Write(e.Body)
}

// fingerprintHead starts a request's fingerprint: method and target; the
// body follows.
func fingerprintHead(r *http.Request) hash.Hash {
	h := sha256.New()
	io.WriteString(h, r.Method+"\x00"+r.URL.RequestURI()+"\x00")
	return h
}

// hashingBody hashes a request body as it is read. The forwarder's
// transport may go on reading it from a goroutine of its own after the
// exchange returned (a service that answered before reading the body), so
// reads are serialized, and seal ends them: once sealed, nothing reads the
// vehicle's body any more, which net/http forbids after the handler
// returns. Close leaves the body to the server, which closes it itself.
type hashingBody struct {
	mu     sync.Mutex
	rc     io.ReadCloser
	h      hash.Hash
	sealed bool
	err    error // the first read error other than EOF
}

func (b *hashingBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sealed {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	b.h.Write(p[:n])
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *hashingBody) Close() error { return nil }

// drain reads the rest of the body into the hash, seals it, and reports
// whether the whole body was read.
func (b *hashingBody) drain() bool {
	io.Copy(io.Discard, b)
	b.seal()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err == nil
}

// seal ends the reads; nil-safe.
func (b *hashingBody) seal() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.sealed = true
	b.mu.Unlock()
}

// recorder passes a response through and keeps a copy, up to max bytes.
type recorder struct {
	http.ResponseWriter
	max       int64
	status    int
	body      []byte
	truncated bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if !r.truncated {
		if int64(len(r.body)+len(b)) > r.max {
			r.truncated, r.body = true, nil
		} else {
			r.body = append(r.body, b...)
		}
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// batchItemsInFlight bounds the batch items being answered at once, over
// all batches: each may hold a connection to a service, and the forwarder
// keeps 256 idle per service, so more would open and close connections.
const batchItemsInFlight = 256

// maxBatchBytes bounds a batch's body. Items are read whole before they
// are handled; an edge sends requests with bodies over its inline limit
// (64 KiB) one by one.
const maxBatchBytes = 64 << 20

// serveBatch answers a batch (package batch): every item is handled
// concurrently, exactly as ServeHTTP handles a request of its own, and the
// answers go back together, in order.
func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "misaki gateway: a batch is POSTed", http.StatusMethodNotAllowed)
		return
	}
	items, err := batch.Read(r.Body, r.Header.Get("Content-Type"), true, maxBatchBytes)
	if err != nil {
		http.Error(w, "misaki gateway: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.batches.Inc()
	answers := make([]batch.Item, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		req := it.Request()
		if req == nil || req.URL.Path == batch.Path {
			answers[i] = batch.Item{Status: http.StatusBadRequest, Body: []byte("misaki gateway: not a request this gateway can take in a batch\n")}
			continue
		}
		req = req.WithContext(r.Context())
		req.TLS, req.RemoteAddr, req.Proto, req.ProtoMajor, req.ProtoMinor = r.TLS, r.RemoteAddr, "HTTP/1.1", 1, 1
		wg.Add(1)
		s.slots <- struct{}{}
		go func() {
			defer func() { <-s.slots }()
			defer wg.Done()
			bw := &bufferWriter{header: http.Header{}}
			defer func() {
				// A handler that broke off (the service's answer was cut:
				// http.ErrAbortHandler) gets what a request of its own
				// would, a broken exchange: 502, which the edge retries,
				// and the retry gets whatever was stored. Never a short
				// body under the status already written. Another panic is
				// logged, not re-raised: outside net/http's own goroutine
				// it would end the process.
				if p := recover(); p != nil || bw.status == 0 {
					if p != nil && p != http.ErrAbortHandler {
						s.log.Error("panic answering a batch item", "panic", p, "stack", string(debug.Stack()))
					}
					bw = &bufferWriter{header: http.Header{}, status: http.StatusBadGateway}
					bw.body.WriteString("misaki gateway: the answer broke off\n")
				}
				answers[i] = batch.Item{Status: bw.status, Header: bw.header, Body: bw.body.Bytes()}
			}()
			s.ServeHTTP(bw, req)
		}()
	}
	wg.Wait()
	var out bytes.Buffer
	ct := batch.Write(&out, answers)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(out.Len()))
	w.WriteHeader(http.StatusOK)
	w.Write(out.Bytes())
}

// bufferWriter keeps a batch item's answer.
type bufferWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }

func (b *bufferWriter) WriteHeader(code int) {
	if b.status == 0 && code >= 200 {
		b.status = code
	}
}

func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *bufferWriter) Flush() {}
