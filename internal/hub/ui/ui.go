// Package ui is the operator's web UI that the hub serves at /ui/ (docs/ui.md):
// server-rendered html/template pages (fleet, vehicle, catalog, new
// deployment, deployments, rollouts) that read fully without JavaScript, and
// htmx (vendored under static/, embedded) for live updates over server-sent
// events and for the new-deployment form's live parts.
//
// The UI is a client of the hub's own /v1 API: every read and write is a
// request to the API's http.Handler, served in process, with the session's
// operator token as its bearer token. Authorisation, validation and the audit
// log stay in internal/hub/api, and the UI holds no privilege its token lacks.
// It reads nothing from the store; the one thing it takes from elsewhere is
// when to refresh: the hub's change notifications (wake.Waker.Changed, fed by
// every replica through the store) and the API writes this replica serves
// (the hub calls Poke for each), which /ui/events turns into events.
//
// Sessions: logging in posts an operator token (read or admin scope); the UI
// checks it against the API and sets a cookie that carries the token sealed
// with AES-256-GCM under a key in the hub's key directory (ui-session.key,
// made on first start). The hub keeps no session state, so a session survives
// a restart and works on every replica that shares the key directory (as
// replicas must). The cookie is HttpOnly, SameSite=Strict, Path=/ui/, Secure
// over TLS, and expires after Options.SessionTTL; a revoked token ends the
// session at its next request. Every POST carries a CSRF token derived from
// the session (a form field, or the X-CSRF-Token header htmx sends), and the
// login form a double-submit token of its own. Read-scope sessions are shown
// no action buttons; the API refuses their writes anyway.
package ui

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/wake"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Notifier tells when a half of some vehicle got a new desired revision;
// wake.Waker is the implementation.
type Notifier interface {
	// Changed returns a channel that closes at the next change of half.
	Changed(half string) <-chan struct{}
}

var _ Notifier = (*wake.Waker)(nil)

// Options tune the UI. The zero value means the defaults.
type Options struct {
	// Key seals session cookies (32 bytes; LoadOrCreateKey). nil: a random
	// key for this process, so sessions end when it does.
	Key []byte
	// SessionTTL is how long a login lasts. Default 12h.
	SessionTTL time.Duration
	// Tick is how often /ui/events sends a tick, for what changes with time
	// alone (online and offline, rollout bake times). Default 10s.
	Tick time.Duration
	// Debounce is the least time between two change events to one page.
	// Default 1s.
	Debounce time.Duration
	// PageSize is the fleet page's rows. Default 50.
	PageSize int
	// Clock; nil: the real one.
	Clock clock.Clock
}

func (o *Options) defaults() {
	if len(o.Key) == 0 {
		o.Key = make([]byte, 32)
		rand.Read(o.Key)
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.Tick <= 0 {
		o.Tick = 10 * time.Second
	}
	if o.Debounce <= 0 {
		o.Debounce = time.Second
	}
	if o.PageSize <= 0 {
		o.PageSize = 50
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
}

// Server serves the UI.
type Server struct {
	api    apiClient
	opts   Options
	log    *slog.Logger
	seal   sealer
	pages  *pages
	events *broker
	mux    *http.ServeMux
}

// New builds the UI over the API's handler. It does no I/O.
func New(api http.Handler, n Notifier, opts Options, log *slog.Logger) *Server {
	opts.defaults()
	s := &Server{
		opts:   opts,
		log:    log.With("component", "ui"),
		seal:   newSealer(opts.Key),
		pages:  parsePages(),
		events: newBroker(n, opts),
	}
	s.api = apiClient{h: api, written: s.events.poke}
	s.mux = http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", cacheStatic(http.FileServerFS(static))))
	s.mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/fleet", http.StatusFound)
	})
	s.mux.HandleFunc("GET /ui/login", s.loginPage)
	s.mux.HandleFunc("POST /ui/login", s.login)
	s.mux.Handle("POST /ui/logout", s.session(s.logout))
	s.mux.Handle("GET /ui/events", s.session(s.serveEvents))
	s.mux.Handle("GET /ui/fleet", s.session(s.fleet))
	s.mux.Handle("GET /ui/vehicles/{id}", s.session(s.vehicle))
	s.mux.Handle("GET /ui/catalog", s.session(s.catalog))
	s.mux.Handle("GET /ui/catalog/{source}/{chart}/{version}", s.session(s.chartVersion))
	s.mux.Handle("GET /ui/deployments", s.session(s.deployments))
	s.mux.Handle("GET /ui/deployments/new", s.session(s.newDeployment))
	s.mux.Handle("GET /ui/deployments/new/schema", s.session(s.schemaFragment))
	s.mux.Handle("GET /ui/deployments/new/count", s.session(s.selectorCount))
	s.mux.Handle("POST /ui/deployments/preview", s.session(s.preview))
	s.mux.Handle("POST /ui/deployments", s.session(s.createDeployment))
	s.mux.Handle("GET /ui/deployments/{name}", s.session(s.deployment))
	s.mux.Handle("POST /ui/deployments/{name}/rollback", s.session(s.rollback))
	s.mux.Handle("GET /ui/rollouts", s.session(s.rollouts))
	s.mux.Handle("GET /ui/deployments/{name}/rollouts/{generation}", s.session(s.rollout))
	s.mux.Handle("POST /ui/deployments/{name}/rollouts/{generation}/{action}", s.session(s.rolloutAction))
	return s
}

// Handler serves /ui/ (mount it at "/ui/").
func (s *Server) Handler() http.Handler { return securityHeaders(s.mux) }

// Run feeds /ui/events until ctx ends; open event streams end with it.
func (s *Server) Run(ctx context.Context) error { return s.events.run(ctx) }

// Poke refreshes the pages open on this replica: the hub calls it after
// each API write it serves (a report, a deployment, a rollout action).
func (s *Server) Poke() { s.events.poke() }

// contentSecurityPolicy allows scripts, styles and connections to the hub
// itself only: no inline script or style, no other origin, no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

// cacheStatic lets browsers keep the embedded files for an hour.
func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// KeySize is the length of the session key.
const KeySize = 32

// LoadOrCreateKey reads the session key at path, making it (KeySize random
// bytes, 0600) if there is none. Two replicas starting together both read
// the one that was written first.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("ui: session key: %w", err)
	}
	key = make([]byte, KeySize)
	rand.Read(key)
	tmp := fmt.Sprintf("%s.%x.tmp", path, key[:4])
	if err := os.WriteFile(tmp, key, 0o600); err != nil {
		return nil, fmt.Errorf("ui: session key: %w", err)
	}
	defer os.Remove(tmp)
	// Link, not rename: it fails if another replica made the key first,
	// and then that key is the one.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("ui: session key: %w", err)
	}
	return readKey(path)
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ui: session key: %w", err)
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("ui: session key %s: %d bytes, want %d (delete it to make a new one; sessions end)", path, len(b), KeySize)
	}
	return b, nil
}
