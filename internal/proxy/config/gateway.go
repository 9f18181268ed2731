package config

import (
	"net/http"
	"strings"
	"time"
)

// Gateway configures the cloud gateway (role: gateway).
type Gateway struct {
	// TLS is the gateway's certificate and the CA that signs vehicles'
	// client certificates; a client certificate is required. Required.
	TLS ServerTLS `yaml:"tls"`
	// Idempotency configures de-duplication by Idempotency-Key.
	Idempotency Idempotency `yaml:"idempotency"`
	// IdentityHeader carries the vehicle identity (the client certificate's
	// first URI SAN, else its common name) to the services; a value sent by
	// the client is replaced. Default Misaki-Vehicle-Id.
	IdentityHeader string `yaml:"identityHeader"`
	// VehicleServices, when present, sends a vehicle's calls to cloud
	// Services' cluster DNS names that no route serves to the Service in
	// that vehicle's own cloud namespace (vehicleservices.go). nil: off.
	VehicleServices *VehicleServices `yaml:"vehicleServices"`
}

// ServerTLS is a TLS server's certificate and its client CA.
type ServerTLS struct {
	CertFile     string `yaml:"certFile"`
	KeyFile      string `yaml:"keyFile"`
	ClientCAFile string `yaml:"clientCAFile"`
}

// Idempotency configures the gateway's key store.
type Idempotency struct {
	// Dir holds the local store (a bbolt file and its logs), for a gateway
	// that runs as one replica. Required unless Postgres is set.
	Dir string `yaml:"dir"`
	// Window is how long a key and its answer are remembered; longer than
	// any expected outage. Default 720h (30 days).
	Window Duration `yaml:"window"`
	// MaxStoredBody is the most of a response body kept for repeats; a
	// longer one is answered to repeats with status and headers only.
	// Default 1MiB.
	MaxStoredBody ByteSize `yaml:"maxStoredBody"`
	// Postgres, when set, keeps the keys in PostgreSQL instead of Dir,
	// shared by every gateway replica that names the same database.
	Postgres *IdempotencyPostgres `yaml:"postgres"`
	// ClaimTTL is the lease of a claim in the shared store: how long a key
	// whose request was in flight on a replica that died stays claimed
	// (repeats get 409) before another replica may deliver it again. A
	// live replica renews its claims every third of it. Default 30s.
	ClaimTTL Duration `yaml:"claimTTL"`
}

// IdempotencyPostgres names the shared store's database: exactly one of
// DSN and DSNEnv.
type IdempotencyPostgres struct {
	// DSN is a postgres:// URL or a key=value string, as pgx parses it.
	DSN string `yaml:"dsn"`
	// DSNEnv is the name of an environment variable holding the DSN (a
	// Secret's), read when the gateway starts.
	DSNEnv string `yaml:"dsnEnv"`
}

// Defaults of the gateway block.
const (
	DefaultIdempotencyWindow = 30 * 24 * time.Hour
	DefaultClaimTTL          = 30 * time.Second
	DefaultIdentityHeader    = "Misaki-Vehicle-Id"
	// MinClaimTTL is the shortest gateway.idempotency.claimTTL: a live
	// replica renews its claims every third of it.
	MinClaimTTL = time.Second
)

// setDefaults fills the gateway block; vehicleServices, when present,
// takes limits.maxBodyBytes as its default body limit.
func (g *Gateway) setDefaults(maxBodyBytes ByteSize) {
	setDefault(&g.Idempotency.Window, Duration(DefaultIdempotencyWindow))
	setDefault(&g.Idempotency.MaxStoredBody, DefaultMaxResponseBytes)
	setDefault(&g.Idempotency.ClaimTTL, Duration(DefaultClaimTTL))
	setDefault(&g.IdentityHeader, DefaultIdentityHeader)
	if v := g.VehicleServices; v != nil {
		v.setDefaults(maxBodyBytes)
	}
}

// validate checks the gateway block, for the gateway role.
func (g Gateway) validate(bad report) {
	if g.TLS.CertFile == "" || g.TLS.KeyFile == "" || g.TLS.ClientCAFile == "" {
		bad("gateway.tls", "certFile, keyFile and clientCAFile are required: vehicles connect with mutual TLS")
	}
	switch pg := g.Idempotency.Postgres; {
	case pg == nil && g.Idempotency.Dir == "":
		bad("gateway.idempotency.dir", "is required: set a directory for the key store, or gateway.idempotency.postgres for one shared by replicas")
	case pg != nil && g.Idempotency.Dir != "":
		bad("gateway.idempotency.dir", "and gateway.idempotency.postgres are both set; keep dir for one replica's local store, or postgres for a store shared by replicas")
	case pg != nil && (pg.DSN == "") == (pg.DSNEnv == ""):
		bad("gateway.idempotency.postgres", "set exactly one of dsn (a postgres:// URL) and dsnEnv (the name of an environment variable holding it)")
	}
	if g.Idempotency.ClaimTTL < Duration(MinClaimTTL) {
		bad("gateway.idempotency.claimTTL", "%s is too short; set %s or more, like 30s", time.Duration(g.Idempotency.ClaimTTL), MinClaimTTL)
	}
	if g.Idempotency.Window <= 0 {
		bad("gateway.idempotency.window", "must be positive, like 720h")
	}
	if http.CanonicalHeaderKey(g.IdentityHeader) != g.IdentityHeader || strings.ContainsAny(g.IdentityHeader, " :") {
		bad("gateway.identityHeader", "%q is not a canonical header name; write it like Misaki-Vehicle-Id", g.IdentityHeader)
	}
	if g.VehicleServices != nil {
		g.VehicleServices.validate(bad)
	}
}
