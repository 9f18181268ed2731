package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/misaki-io/misaki/internal/batch"
)

// Offline is a route's policy when it has no usable link.
type Offline struct {
	// Hold is how long a request waits in memory for a usable link before the
	// proxy answers 503. An app may ask for less with "Prefer: wait=N".
	// Default 0: no holding.
	Hold Duration `yaml:"hold,omitempty"`
	// Links are the link classes the route may use. Empty means any.
	Links []string `yaml:"links,omitempty"`
	// Metered is allow or deny: whether metered links may carry the route.
	// Default allow.
	Metered string `yaml:"metered,omitempty"`
	// Roaming is allow or deny: whether roaming links may carry the route.
	// Default allow.
	Roaming string `yaml:"roaming,omitempty"`
	// HoldLimit bounds this route's held requests. Default: only the global limit.
	HoldLimit HoldLimit `yaml:"holdLimit,omitempty"`
	// RetryAfter is the Retry-After sent with 503 answers. Default: the hold
	// window, at least 1s.
	RetryAfter Duration `yaml:"retryAfter,omitempty"`
	// Spool: when the hold window passes (or at once for "Prefer:
	// respond-async"), the request is written to the spool and answered
	// 202; it is delivered when a usable link returns. Needs spool.dir.
	Spool bool `yaml:"spool,omitempty"`
	// UnsafeMethods are never spooled; they get 503 when the window
	// passes. Default none: every method may be spooled.
	UnsafeMethods []string `yaml:"unsafeMethods,omitempty"`
	// TTL is how long a spooled request may wait, by the wall clock
	// (power-offs count). Default 72h.
	TTL Duration `yaml:"ttl,omitempty"`
	// Priority orders replay across routes: higher first. Default 0.
	Priority int `yaml:"priority,omitempty"`
	// Quota bounds this route's share of the spool. Default: only the
	// spool's own bounds.
	Quota SpoolQuota `yaml:"quota,omitempty"`
	// Eviction is reject (the app gets 507 with the reason) or drop-oldest
	// (the route's oldest spooled requests are dropped, and counted, to
	// make room). Default reject.
	Eviction string `yaml:"eviction,omitempty"`
	// Batch, over 1, delivers spooled requests up to that many per
	// exchange. The upstream must be a Misaki gateway. Default 0: one
	// request per exchange.
	Batch int `yaml:"batch,omitempty"`
	// Budget caps the bytes the route may send and receive over metered
	// links; over it, the route treats metered links as unusable (its
	// requests are held or spooled and replayed on an unmetered link)
	// until the day or month turns. Needs spool.dir, where the counters
	// are kept across restarts.
	Budget Budget `yaml:"budget,omitempty"`
	// GRPC is what a gRPC call (content-type application/grpc) gets when
	// its hold window passes: unavailable (default: grpc-status UNAVAILABLE,
	// the call was not sent, never spooled) or spool (spooled like any
	// request where the route spools, and answered grpc-status
	// DEADLINE_EXCEEDED with its Misaki-Request-Id; see docs/proxy.md).
	GRPC string `yaml:"grpc,omitempty"`
}

// Budget is a route's allowance on metered links, counted in UTC days
// and months. Zero: no limit for that period.
type Budget struct {
	Daily   ByteSize `yaml:"daily,omitempty"`
	Monthly ByteSize `yaml:"monthly,omitempty"`
}

// Set reports whether the budget limits anything.
func (b Budget) Set() bool { return b.Daily > 0 || b.Monthly > 0 }

// SpoolQuota bounds one route's spooled requests.
type SpoolQuota struct {
	Bytes    ByteSize `yaml:"bytes,omitempty"`
	Requests int      `yaml:"requests,omitempty"`
}

// Policy values for metered and roaming links.
const (
	Allow = "allow"
	Deny  = "deny"
)

// What a gRPC call gets when its hold window passes (Offline.GRPC).
const (
	GRPCUnavailable = "unavailable"
	GRPCSpool       = "spool"
)

// Spool eviction policies.
const (
	EvictReject     = "reject"
	EvictDropOldest = "drop-oldest"
)

// Defaults and bounds of a route's offline block.
const (
	DefaultSpoolTTL = 72 * time.Hour
	// MaxBatch is the largest offline.batch.
	MaxBatch = batch.MaxItems
)

// setDefaults fills a route's offline block and writes its unsafe
// methods in upper case.
func (o *Offline) setDefaults() {
	setDefault(&o.Metered, Allow)
	setDefault(&o.Roaming, Allow)
	setDefault(&o.RetryAfter, max(o.Hold, Duration(time.Second)))
	setDefault(&o.TTL, Duration(DefaultSpoolTTL))
	setDefault(&o.Eviction, EvictReject)
	setDefault(&o.GRPC, GRPCUnavailable)
	for j, m := range o.UnsafeMethods {
		o.UnsafeMethods[j] = strings.ToUpper(m)
	}
}

// validate checks a route's offline block, whose YAML path is f; spooling
// and budgets need spoolDir.
func (o Offline) validate(f, spoolDir string, bad report) {
	notNegative(f, bad, durationField{"hold", o.Hold}, durationField{"retryAfter", o.RetryAfter})
	for j, cl := range o.Links {
		if !validName(cl) {
			bad(fmt.Sprintf("%s.links[%d]", f, j), "%q is not a link class; use ethernet, wifi, cellular, satellite or a class named in links", cl)
		}
	}
	for _, p := range []struct{ field, v string }{{"metered", o.Metered}, {"roaming", o.Roaming}} {
		if p.v != Allow && p.v != Deny {
			bad(f+"."+p.field, "%q must be allow or deny", p.v)
		}
	}
	o.HoldLimit.validate(f+".holdLimit", bad)
	if o.Budget.Daily < 0 || o.Budget.Monthly < 0 {
		bad(f+".budget", "must not be negative")
	}
	if o.Budget.Set() && spoolDir == "" {
		bad(f+".budget", "is set but spool.dir is not; the counters are kept there so that a restart does not reset them")
	}
	if o.Spool && spoolDir == "" {
		bad(f+".spool", "is true but spool.dir is not set; set spool.dir to a directory in the pod's volume")
	}
	if o.TTL < 0 {
		bad(f+".ttl", "must not be negative")
	}
	if o.Batch < 0 || o.Batch > MaxBatch {
		bad(f+".batch", "%d must be between 0 and %d", o.Batch, MaxBatch)
	}
	if o.Quota.Bytes < 0 || o.Quota.Requests < 0 {
		bad(f+".quota", "bytes and requests must not be negative")
	}
	if o.Eviction != EvictReject && o.Eviction != EvictDropOldest {
		bad(f+".eviction", "%q must be reject or drop-oldest", o.Eviction)
	}
	if o.GRPC != GRPCUnavailable && o.GRPC != GRPCSpool {
		bad(f+".grpc", "%q must be unavailable or spool", o.GRPC)
	}
	for j, m := range o.UnsafeMethods {
		if m == "" || strings.ContainsFunc(m, func(c rune) bool { return c < 'A' || c > 'Z' }) {
			bad(fmt.Sprintf("%s.unsafeMethods[%d]", f, j), "%q is not an HTTP method; write it like DELETE", m)
		}
	}
}
