// Package vehicle is the demo's vehicle app: it sends telemetry through the
// Misaki proxy at a steady rate, one goroutine per request, classifies every
// answer (direct, held, failed, lost) and keeps its counters in a JSON file
// that the demo orchestrator reads while it runs.
package vehicle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/demo/upstream"
)

// DeliveryHeader is set by the proxy on forwarded answers: "direct" or "held".
const DeliveryHeader = "Misaki-Delivery"

// Config is the app's configuration. Zero fields take the defaults noted.
type Config struct {
	// Proxy is the proxy's mesh address, host:port. Required.
	Proxy string
	// Host is the mesh name requests are sent to. Required.
	Host string
	// Path is the request path. Default /v1/telemetry.
	Path string
	// Name is the vehicle the app says it runs on, in its bodies and
	// Idempotency-Keys. Default demo-car-1.
	Name string
	// Rate is requests per second. Default 20.
	Rate int
	// Duration is how long to keep sending. Required.
	Duration time.Duration
	// StatsFile receives the counters as JSON every StatsInterval and at exit.
	// Empty means none are written.
	StatsFile string
	// StatsInterval is how often StatsFile is rewritten. Default 200ms.
	StatsInterval time.Duration
	// Timeout bounds one request, answer body included. Default 30s.
	Timeout time.Duration
	// Retries is how often a request is sent again after a transport error
	// (the proxy restarting), 250ms apart, with the same sequence number
	// and Idempotency-Key. Default 0.
	Retries int
	// DNS, when set, is the proxy's DNS address (host:port). The app then
	// calls http://Host:<Proxy's port>/ and resolves Host through DNS
	// alone for every new connection, as an app whose resolv.conf names
	// only the proxy does.
	DNS string
}

func (c *Config) setDefaults() {
	if c.Path == "" {
		c.Path = "/v1/telemetry"
	}
	if c.Name == "" {
		c.Name = "demo-car-1"
	}
	if c.Rate == 0 {
		c.Rate = 20
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = 200 * time.Millisecond
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
}

// Validate checks the configuration without doing I/O.
func (c *Config) Validate() error {
	switch {
	case c.Proxy == "":
		return errors.New("vehicle: --proxy is required: the proxy's mesh address, like 127.0.0.1:8080")
	case c.Host == "":
		return errors.New("vehicle: --host is required: the mesh name to call, like telemetry.cloud.misaki")
	case !strings.HasPrefix(c.Path, "/"):
		return fmt.Errorf("vehicle: --path %q must start with /", c.Path)
	case c.Rate < 0 || c.Rate > 10000:
		return fmt.Errorf("vehicle: --rate %d: use 1 to 10000 requests per second", c.Rate)
	case c.Duration <= 0:
		return errors.New("vehicle: --duration must be positive, like 30s")
	case c.StatsInterval < 0 || c.Timeout < 0:
		return errors.New("vehicle: intervals and timeouts must not be negative")
	case c.Retries < 0 || c.Retries > 1000:
		return fmt.Errorf("vehicle: --retries %d: use 0 to 1000", c.Retries)
	}
	return nil
}

// Stats are the app's running counters. Every request sent ends in exactly
// one of Direct, Held, Spooled, Failed, Lost or Bad; until then it is
// InFlight.
type Stats struct {
	Start time.Time `json:"start"`
	Sent  int64     `json:"sent"`
	// Direct: 2xx with Misaki-Delivery: direct.
	Direct int64 `json:"direct"`
	// Held: 2xx with Misaki-Delivery: held.
	Held int64 `json:"held"`
	// Spooled: 202 with Misaki-Delivery: spooled (stored by the proxy, to be
	// delivered when a link returns).
	Spooled int64 `json:"spooled"`
	// Retried counts sends repeated after a transport error.
	Retried int64 `json:"retried"`
	// Failed: any non-2xx answer; FailedByStatus splits them by code.
	Failed         int64            `json:"failed"`
	FailedByStatus map[string]int64 `json:"failedByStatus,omitempty"`
	// RetryAfter counts 503 answers that carried a Retry-After header.
	RetryAfter int64 `json:"retryAfter"`
	// Lost: no answer at all (transport error or timeout).
	Lost int64 `json:"lost"`
	// Bad: a 2xx without a known Misaki-Delivery value, or whose body does
	// not echo the request's sequence number.
	Bad      int64 `json:"bad"`
	InFlight int64 `json:"inFlight"`

	// FirstFailedSent and LastFailedSent bound when failed requests were sent.
	FirstFailedSent time.Time `json:"firstFailedSent,omitzero"`
	LastFailedSent  time.Time `json:"lastFailedSent,omitzero"`
	// MaxHeldWait is the longest a held request took to be answered.
	MaxHeldWait time.Duration `json:"maxHeldWaitNs"`
	// DNSLookups counts the resolutions of Host through Config.DNS, and
	// DNSFailures those that gave no address.
	DNSLookups  int64 `json:"dnsLookups"`
	DNSFailures int64 `json:"dnsFailures"`
	// Samples of what went wrong, a few of each.
	LostErrors []string `json:"lostErrors,omitempty"`
	BadAnswers []string `json:"badAnswers,omitempty"`
	// Done is set in the last file written, once no request is in flight.
	Done bool `json:"done"`
}

const maxSamples = 5

// App is the vehicle app. Construct with New; Run sends.
type App struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client

	mu    sync.Mutex // guards stats
	stats Stats
}

// New returns an app for cfg; it does no I/O.
func New(cfg Config, log *slog.Logger) (*App, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // talk to the mesh address itself, whatever HTTP_PROXY says
	tr.MaxIdleConnsPerHost = 1024
	a := &App{cfg: cfg, log: log, client: &http.Client{Transport: tr, Timeout: cfg.Timeout}}
	if cfg.DNS != "" {
		var d net.Dialer
		r := ResolverAt(cfg.DNS)
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := r.LookupNetIP(ctx, "ip4", host)
			a.mu.Lock()
			a.stats.DNSLookups++
			if err != nil || len(ips) == 0 {
				a.stats.DNSFailures++
			}
			a.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return d.DialContext(ctx, network, net.JoinHostPort(ips[0].String(), port))
		}
	}
	return a, nil
}

// ResolverAt is a resolver that asks only the DNS server at addr
// (host:port), as a resolv.conf naming only it would.
func ResolverAt(addr string) *net.Resolver {
	var d net.Dialer
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}
}

// Stats returns a copy of the counters.
func (a *App) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.FailedByStatus = maps.Clone(s.FailedByStatus)
	s.LostErrors = append([]string(nil), s.LostErrors...)
	s.BadAnswers = append([]string(nil), s.BadAnswers...)
	return s
}

// Run sends requests for the configured duration or until ctx ends, then
// waits for every request in flight to be answered (or to time out), writes
// the final stats and returns. Requests in flight are not canceled by ctx:
// their outcome is what the demo measures.
func (a *App) Run(ctx context.Context) error {
	a.mu.Lock()
	a.stats.Start = time.Now()
	a.mu.Unlock()
	a.log.Info("app sending", "proxy", a.cfg.Proxy, "host", a.cfg.Host, "rate", a.cfg.Rate, "duration", a.cfg.Duration)

	writerDone := make(chan struct{})
	stopWriter := make(chan struct{})
	go func() {
		defer close(writerDone)
		t := time.NewTicker(a.cfg.StatsInterval)
		defer t.Stop()
		for {
			select {
			case <-stopWriter:
				return
			case <-t.C:
				if err := a.writeStats(); err != nil {
					a.log.Warn("writing stats", "err", err)
				}
			}
		}
	}()

	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(a.cfg.Rate))
	defer tick.Stop()
	end := time.NewTimer(a.cfg.Duration)
	defer end.Stop()
send:
	for seq := int64(1); ; seq++ {
		a.mu.Lock()
		a.stats.Sent++
		a.stats.InFlight++
		a.mu.Unlock()
		wg.Go(func() { a.send(seq) })
		select {
		case <-ctx.Done():
			break send
		case <-end.C:
			break send
		case <-tick.C:
		}
	}
	st := a.Stats()
	a.log.Info("app stopped sending; waiting for requests in flight", "sent", st.Sent, "inFlight", st.InFlight)
	wg.Wait()
	close(stopWriter)
	<-writerDone
	a.mu.Lock()
	a.stats.Done = true
	a.mu.Unlock()
	st = a.Stats()
	a.log.Info("app done", "sent", st.Sent, "direct", st.Direct, "held", st.Held, "spooled", st.Spooled, "failed", st.Failed, "lost", st.Lost, "bad", st.Bad)
	return a.writeStats()
}

type telemetry struct {
	Vehicle  string    `json:"vehicle"`
	Seq      int64     `json:"seq"`
	SpeedKmh int64     `json:"speedKmh"`
	Time     time.Time `json:"time"`
}

// send sends request number seq and records its outcome.
func (a *App) send(seq int64) {
	body, _ := json.Marshal(telemetry{Vehicle: a.cfg.Name, Seq: seq, SpeedKmh: 40 + seq%60, Time: time.Now().UTC()})
	target := a.cfg.Proxy
	if a.cfg.DNS != "" {
		_, port, _ := net.SplitHostPort(a.cfg.Proxy)
		target = net.JoinHostPort(a.cfg.Host, port)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+target+a.cfg.Path, bytes.NewReader(body))
	if err != nil {
		a.finish(func(s *Stats) { s.Lost++; s.LostErrors = sample(s.LostErrors, err.Error()) })
		return
	}
	req.Host = a.cfg.Host
	s := strconv.FormatInt(seq, 10)
	req.Header.Set(upstream.SeqHeader, s)
	req.Header.Set("Idempotency-Key", a.cfg.Name+"-"+s)
	req.Header.Set("Content-Type", "application/json")

	sent := time.Now()
	var resp *http.Response
	var answer []byte
	for attempt := 0; ; attempt++ {
		req.Body = io.NopCloser(bytes.NewReader(body))
		resp, err = a.client.Do(req)
		if err == nil {
			answer, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if err == nil || attempt >= a.cfg.Retries {
			break
		}
		a.mu.Lock()
		a.stats.Retried++
		a.mu.Unlock()
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		a.finish(func(st *Stats) { st.Lost++; st.LostErrors = sample(st.LostErrors, fmt.Sprintf("seq %d: %v", seq, err)) })
		return
	}
	took := time.Since(sent)
	if resp.StatusCode == http.StatusAccepted && resp.Header.Get(DeliveryHeader) == "spooled" {
		a.finish(func(st *Stats) { st.Spooled++ })
		return
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		a.finish(func(st *Stats) {
			st.Failed++
			if st.FailedByStatus == nil {
				st.FailedByStatus = make(map[string]int64)
			}
			st.FailedByStatus[strconv.Itoa(resp.StatusCode)]++
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
				st.RetryAfter++
			}
			if st.FirstFailedSent.IsZero() || sent.Before(st.FirstFailedSent) {
				st.FirstFailedSent = sent
			}
			if sent.After(st.LastFailedSent) {
				st.LastFailedSent = sent
			}
		})
		return
	}
	var reply upstream.Reply
	if err := json.Unmarshal(answer, &reply); err != nil || reply.Seq != s {
		a.finish(func(st *Stats) {
			st.Bad++
			st.BadAnswers = sample(st.BadAnswers, fmt.Sprintf("seq %d: body %.80q does not echo the seq", seq, answer))
		})
		return
	}
	switch d := resp.Header.Get(DeliveryHeader); d {
	case "direct":
		a.finish(func(st *Stats) { st.Direct++ })
	case "held":
		a.finish(func(st *Stats) { st.Held++; st.MaxHeldWait = max(st.MaxHeldWait, took) })
	default:
		a.finish(func(st *Stats) {
			st.Bad++
			st.BadAnswers = sample(st.BadAnswers, fmt.Sprintf("seq %d: %s %q", seq, DeliveryHeader, d))
		})
	}
}

// finish records one request's outcome.
func (a *App) finish(record func(*Stats)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stats.InFlight--
	record(&a.stats)
}

func sample(list []string, s string) []string {
	if len(list) < maxSamples {
		list = append(list, s)
	}
	return list
}

// writeStats replaces StatsFile atomically: readers see the old or the new
// counters, never a partial file.
func (a *App) writeStats() error {
	if a.cfg.StatsFile == "" {
		return nil
	}
	b, err := json.MarshalIndent(a.Stats(), "", "  ")
	if err != nil {
		return fmt.Errorf("vehicle: encode stats: %w", err)
	}
	return WriteFileAtomic(a.cfg.StatsFile, b)
}

// WriteFileAtomic writes b to a temporary file next to path and renames it
// over path.
func WriteFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("vehicle: stats file: %w", err)
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("vehicle: write stats %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("vehicle: stats file: %w", err)
	}
	return nil
}

// ReadStats reads a stats file written by the app.
func ReadStats(path string) (Stats, error) {
	var s Stats
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("vehicle: read stats: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("vehicle: stats file %s: %w", path, err)
	}
	return s, nil
}
