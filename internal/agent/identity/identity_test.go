package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/api"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// offsetClock is the hub's clock in these tests: real time shifted by an
// offset, with real timers. Shifting it back while a certificate is
// issued makes a certificate that is old (due for renewal, or expired)
// by the wall clock the hub's TLS verifies client certificates with.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time                       { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) NewTimer(d time.Duration) clock.Timer { return clock.Real{}.NewTimer(d) }
func (c *offsetClock) set(d time.Duration)                  { c.off.Store(int64(d)) }

const certTTL = 90 * 24 * time.Hour // the hub's default, set explicitly

func startHub(t *testing.T) (*hubtest.Hub, *offsetClock) {
	t.Helper()
	clk := &offsetClock{}
	h := hubtest.Start(t, hub.Config{Clock: clk, API: api.Options{CertTTL: certTTL}})
	return h, clk
}

// newToken creates vehicle (if it does not exist) and a bootstrap token
// for it; ttl "" is the hub's default.
func newToken(t *testing.T, h *hubtest.Hub, vehicle, ttl string) string {
	t.Helper()
	code, b := h.Do(t, h.Client(), h.Token, "POST", "/v1/vehicles", hubv1.Vehicle{ID: vehicle}, nil)
	if code != http.StatusCreated && code != http.StatusConflict {
		t.Fatalf("create vehicle %s: %d %s", vehicle, code, b)
	}
	var tok hubv1.BootstrapToken
	var in any
	if ttl != "" {
		in = hubv1.TokenRequest{TTL: ttl}
	}
	h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles/"+vehicle+"/tokens", in, &tok)
	return tok.Token
}

// enrolled enrols vehicle into a new state dir.
func enrolled(t *testing.T, h *hubtest.Hub, vehicle string, clk clock.Clock) (*Identity, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	id, err := Enrol(context.Background(), dir, hubclient.New(h.URL, h.CA, nil), newToken(t, h, vehicle, ""), clk)
	if err != nil {
		t.Fatalf("Enrol: %v", err)
	}
	return id, dir
}

func serial(id *Identity) string { return id.TLSCertificate().Leaf.SerialNumber.String() }

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkFiles checks that dir holds exactly identity.pem and hub-ca.pem,
// both mode 0600, and that identity.pem is id's certificate.
func checkFiles(t *testing.T, dir string, id *Identity) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if strings.Join(names, " ") != HubCAFile+" "+FileName {
		t.Errorf("state dir holds %v, want [%s %s] (no temporary files)", names, HubCAFile, FileName)
	}
	loaded, err := Load(dir, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if serial(loaded) != serial(id) {
		t.Errorf("%s holds certificate %s, want %s", FileName, serial(loaded), serial(id))
	}
}

func TestEnrolLoadAndCallHub(t *testing.T) {
	h, _ := startHub(t)
	ctx := context.Background()
	clk := clock.NewFake(time.Now())
	id, dir := enrolled(t, h, "car-1", clk)

	if id.Vehicle() != "car-1" {
		t.Errorf("Vehicle() = %q, want car-1", id.Vehicle())
	}
	if life := id.NotAfter().Sub(id.NotBefore()); life < certTTL || life > certTTL+10*time.Minute {
		t.Errorf("certificate lifetime %v, want the hub's %v (plus its backdating)", life, certTTL)
	}
	if want := id.NotBefore().Add(id.NotAfter().Sub(id.NotBefore()) * 2 / 3); id.RenewAt().Sub(want).Abs() > time.Second {
		t.Errorf("RenewAt() = %v, want two thirds of the way, %v", id.RenewAt(), want)
	}
	var tw hubv1.Twin
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-1", nil, &tw)
	if v := tw.Vehicle; v.CertificateExpires == nil || !v.CertificateExpires.Equal(id.NotAfter()) {
		t.Errorf("hub says the certificate expires %v, identity %v", v.CertificateExpires, id.NotAfter())
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, HubCAFile)), h.CAPEM) {
		t.Errorf("%s is not the hub's CA", HubCAFile)
	}
	checkFiles(t, dir, id)

	// A new Identity from disk, trusting only the CA the hub returned,
	// makes calls that need the vehicle's certificate.
	loaded, err := Load(dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Vehicle() != "car-1" || !loaded.NotAfter().Equal(id.NotAfter()) || !loaded.RenewAt().Equal(id.RenewAt()) {
		t.Errorf("loaded %s until %v, want car-1 until %v", loaded.Vehicle(), loaded.NotAfter(), id.NotAfter())
	}
	c := loaded.Client(h.URL, loaded.Roots(nil))
	if err := c.Report(ctx, "car-1", hubv1.Reported{Half: "vehicle", Message: "identity test"}); err != nil {
		t.Fatalf("Report with the loaded certificate: %v", err)
	}
	if _, err := c.Desired(ctx, "car-1", "vehicle", 0, 0); err != nil {
		t.Fatalf("Desired with the loaded certificate: %v", err)
	}
	// The same call without the certificate is refused: it proves the
	// certificate was presented.
	if err := hubclient.New(h.URL, h.CA, nil).Report(ctx, "car-1", hubv1.Reported{Half: "vehicle"}); !hubclient.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("Report without a certificate: %v, want 401", err)
	}
	if tc := loaded.TLSCertificate(); len(tc.Certificate) != 1 {
		t.Errorf("TLS certificate chain has %d certificates, want the vehicle's alone (the hub's CA is a root)", len(tc.Certificate))
	}
}

func TestEnrolRefusedTokenWritesNothing(t *testing.T) {
	h, hubClk := startHub(t)
	ctx := context.Background()
	used := newToken(t, h, "car-2", "")
	if _, err := Enrol(ctx, t.TempDir(), hubclient.New(h.URL, h.CA, nil), used, nil); err != nil {
		t.Fatal(err)
	}
	_, existingDir := enrolled(t, h, "car-3", nil)
	existing := readFile(t, filepath.Join(existingDir, FileName))
	existingCA := readFile(t, filepath.Join(existingDir, HubCAFile))
	expired := newToken(t, h, "car-2", "1m")
	hubClk.set(time.Hour) // the hub an hour on: the token has expired
	t.Cleanup(func() { hubClk.set(0) })

	for _, tc := range []struct {
		name, token, dir string
	}{
		{"used", used, filepath.Join(t.TempDir(), "state")},
		{"expired", expired, filepath.Join(t.TempDir(), "state")},
		{"unknown", "abcdefgh.0123456789abcdef0123456789abcdef", filepath.Join(t.TempDir(), "state")},
		{"malformed", "not-a-token", filepath.Join(t.TempDir(), "state")},
		{"used, over an existing identity", used, existingDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := Enrol(ctx, tc.dir, hubclient.New(h.URL, h.CA, nil), tc.token, nil)
			if id != nil || !errors.Is(err, ErrTokenRefused) {
				t.Fatalf("Enrol = %v, %v; want an error wrapping ErrTokenRefused", id, err)
			}
			if !hubclient.IsStatus(err, http.StatusUnauthorized) {
				t.Errorf("Enrol error %v does not carry the hub's 401", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "invalid, already used or expired") || !strings.Contains(msg, "new one") {
				t.Errorf("error %q does not say the token is invalid, used or expired and a new one is needed", msg)
			}
			if tc.dir == existingDir {
				if !bytes.Equal(readFile(t, filepath.Join(tc.dir, FileName)), existing) || !bytes.Equal(readFile(t, filepath.Join(tc.dir, HubCAFile)), existingCA) {
					t.Fatal("a refused token changed the existing identity")
				}
				return
			}
			if _, err := os.Stat(tc.dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused token made the state dir (stat: %v)", err)
			}
		})
	}
}

func TestLoadNotEnrolled(t *testing.T) {
	for name, dir := range map[string]string{
		"empty dir":   t.TempDir(),
		"missing dir": filepath.Join(t.TempDir(), "nope"),
	} {
		t.Run(name, func(t *testing.T) {
			id, err := Load(dir, nil)
			if id != nil || !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("Load = %v, %v; want ErrNotEnrolled", id, err)
			}
		})
	}
}

// pemBlocks splits identity.pem into its blocks.
func pemBlocks(t *testing.T, b []byte) []*pem.Block {
	t.Helper()
	var out []*pem.Block
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		out = append(out, blk)
	}
}

func encode(blocks ...*pem.Block) []byte {
	var out []byte
	for _, b := range blocks {
		out = append(out, pem.EncodeToMemory(b)...)
	}
	return out
}

func TestLoadDamaged(t *testing.T) {
	h, _ := startHub(t)
	_, dir := enrolled(t, h, "car-4", nil)
	_, otherDir := enrolled(t, h, "car-5", nil)
	good := readFile(t, filepath.Join(dir, FileName))
	goodCA := readFile(t, filepath.Join(dir, HubCAFile))
	blocks := pemBlocks(t, good) // key, certificate, CA
	if len(blocks) != 3 || blocks[0].Type != "PRIVATE KEY" || blocks[1].Type != "CERTIFICATE" || blocks[2].Type != "CERTIFICATE" {
		t.Fatalf("%s holds %d blocks, want key, certificate, CA", FileName, len(blocks))
	}
	otherKey := pemBlocks(t, readFile(t, filepath.Join(otherDir, FileName)))[0]
	badSig := *blocks[1]
	badSig.Bytes = bytes.Clone(badSig.Bytes)
	badSig.Bytes[len(badSig.Bytes)-1] ^= 0x01 // the last byte of the signature

	for _, tc := range []struct {
		name     string
		identity []byte
		ca       []byte // nil: hub-ca.pem absent
		file     string // the file the error must name
		want     string
	}{
		{"empty", nil, goodCA, FileName, "no PRIVATE KEY"},
		{"cut short", good[:len(good)/2], goodCA, FileName, "cut short"},
		{"key of another vehicle", encode(otherKey, blocks[1], blocks[2]), goodCA, FileName, "not the certificate's"},
		{"no key", encode(blocks[1], blocks[2]), goodCA, FileName, "no PRIVATE KEY"},
		{"no CA", encode(blocks[0], blocks[1]), goodCA, FileName, "1 CERTIFICATE"},
		{"signature damaged", encode(blocks[0], &badSig, blocks[2]), goodCA, FileName, "signed by no CA"},
		{"foreign block", encode(blocks[0], blocks[1], blocks[2], &pem.Block{Type: "X", Bytes: []byte{1}}), goodCA, FileName, `"X"`},
		{"garbage after", append(bytes.Clone(good), "-----BEGIN CERT"...), goodCA, FileName, "cut short"},
		{"hub CA missing", good, nil, HubCAFile, "missing"},
		{"hub CA damaged", good, goodCA[:len(goodCA)/2], HubCAFile, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, FileName), tc.identity, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.ca != nil {
				if err := os.WriteFile(filepath.Join(d, HubCAFile), tc.ca, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			id, err := Load(d, nil)
			if id != nil || err == nil {
				t.Fatalf("Load of a damaged identity = %v, %v; want an error", id, err)
			}
			if errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("Load = %v: a damaged identity must not read as not enrolled (the agent would try to enrol again)", err)
			}
			if msg := err.Error(); !strings.Contains(msg, filepath.Join(d, tc.file)) || !strings.Contains(msg, tc.want) {
				t.Fatalf("Load error %q: want it to name %s and say %q", msg, filepath.Join(d, tc.file), tc.want)
			}
		})
	}
	// The undamaged copy loads.
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, FileName), good, 0o600)
	os.WriteFile(filepath.Join(d, HubCAFile), goodCA, 0o600)
	if _, err := Load(d, nil); err != nil {
		t.Fatalf("Load of the undamaged copy: %v", err)
	}
}

// peerRecorder is a TLS server on loopback that asks for a client
// certificate and records the serial number of each one it is shown.
type peerRecorder struct {
	srv     *httptest.Server
	mu      sync.Mutex // guards serials
	serials []string
}

func newPeerRecorder(t *testing.T) *peerRecorder {
	p := &peerRecorder{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.serials = append(p.serials, r.TLS.PeerCertificates[0].SerialNumber.String())
		p.mu.Unlock()
	}))
	p.srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *peerRecorder) last() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serials[len(p.serials)-1]
}

func TestRenewUsedOnNextConnection(t *testing.T) {
	h, _ := startHub(t)
	ctx := context.Background()
	id, dir := enrolled(t, h, "car-6", nil)
	old := serial(id)
	oldKey := id.TLSCertificate().PrivateKey

	// One tls.Config, made before the renewal, for a server of our own
	// that records the certificate each connection presents.
	rec := newPeerRecorder(t)
	pool := x509.NewCertPool()
	pool.AddCert(rec.srv.Certificate())
	tr := &http.Transport{TLSClientConfig: id.ClientTLS(pool)}
	other := &http.Client{Transport: tr}
	get := func() {
		t.Helper()
		resp, err := other.Get(rec.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get()
	if rec.last() != old {
		t.Fatalf("server saw certificate %s, want %s", rec.last(), old)
	}

	c := id.Client(h.URL, id.Roots(h.CA))
	if err := c.Report(ctx, "car-6", hubv1.Reported{Half: "vehicle"}); err != nil {
		t.Fatalf("Report before renewal: %v", err)
	}
	if err := id.Renew(ctx, c); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if serial(id) == old {
		t.Fatal("Renew kept the old certificate")
	}
	if id.TLSCertificate().PrivateKey == oldKey {
		t.Error("Renew kept the old key")
	}
	if id.Vehicle() != "car-6" {
		t.Errorf("renewed certificate is for %q, want car-6", id.Vehicle())
	}
	checkFiles(t, dir, id)

	// The hub client's next call is on a new connection (Renew closed the
	// idle one), so it presents the new certificate; the hub takes it.
	var reused atomic.Bool
	traced := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused.Store(i.Reused) }})
	if err := c.Report(traced, "car-6", hubv1.Reported{Half: "vehicle", Message: "renewed"}); err != nil {
		t.Fatalf("Report after renewal: %v", err)
	}
	if reused.Load() {
		t.Error("the call after Renew reused the connection made with the old certificate")
	}
	var tw hubv1.Twin
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles/car-6", nil, &tw)
	if v := tw.Vehicle; v.CertificateExpires == nil || !v.CertificateExpires.Equal(id.NotAfter()) {
		t.Errorf("hub says the newest certificate expires %v, identity %v", v.CertificateExpires, id.NotAfter())
	}

	// The tls.Config made before the renewal presents the new
	// certificate on its next connection.
	tr.CloseIdleConnections()
	get()
	if rec.last() != serial(id) {
		t.Fatalf("a new connection presented certificate %s, want the renewed %s", rec.last(), serial(id))
	}
}

func TestRenewFailureChangesNothing(t *testing.T) {
	h, _ := startHub(t)
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		// client is the client Renew gets; fp fails file-system calls.
		client func(id *Identity) *hubclient.Client
		fp     framelog.Failpoint
		want   string
	}{
		{
			name:   "hub refuses a client without the certificate",
			client: func(*Identity) *hubclient.Client { return hubclient.New(h.URL, h.CA, nil) },
			want:   "401",
		},
		{
			name:   "rename of identity.pem fails",
			client: func(id *Identity) *hubclient.Client { return id.Client(h.URL, id.Roots(nil)) },
			fp: func(op framelog.Op, path string) error {
				if op == framelog.OpRename && filepath.Base(path) == FileName {
					return errors.New("injected rename failure")
				}
				return nil
			},
			want: "injected rename failure",
		},
		{
			name:   "fsync of identity.pem fails",
			client: func(id *Identity) *hubclient.Client { return id.Client(h.URL, id.Roots(nil)) },
			fp: func(op framelog.Op, path string) error {
				if op == framelog.OpSync && strings.HasPrefix(filepath.Base(path), FileName+".tmp") {
					return errors.New("injected fsync failure")
				}
				return nil
			},
			want: "injected fsync failure",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, dir := enrolled(t, h, "car-7", nil)
			id.fp = tc.fp
			before := readFile(t, filepath.Join(dir, FileName))
			beforeCA := readFile(t, filepath.Join(dir, HubCAFile))
			old := serial(id)
			err := id.Renew(ctx, tc.client(id))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Renew = %v, want an error saying %q", err, tc.want)
			}
			if serial(id) != old {
				t.Error("a failed Renew changed the certificate in use")
			}
			if !bytes.Equal(readFile(t, filepath.Join(dir, FileName)), before) || !bytes.Equal(readFile(t, filepath.Join(dir, HubCAFile)), beforeCA) {
				t.Error("a failed Renew changed the files")
			}
			checkFiles(t, dir, id)
		})
	}
}

// gate is a TCP forwarder on loopback to the hub that can refuse
// connections, for a hub that is out of reach. TLS passes through it end
// to end.
type gate struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex // guards conns
	conns  []net.Conn
}

func newGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if g.down.Load() {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			g.mu.Lock()
			g.conns = append(g.conns, c, u)
			g.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(u, c); u.Close() }()
			go func() { defer wg.Done(); io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		g.mu.Lock()
		for _, c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		wg.Wait()
	})
	return g
}

func (g *gate) url() string { return "https://" + g.ln.Addr().String() }

// logBuffer is an io.Writer for a slog handler, safe for the renewal
// goroutine to write while the test reads.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitTimers polls until clk has n timers armed: the code under test is
// waiting on the clock.
func waitTimers(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for clk.Timers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d timers armed after 30s, want %d", clk.Timers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// startRenewal runs RunRenewal until the test ends.
func startRenewal(t *testing.T, id *Identity, c *hubclient.Client, b *backoff.Backoff) *logBuffer {
	t.Helper()
	var logs logBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		id.RunRenewal(ctx, c, b, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &logs
}

// renewAtIn is the hub clock's offset that makes a certificate issued now
// due for renewal in d.
func renewAtIn(d time.Duration) time.Duration {
	// RenewAt = now + offset - Backdate + 2/3·(ttl + Backdate)
	return d + 5*time.Minute - (certTTL+5*time.Minute)/3*2
}

func TestRunRenewal(t *testing.T) {
	h, hubClk := startHub(t)
	g := newGate(t, strings.TrimPrefix(h.URL, "https://"))
	clk := clock.NewFake(time.Now())
	// A certificate issued long enough ago to be due in an hour.
	hubClk.set(renewAtIn(time.Hour))
	id, dir := enrolled(t, h, "car-8", clk)
	hubClk.set(0)
	if in := id.RenewAt().Sub(clk.Now()); in < 50*time.Minute || in > 70*time.Minute {
		t.Fatalf("renewal due in %v, want about an hour", in)
	}
	old := serial(id)
	onDisk := readFile(t, filepath.Join(dir, FileName))
	b := backoff.New(backoff.Policy{Initial: time.Second, Max: time.Minute, Jitter: backoff.NoJitter}, clk)
	logs := startRenewal(t, id, id.Client(g.url(), id.Roots(h.CA)), b)

	waitTimers(t, clk, 1)
	clk.Advance(id.RenewAt().Sub(clk.Now()) - time.Second)
	if clk.Timers() != 1 || serial(id) != old {
		t.Fatalf("before RenewAt: %d timers, certificate %s; want still waiting with %s", clk.Timers(), serial(id), old)
	}

	// At RenewAt the hub is out of reach: the failure is logged and
	// retried after the backoff.
	g.down.Store(true)
	clk.Advance(time.Second)
	waitTimers(t, clk, 1)
	if serial(id) != old || !bytes.Equal(readFile(t, filepath.Join(dir, FileName)), onDisk) {
		t.Fatal("a failed renewal changed the certificate")
	}
	if l := logs.String(); !strings.Contains(l, "certificate renewal failed; retrying") || !strings.Contains(l, "attempt=1") {
		t.Fatalf("log after a failed renewal:\n%s\nwant the failure and its attempt", l)
	}

	// The hub is back for the retry.
	g.down.Store(false)
	clk.Advance(time.Second)
	waitTimers(t, clk, 1) // waiting for the new certificate's RenewAt
	if serial(id) == old {
		t.Fatal("the retry did not renew the certificate")
	}
	checkFiles(t, dir, id)
	if !id.RenewAt().After(clk.Now()) {
		t.Errorf("new RenewAt %v is not after now %v", id.RenewAt(), clk.Now())
	}
	if b.Attempts() != 0 {
		t.Errorf("backoff at attempt %d after a success, want reset to 0", b.Attempts())
	}
	if l := logs.String(); strings.Count(l, `msg="certificate renewed"`) != 1 {
		t.Fatalf("log:\n%s\nwant one renewal", l)
	}
	// The next connection through the new certificate works.
	if err := id.Client(h.URL, id.Roots(nil)).Report(context.Background(), "car-8", hubv1.Reported{Half: "vehicle"}); err != nil {
		t.Fatalf("Report with the renewed certificate: %v", err)
	}
}

func TestRunRenewalExpired(t *testing.T) {
	h, hubClk := startHub(t)

	t.Run("hub refuses the expired certificate", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		hubClk.set(-certTTL - time.Hour) // issued 90 days and an hour ago
		id, dir := enrolled(t, h, "car-9", clk)
		hubClk.set(0)
		if !id.NotAfter().Before(clk.Now()) {
			t.Fatalf("certificate valid until %v, want expired", id.NotAfter())
		}
		onDisk := readFile(t, filepath.Join(dir, FileName))
		b := backoff.New(backoff.Policy{Initial: time.Second, Max: time.Minute, Jitter: backoff.NoJitter}, clk)
		logs := startRenewal(t, id, id.Client(h.URL, id.Roots(h.CA)), b)
		// Due long ago: the attempt is at once, the hub's TLS refuses
		// the expired certificate, and the retry waits.
		waitTimers(t, clk, 1)
		clk.Advance(time.Second)
		waitTimers(t, clk, 1)
		l := logs.String()
		if !strings.Contains(l, "the certificate has expired") || !strings.Contains(l, "enrol the vehicle again with a new bootstrap token") {
			t.Fatalf("log:\n%s\nwant the expiry and what to do about it", l)
		}
		if !strings.Contains(l, "attempt=2") {
			t.Fatalf("log:\n%s\nwant a second attempt", l)
		}
		if !bytes.Equal(readFile(t, filepath.Join(dir, FileName)), onDisk) {
			t.Fatal("a refused renewal changed identity.pem")
		}
	})

	t.Run("vehicle clock past expiry, hub takes it", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		id, dir := enrolled(t, h, "car-10", clk)
		old := serial(id)
		clk.Advance(certTTL + time.Hour)
		b := backoff.New(backoff.Policy{Initial: time.Second, Max: time.Minute, Jitter: backoff.NoJitter}, clk)
		logs := startRenewal(t, id, id.Client(h.URL, id.Roots(h.CA)), b)
		// Renewed at once; the new certificate is due by the vehicle's
		// clock too, so the next attempt waits the backoff rather than
		// looping.
		waitTimers(t, clk, 1)
		if serial(id) == old {
			t.Fatal("the expired certificate was not renewed")
		}
		checkFiles(t, dir, id)
		if l := logs.String(); !strings.Contains(l, "is the vehicle's clock ahead of the hub's?") {
			t.Fatalf("log:\n%s\nwant the clock warning", l)
		}
		renewed := serial(id)
		clk.Advance(time.Second)
		waitTimers(t, clk, 1)
		if serial(id) == renewed {
			t.Fatal("no renewal after the backoff")
		}
	})
}
