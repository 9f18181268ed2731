package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/forward"
	"github.com/misaki-io/misaki/internal/gateway/idem"
	"github.com/misaki-io/misaki/internal/gateway/idem/postgres"
	"github.com/misaki-io/misaki/internal/pgtest"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// withPostgres links the shared store for the test, as a build with the
// misaki_postgres tag does (postgres.go); tests build without it.
func withPostgres(t *testing.T) {
	t.Helper()
	prev := openPostgres
	openPostgres = func(ctx context.Context, o SharedStore) (idem.Store, error) {
		return postgres.Open(ctx, postgres.Options{
			DSN: o.DSN, Replica: o.Replica, Window: o.Window, ClaimTTL: o.ClaimTTL, Clock: o.Clock, Log: o.Log,
		})
	}
	t.Cleanup(func() { openPostgres = prev })
}

// pgGatewayYAML is a gateway on loopback whose key store is the database
// dsn names.
func pgGatewayYAML(p *pki, dsn, svcURL string) string {
	return fmt.Sprintf(`
role: gateway
listen: 127.0.0.1:0
admin: 127.0.0.1:0
gateway:
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  idempotency: {postgres: {dsn: %q}, claimTTL: 5s}
routes:
  - {name: telemetry, hosts: [telemetry.cloud.misaki], upstream: %s}
`, p.ServerCert, p.ServerKey, p.CA, dsn, svcURL)
}

// Two gateway replicas on one database are one gateway to vehicles: a
// repeat sent to the other replica gets the stored answer, or 409 while the
// first is in flight there; a 5xx is not stored on either; a changed body
// is 422 on either.
func TestReplicasShareThePostgresStore(t *testing.T) {
	withPostgres(t)
	dsn := pgtest.Start(t)
	p := newPKI(t)
	release := make(chan struct{})
	var fail sync.Once
	svc := newService(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Idempotency-Key") {
		case "slow":
			<-release
		case "flaky":
			failed := false
			fail.Do(func() { failed = true })
			if failed {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("X-Key", r.Header.Get("Idempotency-Key"))
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "created "+r.Header.Get("Idempotency-Key"))
	})
	a := startGatewayConfig(t, pgGatewayYAML(p, dsn, svc.URL), nil)
	b := startGatewayConfig(t, pgGatewayYAML(p, dsn, svc.URL), nil)
	if a.replica == b.replica {
		t.Fatalf("both replicas are named %q", a.replica)
	}
	c := p.client(true)

	first := a.post(t, c, "k1", "payload")
	again := b.post(t, c, "k1", "payload")
	if first.status != 201 || again.status != 201 || again.body != "created k1" || again.header.Get("X-Key") != "k1" || again.header.Get("Misaki-Replayed") != "true" {
		t.Fatalf("first on a %+v, repeat on b %+v", first, again)
	}
	if r := b.post(t, c, "k1", "another payload"); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, different body, on b: %d %q", r.status, r.body)
	}

	done := make(chan answer, 1)
	go func() { done <- a.post(t, c, "slow", "b") }()
	for svc.hits("slow") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if r := b.post(t, c, "slow", "b"); r.status != http.StatusConflict || r.header.Get(forward.HeaderIdempotency) != forward.IdempotencyInFlight {
		t.Fatalf("repeat on b while a answers: %d %v %q", r.status, r.header, r.body)
	}
	close(release)
	if r := <-done; r.status != 201 {
		t.Fatalf("first on a: %d", r.status)
	}
	if r := b.post(t, c, "slow", "b"); r.header.Get("Misaki-Replayed") != "true" || r.body != "created slow" {
		t.Fatalf("repeat on b once a answered: %+v", r)
	}

	if r := a.post(t, c, "flaky", "b"); r.status != 503 {
		t.Fatalf("first flaky: %d", r.status)
	}
	if r := b.post(t, c, "flaky", "b"); r.status != 201 || r.header.Get("Misaki-Replayed") != "" {
		t.Fatalf("a 503 must not be stored: %d %v", r.status, r.header)
	}
	for key, want := range map[string]int{"k1": 1, "slow": 1, "flaky": 2} {
		if n := svc.hits(key); n != want {
			t.Errorf("the service saw %s %d times, want %d", key, n, want)
		}
	}

	resp, err := http.Get("http://" + b.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// b stored flaky's answer; a, k1's and slow's.
	for _, want := range []string{"misaki_gateway_store_answers_total 1\n", "misaki_gateway_store_renewals_total"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("b's metrics lack %q", want)
		}
	}
	if strings.Contains(string(metrics), "misaki_gateway_keys ") {
		t.Error("b counts keys, which the shared store does not tell")
	}
}

// In misaki-proxy (no shared store linked), a config naming PostgreSQL is
// refused at once, pointing at misaki-gateway.
func TestPostgresNeedsMisakiGateway(t *testing.T) {
	prev := openPostgres
	openPostgres = nil
	defer func() { openPostgres = prev }()
	cfg, err := config.Parse([]byte(pgGatewayYAML(newPKI(t), "postgres://localhost/db", "http://127.0.0.1:1")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, slog.New(slog.DiscardHandler), nil); !errors.Is(err, errNoPostgres) || !strings.Contains(err.Error(), "misaki-gateway") {
		t.Fatalf("New: %v", err)
	}
}

// The store's config: errors name the field at fault.
func TestIdempotencyConfig(t *testing.T) {
	p := newPKI(t)
	head := fmt.Sprintf("role: gateway\ngateway:\n  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}\n", p.ServerCert, p.ServerKey, p.CA)
	for _, tc := range []struct {
		name, idem, want string
	}{
		{"local", `{dir: /tmp/x}`, ""},
		{"postgres", `{postgres: {dsn: "postgres://gw@db/keys"}}`, ""},
		{"postgres from the environment", `{postgres: {dsnEnv: GW_DSN}, claimTTL: 2m}`, ""},
		{"neither", `{window: 1h}`, "gateway.idempotency.dir: is required"},
		{"both", `{dir: /tmp/x, postgres: {dsn: "postgres://db/keys"}}`, "gateway.idempotency.dir: and gateway.idempotency.postgres are both set"},
		{"no DSN", `{postgres: {}}`, "gateway.idempotency.postgres: set exactly one of dsn"},
		{"two DSNs", `{postgres: {dsn: "postgres://db/keys", dsnEnv: GW_DSN}}`, "gateway.idempotency.postgres: set exactly one of dsn"},
		{"short lease", `{postgres: {dsnEnv: GW_DSN}, claimTTL: 100ms}`, "gateway.idempotency.claimTTL: 100ms is too short"},
		{"unknown field", `{postgres: {url: "postgres://db"}}`, "gateway.idempotency.postgres.url: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(head + "  idempotency: " + tc.idem + "\n"))
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want == "" && cfg.Gateway.Idempotency.ClaimTTL <= 0:
				t.Fatalf("claimTTL %v", cfg.Gateway.Idempotency.ClaimTTL)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	cfg, err := config.Parse([]byte(head + "  idempotency: {postgres: {dsn: \"postgres://db/keys\"}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(cfg.Gateway.Idempotency.ClaimTTL); got != config.DefaultClaimTTL {
		t.Fatalf("default claimTTL %v", got)
	}
}

// A DSN taken from an unset variable is an error naming the field and the
// variable, before anything is dialled.
func TestPostgresDSNEnvUnset(t *testing.T) {
	withPostgres(t)
	p := newPKI(t)
	t.Setenv("MISAKI_TEST_GW_DSN", "")
	cfg, err := config.Parse([]byte(strings.Replace(pgGatewayYAML(p, "x", "http://127.0.0.1:1"), `{dsn: "x"}`, `{dsnEnv: MISAKI_TEST_GW_DSN}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.openStore(t.Context()); err == nil || !strings.Contains(err.Error(), "gateway.idempotency.postgres.dsnEnv: $MISAKI_TEST_GW_DSN is empty") {
		t.Fatalf("openStore: %v", err)
	}
}
