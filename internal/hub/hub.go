// Package hub runs the orchestrator's cloud hub: it opens the store
// (SQLite in the data dir by default, PostgreSQL when Config.Database is a
// postgres:// DSN), loads or creates the fleet CA, the hub's TLS
// certificate and the signing keys, and serves the API (internal/hub/api)
// while one replica issues desired revisions (internal/hub/desired) and
// every replica wakes its long-polls (internal/hub/wake).
//
// On first start with an empty store it creates an admin operator token
// and writes it, with a CLI config that uses it, to the data dir
// (admin.token, misaki.yaml, both 0600).
package hub

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/api/v1alpha1"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/api"
	"github.com/misaki-io/misaki/internal/hub/catalog"
	"github.com/misaki-io/misaki/internal/hub/desired"
	"github.com/misaki-io/misaki/internal/hub/enrol"
	"github.com/misaki-io/misaki/internal/hub/placement"
	"github.com/misaki-io/misaki/internal/hub/render"
	"github.com/misaki-io/misaki/internal/hub/rollout"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/postgres"
	"github.com/misaki-io/misaki/internal/hub/store/sqlite"
	"github.com/misaki-io/misaki/internal/hub/store/storemetrics"
	"github.com/misaki-io/misaki/internal/hub/ui"
	"github.com/misaki-io/misaki/internal/hub/wake"
)

// Config is the hub's configuration; the zero value is a working hub on
// :8443 with SQLite in ./misaki-hub-data.
type Config struct {
	// DataDir holds the SQLite database, the PKI, the signing keys and the
	// first admin token. Default ./misaki-hub-data.
	DataDir string
	// Listen is the API's HTTPS address. Default :8443.
	Listen string
	// Database is "" (SQLite at DataDir/hub.db), sqlite://<path>, or a
	// PostgreSQL DSN (postgres://...).
	Database string
	// Hosts are the names and IPs in the hub's TLS certificate (when the
	// hub makes it). Default localhost, 127.0.0.1, ::1 and the host name.
	Hosts []string
	// TLSCertFile and TLSKeyFile replace the certificate the hub makes.
	TLSCertFile, TLSKeyFile string
	// CACertFile and CAKeyFile are the fleet CA that signs vehicle
	// certificates (the gateway's clientCAFile). Default: made in
	// DataDir/pki.
	CACertFile, CAKeyFile string
	// KeysDir holds the trust roots and signing keys. Default DataDir/keys.
	// Replicas must share it (a Secret or shared volume).
	KeysDir string
	// LocalChartRoots confine local chart sources to these directories;
	// empty allows any path on the hub's disk.
	LocalChartRoots []string
	// Gateway is where the vehicle half's Routes send calls to components
	// placed in the cloud. Empty: no Routes (the placement says so).
	GatewayURL string
	// GatewayTLS are file paths in the vehicle proxy's pod.
	GatewayTLS *v1alpha1.UpstreamTLS
	// DesiredTTL is the validity of signed revisions. Default 14 days.
	DesiredTTL time.Duration
	// API options (online window, certificate and token TTLs, max wait).
	API api.Options
	// NoUI turns the web UI (/ui/, internal/hub/ui) off.
	NoUI bool
	// UI options (session length, refresh tick); the session key is
	// KeysDir/ui-session.key.
	UI ui.Options
	// Replica names this process in the issuing lease. Default host:pid.
	Replica string
	// Clock; nil: the real one.
	Clock clock.Clock
	// Ready is closed (if set) once the hub is listening.
	Ready chan<- string
}

func (c *Config) defaults() {
	c.DataDir = cmp.Or(c.DataDir, "misaki-hub-data")
	c.Listen = cmp.Or(c.Listen, ":8443")
	c.KeysDir = cmp.Or(c.KeysDir, filepath.Join(c.DataDir, "keys"))
	if len(c.Hosts) == 0 {
		c.Hosts = []string{"localhost", "127.0.0.1", "::1"}
		if h, err := os.Hostname(); err == nil && h != "" {
			c.Hosts = append(c.Hosts, h)
		}
	}
	if c.Replica == "" {
		h, _ := os.Hostname()
		c.Replica = fmt.Sprintf("%s:%d", h, os.Getpid())
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
}

// Validate checks the configuration without I/O.
func (c *Config) Validate() error {
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file: give both or neither")
	}
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		return errors.New("--ca-cert-file and --ca-key-file: give both or neither")
	}
	if d := c.Database; d != "" && !strings.HasPrefix(d, "sqlite://") && !strings.HasPrefix(d, "postgres://") && !strings.HasPrefix(d, "postgresql://") {
		return fmt.Errorf("--database: want sqlite://<path> or postgres://..., got %q", redact(d))
	}
	if c.GatewayURL != "" && !strings.HasPrefix(c.GatewayURL, "https://") && !strings.HasPrefix(c.GatewayURL, "http://") {
		return fmt.Errorf("--gateway-url: want https://host:port, got %q", c.GatewayURL)
	}
	return nil
}

// redact hides a DSN's password.
func redact(dsn string) string {
	if i := strings.Index(dsn, "@"); i > 0 {
		if j := strings.Index(dsn, "://"); j > 0 && j < i {
			return dsn[:j+3] + "…@" + dsn[i+1:]
		}
	}
	return dsn
}

// OpenStore opens the store Config.Database names.
func OpenStore(ctx context.Context, c Config, log *slog.Logger) (store.Store, error) {
	c.defaults()
	switch d := c.Database; {
	case strings.HasPrefix(d, "postgres://"), strings.HasPrefix(d, "postgresql://"):
		return postgres.Open(ctx, d, log)
	default:
		path := strings.TrimPrefix(d, "sqlite://")
		if path == "" {
			if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
				return nil, fmt.Errorf("data dir: %w", err)
			}
			path = filepath.Join(c.DataDir, "hub.db")
		}
		return sqlite.Open(ctx, path, log)
	}
}

// Run runs the hub until ctx ends.
func Run(ctx context.Context, c Config, log *slog.Logger) error {
	c.defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	now := c.Clock.Now()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	raw, err := OpenStore(ctx, c, log)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer raw.Close()
	st := storemetrics.Wrap(raw, reg)

	var ca *enrol.CA
	if c.CACertFile != "" {
		ca, err = enrol.LoadCA(c.CACertFile, c.CAKeyFile)
	} else {
		ca, err = enrol.LoadOrCreateCA(filepath.Join(c.DataDir, "pki"), now)
	}
	if err != nil {
		return fmt.Errorf("fleet CA: %w", err)
	}
	cert, err := serverCertificate(c, ca, now)
	if err != nil {
		return err
	}
	keys, err := openKeys(c.KeysDir, now, log)
	if err != nil {
		return err
	}

	cache := render.NewCache(0)
	is := desired.New(st, keys, cache, c.Clock, desired.Options{
		TTL: c.DesiredTTL,
		Placement: placement.Options{
			GatewayURL: c.GatewayURL, GatewayTLS: c.GatewayTLS,
		},
	}, log)
	keys.onReload = func() {
		if err := st.MarkDirty(ctx, []store.Dirty{{ID: store.AllVehicles, Force: true}}); err != nil {
			log.Error("queue re-signing after a key rotation", "err", err)
		}
		is.Kick()
	}
	rr := rollout.NewRunner(st, c.Clock, rollout.RunnerOptions{OnlineWindow: c.API.OnlineWindow}, func(ctx context.Context, ids []string) error {
		ds := make([]store.Dirty, len(ids))
		for i, id := range ids {
			ds[i] = store.Dirty{ID: id}
		}
		if err := st.MarkDirty(ctx, ds); err != nil {
			return err
		}
		is.Kick()
		return nil
	}, log)
	wk := wake.New(st, log)
	cat := catalog.New(catalog.Options{Logger: log, CacheDir: filepath.Join(c.DataDir, "cache"), LocalRoots: c.LocalChartRoots})
	var web *ui.Server // set below unless --ui=false; the API pokes it after each write it serves
	apiOpts := c.API
	apiOpts.Rollouts = rr
	apiOpts.Written = func() {
		if web != nil {
			web.Poke()
		}
	}
	srv := api.New(st, cat, ca, keys, is, wk, c.Clock, reg, apiOpts, log)
	registerMetrics(reg, st, cache, is, c)

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	url := "https://" + hostPort(ln.Addr(), c.Hosts)
	// The CA certificate, for clients (the CLI, agents) to trust the hub.
	if err := os.WriteFile(filepath.Join(c.DataDir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		ln.Close()
		return err
	}
	if err := bootstrapAdmin(ctx, st, c, url, ca, log); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", srv.Handler())
	if !c.NoUI {
		uo := c.UI
		if uo.Key, err = ui.LoadOrCreateKey(filepath.Join(c.KeysDir, "ui-session.key")); err != nil {
			log.Warn("web UI sessions will not outlive this process", "err", err)
		}
		if uo.Clock == nil {
			uo.Clock = c.Clock
		}
		web = ui.New(srv.Handler(), wk, uo, log)
		mux.Handle("/ui/", web.Handler())
		mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	}
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    ca.Pool(),
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("hub listening", "url", url, "dataDir", c.DataDir, "store", storeKind(c), "replica", c.Replica)
	if c.Ready != nil {
		c.Ready <- url
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	g.Go(func() error { return wk.Run(gctx) })
	g.Go(func() error { return is.Run(gctx, c.Replica) })
	g.Go(func() error { return rr.Run(gctx, c.Replica) })
	if web != nil {
		g.Go(func() error { return web.Run(gctx) })
	}
	return g.Wait()
}

func storeKind(c Config) string {
	if strings.HasPrefix(c.Database, "postgres") {
		return "postgres"
	}
	return "sqlite"
}

// hostPort is the URL host for the listener: the first configured host
// name with the bound port.
func hostPort(a net.Addr, hosts []string) string {
	_, port, _ := net.SplitHostPort(a.String())
	h := "127.0.0.1"
	if len(hosts) > 0 {
		h = hosts[0]
	}
	return net.JoinHostPort(h, port)
}

// serverCertificate loads the configured certificate or makes one from
// the fleet CA (DataDir/pki/server.crt), again when its hosts change or it
// has less than a month left.
func serverCertificate(c Config, ca *enrol.CA, now time.Time) (tls.Certificate, error) {
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return cert, fmt.Errorf("--tls-cert-file: %w", err)
		}
		return cert, nil
	}
	dir := filepath.Join(c.DataDir, "pki")
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && certCovers(cert, c.Hosts, now) {
		return cert, nil
	}
	certPEM, keyPEM, err := ca.ServerCertificate(c.Hosts, now, 365*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("hub certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func certCovers(cert tls.Certificate, hosts []string, now time.Time) bool {
	leaf := cert.Leaf
	if leaf == nil || leaf.NotAfter.Sub(now) < 30*24*time.Hour {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// CLIConfig is the file the misaki CLI reads (misaki.yaml).
type CLIConfig struct {
	Hub    string `json:"hub"`
	Token  string `json:"token"`
	CAFile string `json:"caFile,omitempty"`
}

// bootstrapAdmin creates the first admin token when the store has none.
func bootstrapAdmin(ctx context.Context, st store.Store, c Config, url string, ca *enrol.CA, log *slog.Logger) error {
	ts, err := st.ListOperatorTokens(ctx)
	if err != nil {
		return fmt.Errorf("operator tokens: %w", err)
	}
	if len(ts) > 0 {
		return nil
	}
	secret, hash := api.NewOperatorSecret()
	err = st.CreateOperatorToken(ctx, store.OperatorToken{Name: "admin", Scope: store.ScopeAdmin, Hash: hash, Created: c.Clock.Now().UTC()})
	if errors.Is(err, store.ErrExists) {
		return nil // another replica made it first
	}
	if err != nil {
		return fmt.Errorf("create admin token: %w", err)
	}
	caFile := filepath.Join(c.DataDir, "ca.crt")
	if err := os.WriteFile(filepath.Join(c.DataDir, "admin.token"), []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	abs, _ := filepath.Abs(caFile)
	b, err := yaml.Marshal(CLIConfig{Hub: url, Token: secret, CAFile: abs})
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(c.DataDir, "misaki.yaml")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		return err
	}
	log.Info("created the admin operator token", "token", filepath.Join(c.DataDir, "admin.token"), "cliConfig", cfgFile)
	return nil
}
