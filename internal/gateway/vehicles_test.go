package gateway

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/misaki-io/misaki/internal/batch"
	"github.com/misaki-io/misaki/internal/deadaddr"
	"github.com/misaki-io/misaki/internal/devpki"
	"github.com/misaki-io/misaki/internal/promtest"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// The fleet in these tests: the gateway's certificate and vehicle alpha's
// come from devpki, as in the other gateway tests; every other client
// certificate from a second CA, which the gateway also trusts (its
// clientCAFile is a bundle of both, as during a CA rotation).
type fleet struct {
	gatewayFiles devpki.Files
	bundle       string // the gateway's clientCAFile
	roots        *x509.CertPool
	certs        map[string]tls.Certificate // by name: alpha, bravo, and the ones naming no vehicle
	second       *testCA
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	dir := t.TempDir()
	f, err := devpki.Write(dir, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	fl := &fleet{gatewayFiles: f, roots: x509.NewCertPool(), certs: map[string]tls.Certificate{}, second: newTestCA(t)}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil || !fl.roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA: %v", err)
	}
	fl.bundle = filepath.Join(dir, "vehicles-ca.pem")
	if err := os.WriteFile(fl.bundle, append(caPEM, fl.second.pem...), 0o600); err != nil {
		t.Fatal(err)
	}
	if fl.certs["alpha"], err = tls.LoadX509KeyPair(f.ClientCert, f.ClientKey); err != nil {
		t.Fatal(err)
	}
	fl.certs["bravo"] = fl.second.client(t, "bravo", devpki.VehicleURI("bravo"))
	return fl
}

func (fl *fleet) client(cert tls.Certificate) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: fl.roots, Certificates: []tls.Certificate{cert}}},
		Timeout:   10 * time.Second,
	}
}

// testCA signs client certificates of any shape.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "second fleet CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial = big.NewInt(100)

// client issues a client certificate with this common name and URI SANs.
func (ca *testCA) client(t *testing.T, cn string, uris ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// seen is what a backend got.
type seen struct {
	Backend, Host, OriginNamespace, Identity, ForwardedHost, Proto, Key string
}

// backend is one cloud Service's pods: it answers with what it saw, and
// counts requests by Idempotency-Key. It speaks HTTP/1.1 and h2c.
type backend struct {
	*httptest.Server
	name  string
	mu    sync.Mutex
	byKey map[string]int
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name, byKey: map[string]int{}}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		b.mu.Lock()
		b.byKey[r.Header.Get("Idempotency-Key")]++
		n := b.byKey[r.Header.Get("Idempotency-Key")]
		b.mu.Unlock()
		w.Header().Set("X-Count", fmt.Sprint(n))
		json.NewEncoder(w).Encode(seen{
			Backend: name, Host: r.Host, OriginNamespace: r.Header.Get(HeaderOriginNamespace),
			Identity: r.Header.Get("Misaki-Vehicle-Id"), ForwardedHost: r.Header.Get("X-Forwarded-Host"),
			Proto: r.Proto, Key: r.Header.Get("Idempotency-Key"),
		})
	}))
	b.Config.Protocols = new(http.Protocols)
	b.Config.Protocols.SetHTTP1(true)
	b.Config.Protocols.SetUnencryptedHTTP2(true)
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

func (b *backend) count(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byKey[key]
}

func (b *backend) hits() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.byKey {
		n += c
	}
	return n
}

// vehicleWorld is a gateway with vehicleServices on its defaults, and the
// cloud cluster it dials: the upstream template stays the default,
// http://{service}.{namespace}.svc.cluster.local:{port}, and only the
// resolution of the names it makes is the test's (Server.vehicleEndpoints,
// standing in for the cluster's DNS), so each namespace's Service is a
// backend of its own and the backend that answers shows which namespace
// the gateway chose.
type vehicleWorld struct {
	*gw
	fleet          *fleet
	alpha, bravo   *backend // api in misaki-v-alpha and misaki-v-bravo
	static         *backend // behind the static routes
	unknownAddress string   // where names with no Service go: refused
	dialled        []string // the names the gateway resolved, in order
	mu             sync.Mutex
}

func newVehicleWorld(t *testing.T, section string) *vehicleWorld {
	t.Helper()
	w := &vehicleWorld{fleet: newFleet(t), alpha: newBackend(t, "alpha"), bravo: newBackend(t, "bravo"), static: newBackend(t, "static")}
	w.unknownAddress = deadaddr.TCP(t)
	services := map[string]string{
		"api.misaki-v-alpha.svc.cluster.local:8080": w.alpha.addr(),
		"api.misaki-v-alpha.svc.cluster.local:80":   w.alpha.addr(),
		"web.misaki-v-alpha.svc.cluster.local:80":   w.alpha.addr(),
		"api.misaki-v-bravo.svc.cluster.local:8080": w.bravo.addr(),
	}
	f := w.fleet.gatewayFiles
	yaml := fmt.Sprintf(`
role: gateway
listen: 127.0.0.1:0
admin: 127.0.0.1:0
gateway:
  tls: {certFile: %q, keyFile: %q, clientCAFile: %q}
  idempotency: {dir: %q}
  vehicleServices: %s
routes:
  - {name: telemetry, hosts: [telemetry.cloud.misaki], upstream: %q}
  - {name: shared-api, hosts: [api.shared.svc.cluster.local], upstream: %q}
  - {name: monitoring, hosts: ["*.monitoring.svc.cluster.local"], matches: [{pathPrefix: /metrics}], upstream: %q}
`, f.ServerCert, f.ServerKey, w.fleet.bundle, t.TempDir(), section, w.static.URL, w.static.URL, w.static.URL)
	w.gw = startGatewayConfig(t, yaml, func(s *Server) {
		s.vehicleEndpoints = func(addr string) []string {
			w.mu.Lock()
			w.dialled = append(w.dialled, addr)
			w.mu.Unlock()
			if a, ok := services[addr]; ok {
				return []string{a}
			}
			return []string{w.unknownAddress}
		}
	})
	return w
}

type vsAnswer struct {
	status int
	header http.Header
	body   string
	seen   seen
}

// call sends a request as the vehicle with cert to host.
func (w *vehicleWorld) call(t *testing.T, cert tls.Certificate, method, host, path string, header http.Header, body string) vsAnswer {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+w.Addr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := w.fleet.client(cert).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := vsAnswer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &a.seen); err != nil {
			t.Fatalf("%s: %v: %q", host, err, b)
		}
	}
	return a
}

func (w *vehicleWorld) get(t *testing.T, vehicle, host string) vsAnswer {
	t.Helper()
	return w.call(t, w.fleet.certs[vehicle], http.MethodGet, host, "/v1/things",
		http.Header{"Misaki-Vehicle-Id": {"forged"}, HeaderOriginNamespace: {"forged"}}, "")
}

// Two vehicles call the same name and each reaches the Service in its own
// namespace, by every form of the name; the backend sees the namespace's
// name as Host, the namespace the app named, and the vehicle.
func TestVehicleServicesReachTheCallersNamespace(t *testing.T) {
	w := newVehicleWorld(t, "{}")
	for _, vehicle := range []string{"alpha", "bravo"} {
		for _, host := range []string{
			"api.shuttle.svc.cluster.local:8080",
			"api.shuttle.svc:8080",
			"api.shuttle:8080",
			"API.Shuttle.svc.Cluster.Local.:8080",
		} {
			t.Run(vehicle+"/"+host, func(t *testing.T) {
				a := w.get(t, vehicle, host)
				want := seen{
					Backend: vehicle, Host: "api.misaki-v-" + vehicle + ".svc.cluster.local:8080", OriginNamespace: "shuttle",
					Identity: devpki.VehicleURI(vehicle), ForwardedHost: "api.misaki-v-" + vehicle + ".svc.cluster.local:8080", Proto: "HTTP/1.1",
				}
				if a.status != http.StatusOK || a.seen != want {
					t.Fatalf("%d %q\n got %+v\nwant %+v", a.status, a.body, a.seen, want)
				}
			})
		}
	}
	// No port in the Host: 80.
	if a := w.get(t, "alpha", "web.shuttle.svc.cluster.local"); a.status != http.StatusOK || a.seen.Host != "web.misaki-v-alpha.svc.cluster.local:80" {
		t.Fatalf("without a port: %d %q %+v", a.status, a.body, a.seen)
	}
	// One upstream per (service, namespace, port): resolved once each.
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.dialled) != 3 {
		t.Fatalf("upstreams made for %q, want one each for alpha's api:8080, bravo's api:8080 and alpha's web:80", w.dialled)
	}
}

// Naming another vehicle's namespace in the Host reaches the caller's own:
// the Host's namespace is passed on, never dialled.
func TestVehicleServicesStayInTheCallersNamespace(t *testing.T) {
	w := newVehicleWorld(t, "{}")
	for _, host := range []string{"api.misaki-v-bravo.svc.cluster.local:8080", "api.misaki-v-bravo:8080"} {
		a := w.get(t, "alpha", host)
		if a.status != http.StatusOK || a.seen.Backend != "alpha" || a.seen.Host != "api.misaki-v-alpha.svc.cluster.local:8080" || a.seen.OriginNamespace != "misaki-v-bravo" {
			t.Fatalf("alpha asking for %s: %d %q %+v", host, a.status, a.body, a.seen)
		}
	}
	if n := w.bravo.hits(); n != 0 {
		t.Fatalf("bravo's Service saw %d requests from alpha", n)
	}
}

// A host a route serves is the route's: its backend answers, with the Host
// as the vehicle sent it, and a request the route's matches do not take is
// 404, not a vehicle service's.
func TestStaticRoutesWinOverVehicleServices(t *testing.T) {
	w := newVehicleWorld(t, "{}")
	a := w.get(t, "alpha", "api.shared.svc.cluster.local:8080")
	if a.status != http.StatusOK || a.seen.Backend != "static" || a.seen.Host != "api.shared.svc.cluster.local:8080" || a.seen.OriginNamespace != "forged" {
		t.Fatalf("static route's host: %d %q %+v", a.status, a.body, a.seen)
	}
	if a := w.call(t, w.fleet.certs["alpha"], http.MethodGet, "prometheus.monitoring.svc.cluster.local", "/metrics", nil, ""); a.status != http.StatusOK || a.seen.Backend != "static" {
		t.Fatalf("wildcard route: %d %q %+v", a.status, a.body, a.seen)
	}
	if a := w.call(t, w.fleet.certs["alpha"], http.MethodGet, "prometheus.monitoring.svc.cluster.local", "/other", nil, ""); a.status != http.StatusNotFound {
		t.Fatalf("a wildcard route's host, a path its matches do not take: %d %q, want 404", a.status, a.body)
	}
	if n := w.alpha.hits() + w.bravo.hits(); n != 0 {
		t.Fatalf("vehicle services got %d requests for the routes' hosts", n)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.dialled) != 0 {
		t.Fatalf("upstreams made for the routes' hosts: %q", w.dialled)
	}
}

// A certificate that names no vehicle gets 403 for a Service name, and
// still reaches the routes.
func TestVehicleServicesNeedAVehicleCertificate(t *testing.T) {
	w := newVehicleWorld(t, "{}")
	ca := w.fleet.second
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"common name only", ca.client(t, "alpha")},
		{"common name is a vehicle URI", ca.client(t, devpki.VehicleURI("alpha"))},
		{"operator", ca.client(t, "ops", "spiffe://misaki/operator/ops")},
		{"other trust domain", ca.client(t, "alpha", "spiffe://other/vehicle/alpha")},
		{"empty vehicle ID", ca.client(t, "x", "spiffe://misaki/vehicle/")},
		{"vehicle ID not a DNS label", ca.client(t, "x", "spiffe://misaki/vehicle/VIN123")},
		{"vehicle ID with a path", ca.client(t, "x", "spiffe://misaki/vehicle/alpha/x")},
		{"vehicle ID with a query", ca.client(t, "x", "spiffe://misaki/vehicle/alpha?x=1")},
		{"namespace too long", ca.client(t, "x", devpki.VehicleURI(strings.Repeat("a", 55)))},
		{"vehicle URI second", ca.client(t, "x", "spiffe://misaki/operator/ops", devpki.VehicleURI("alpha"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := w.call(t, tc.cert, http.MethodGet, "api.shuttle.svc.cluster.local:8080", "/", nil, "")
			if a.status != http.StatusForbidden || !strings.Contains(a.body, "names no vehicle") {
				t.Fatalf("%d %q, want 403 saying why", a.status, a.body)
			}
			if a := w.call(t, tc.cert, http.MethodGet, "telemetry.cloud.misaki", "/", nil, ""); a.status != http.StatusOK {
				t.Fatalf("a route: %d %q", a.status, a.body)
			}
		})
	}
	if n := w.alpha.hits() + w.bravo.hits(); n != 0 {
		t.Fatalf("vehicle services got %d requests", n)
	}
	if v := metric(t, w.reg, "misaki_gateway_requests_total", "route", "vehicle-services", "outcome", "forbidden"); v != 10 {
		t.Fatalf("forbidden requests counted: %v, want 10", v)
	}
}

// Hosts that are not a Service name are no route's: 404.
func TestVehicleServicesOnlyTakeServiceNames(t *testing.T) {
	w := newVehicleWorld(t, "{}")
	for _, host := range []string{"api", "a.b.c.d.e", "api.shuttle.svc.fleet.internal", "under_score.shuttle", "api.-x", "127.0.0.1:8080", "[::1]:8080", "api.shuttle:http", "api.shuttle:0", "api.shuttle:70000"} {
		if a := w.get(t, "alpha", host); a.status != http.StatusNotFound {
			t.Errorf("%s: %d %q, want 404", host, a.status, a.body)
		}
	}
	if n := w.alpha.hits(); n != 0 {
		t.Fatalf("vehicle services got %d requests", n)
	}
}

// Through vehicle services, an Idempotency-Key is honoured as on a route:
// a repeat, alone or in a batch, is answered from the store, per vehicle.
func TestVehicleServicesDeduplicate(t *testing.T) {
	w := newVehicleWorld(t, "{}")
	const host = "api.shuttle.svc.cluster.local:8080"
	post := func(vehicle, key, body string) vsAnswer {
		return w.call(t, w.fleet.certs[vehicle], http.MethodPost, host, "/v1/orders", http.Header{"Idempotency-Key": {key}}, body)
	}
	first := post("alpha", "k1", "order")
	again := post("alpha", "k1", "order")
	if first.status != http.StatusOK || again.status != http.StatusOK || again.body != first.body || again.header.Get("Misaki-Replayed") != "true" || again.header.Get("X-Count") != "1" {
		t.Fatalf("first %d %q %v\nrepeat %d %q %v", first.status, first.body, first.header, again.status, again.body, again.header)
	}
	if a := post("alpha", "k1", "another order"); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, another body: %d %q", a.status, a.body)
	}
	// Keys are the vehicle's: bravo's k1 is its own request, to its own namespace.
	if b := post("bravo", "k1", "order"); b.status != http.StatusOK || b.seen.Backend != "bravo" || b.header.Get("Misaki-Replayed") != "" {
		t.Fatalf("bravo's k1: %d %q %v", b.status, b.body, b.header)
	}

	// A batch: the repeat of k1 is answered from the store, k2 is new.
	items := []batch.Item{
		{Method: http.MethodPost, Target: "/v1/orders", Host: host, Header: http.Header{"Idempotency-Key": {"k1"}}, Body: []byte("order")},
		{Method: http.MethodPost, Target: "/v1/orders", Host: host, Header: http.Header{"Idempotency-Key": {"k2"}}, Body: []byte("order 2")},
	}
	var body bytes.Buffer
	ct := batch.Write(&body, items)
	req, _ := http.NewRequest(http.MethodPost, "https://"+w.Addr()+batch.Path, &body)
	req.Header.Set("Content-Type", ct)
	resp, err := w.fleet.client(w.fleet.certs["alpha"]).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answers, err := batch.Read(resp.Body, resp.Header.Get("Content-Type"), false, 1<<20)
	if err != nil || len(answers) != 2 {
		t.Fatalf("batch: %v, %d answers", err, len(answers))
	}
	if a := answers[0]; a.Status != http.StatusOK || a.Header.Get("Misaki-Replayed") != "true" || string(a.Body) != first.body {
		t.Fatalf("batch k1: %d %v %q", a.Status, a.Header, a.Body)
	}
	var s seen
	if a := answers[1]; a.Status != http.StatusOK || json.Unmarshal(a.Body, &s) != nil || s.Backend != "alpha" || s.Key != "k2" || s.OriginNamespace != "shuttle" {
		t.Fatalf("batch k2: %d %v %q", a.Status, a.Header, a.Body)
	}
	if w.alpha.count("k1") != 1 || w.alpha.count("k2") != 1 || w.bravo.count("k1") != 1 {
		t.Fatalf("the Services saw k1 %d and k2 %d times (alpha), k1 %d times (bravo)", w.alpha.count("k1"), w.alpha.count("k2"), w.bravo.count("k1"))
	}
	for outcome, want := range map[string]float64{"forwarded": 3, "replayed": 2, "mismatch": 1} {
		if v := metric(t, w.reg, "misaki_gateway_requests_total", "route", "vehicle-services", "outcome", outcome); v != want {
			t.Errorf("outcome %s counted %v times, want %v", outcome, v, want)
		}
	}
}

// A Service not there (refused, as a Service without ready endpoints
// would be) is 503 with Retry-After, as for a route, and nothing is stored.
func TestVehicleServiceNotReached(t *testing.T) {
	w := newVehicleWorld(t, "{}")
	for range 2 {
		a := w.call(t, w.fleet.certs["alpha"], http.MethodPost, "gone.shuttle:8080", "/", http.Header{"Idempotency-Key": {"k1"}}, "x")
		if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" || a.header.Get("Misaki-Replayed") != "" {
			t.Fatalf("%d %v %q, want 503 with Retry-After, not stored", a.status, a.header, a.body)
		}
	}
}

// protocol: auto sends gRPC calls over h2c and the rest over HTTP/1.1;
// http and h2c send everything one way.
func TestVehicleServicesProtocol(t *testing.T) {
	for _, tc := range []struct{ section, grpc, rest string }{
		{"{}", "HTTP/2.0", "HTTP/1.1"},
		{"{protocol: http}", "HTTP/1.1", "HTTP/1.1"},
		{"{protocol: h2c}", "HTTP/2.0", "HTTP/2.0"},
	} {
		t.Run(tc.section, func(t *testing.T) {
			w := newVehicleWorld(t, tc.section)
			for ct, want := range map[string]string{"application/grpc": tc.grpc, "application/grpc+proto": tc.grpc, "application/json": tc.rest, "application/grpc-web": tc.rest} {
				a := w.call(t, w.fleet.certs["alpha"], http.MethodPost, "api.shuttle:8080", "/", http.Header{"Content-Type": {ct}}, "x")
				if a.status != http.StatusOK || a.seen.Proto != want || a.seen.Backend != "alpha" {
					t.Errorf("%s: %d %q %+v, want %s", ct, a.status, a.body, a.seen, want)
				}
			}
		})
	}
}

// The upstreams are bounded in number, least recently used dropped first,
// and dropped after timeouts.idle unused.
func TestVehicleUpstreamsAreBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	var made []string
	c, err := config.Parse([]byte("role: gateway\ngateway: {tls: {certFile: c, keyFile: k, clientCAFile: ca}, idempotency: {dir: /x}, vehicleServices: {maxUpstreams: 2}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: c, log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: func() time.Time { return now }}
	s.vehicleEndpoints = func(addr string) []string { made = append(made, addr); return []string{"127.0.0.1:1"} }
	v := newVehicleServices(*c.Gateway.VehicleServices, s)
	reg := prometheus.NewRegistry()
	reg.MustRegister(v.upstreams.dropped)
	get := func(service string) *vehicleUpstream {
		t.Helper()
		u, err := v.upstreams.get(upstreamKey{service: service, namespace: "misaki-v-a", port: 80})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	keep := func(want ...string) {
		t.Helper()
		v.upstreams.mu.Lock()
		defer v.upstreams.mu.Unlock()
		var got []string
		for e := v.upstreams.lru.Front(); e != nil; e = e.Next() {
			got = append(got, e.Value.(*vehicleUpstream).key.service)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || len(v.upstreams.byKey) != len(want) {
			t.Fatalf("kept %v (%d by key), want %v", got, len(v.upstreams.byKey), want)
		}
	}
	a := get("a")
	if a.host != "a.misaki-v-a.svc.cluster.local:80" || get("a") != a {
		t.Fatalf("upstream %+v not kept", a)
	}
	get("b")
	get("c") // a dropped: the bound
	keep("c", "b")
	get("b")
	get("a") // c dropped
	keep("a", "b")
	if got := metric(t, reg, "misaki_gateway_vehicle_upstreams_dropped_total", "reason", "bound"); got != 2 {
		t.Fatalf("dropped at the bound: %v, want 2", got)
	}
	if fmt.Sprint(made) != "[a.misaki-v-a.svc.cluster.local:80 b.misaki-v-a.svc.cluster.local:80 c.misaki-v-a.svc.cluster.local:80 a.misaki-v-a.svc.cluster.local:80]" {
		t.Fatalf("made %v", made)
	}

	now = now.Add(time.Minute)
	get("b")
	now = now.Add(30 * time.Second)
	if n := v.upstreams.sweep(90 * time.Second); n != 1 {
		t.Fatalf("sweep dropped %d, want a (unused 90s)", n)
	}
	keep("b")
	now = now.Add(time.Minute)
	v.upstreams.sweep(90 * time.Second)
	keep()
	if got := metric(t, reg, "misaki_gateway_vehicle_upstreams_dropped_total", "reason", "idle"); got != 2 {
		t.Fatalf("dropped idle: %v, want 2", got)
	}
}

// Requests arriving together for an upstream not yet made share one.
func TestVehicleUpstreamMadeOnce(t *testing.T) {
	c, err := config.Parse([]byte("role: gateway\ngateway: {tls: {certFile: c, keyFile: k, clientCAFile: ca}, idempotency: {dir: /x}, vehicleServices: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: c, log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	v := newVehicleServices(*c.Gateway.VehicleServices, s)
	got := make([]*vehicleUpstream, 16)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			u, err := v.upstreams.get(upstreamKey{service: "api", namespace: "misaki-v-a", port: 80})
			if err != nil {
				t.Error(err)
			}
			got[i] = u
		})
	}
	wg.Wait()
	for _, u := range got {
		if u != got[0] {
			t.Fatal("concurrent first requests got different upstreams")
		}
	}
	if n := v.upstreams.len(); n != 1 {
		t.Fatalf("%d upstreams kept, want 1", n)
	}
}

// The pure parts: which Hosts are Service names, and which certificates
// name a vehicle.
func TestServiceHost(t *testing.T) {
	for _, tc := range []struct {
		host, service, namespace string
		port                     int
	}{
		{"api.shuttle.svc.cluster.local:8080", "api", "shuttle", 8080},
		{"api.shuttle.svc.cluster.local", "api", "shuttle", 80},
		{"api.shuttle.svc.cluster.local.", "api", "shuttle", 80},
		{"api.shuttle.svc:9", "api", "shuttle", 9},
		{"api.shuttle", "api", "shuttle", 80},
		{"api.shuttle:", "api", "shuttle", 80},
		{"Api.SHUTTLE", "api", "shuttle", 80},
		{"x.svc", "x", "svc", 80},         // namespace "svc", short form
		{"svc.svc.svc", "svc", "svc", 80}, // service and namespace "svc"
		{"a.svc.svc.cluster.local", "a", "svc", 80},
		{host: "api.shuttle.svc.fleet.internal"},
		{host: "a.b.c"},
		{host: "api"},
		{host: ""},
		{host: "api.shuttle:65536"},
		{host: "api.shuttle:-1"},
		{host: "api.-shuttle"},
		{host: "api." + strings.Repeat("n", 64)},
		{host: "[::1]:80"},
		{host: "10.0.0.1"},
	} {
		s, ns, port, ok := serviceHost(tc.host, "cluster.local")
		if s != tc.service || ns != tc.namespace || port != tc.port || ok != (tc.service != "") {
			t.Errorf("serviceHost(%q) = %q %q %d %v, want %q %q %d", tc.host, s, ns, port, ok, tc.service, tc.namespace, tc.port)
		}
	}
}

// metric returns the value of the counter or gauge name with these label
// pairs, 0 if it has none yet.
func metric(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	return promtest.Value(t, g, name, labels...)
}
