package config

import "time"

// Spool fsync policies.
const (
	SyncAlways   = "always"
	SyncInterval = "interval"
)

// Spool configures the durable queue and its replay.
type Spool struct {
	// Dir holds the spool's files, in the pod's volume. Required when any
	// route spools.
	Dir string `yaml:"dir"`
	// Sync is always (a request is fsynced before its 202; concurrent
	// requests share one fsync) or interval (fsync every syncInterval: a
	// power loss may lose that interval's requests, a proxy crash none).
	// Default always.
	Sync string `yaml:"sync"`
	// SyncInterval is the fsync period under sync: interval. Default 100ms.
	SyncInterval Duration `yaml:"syncInterval"`
	// MaxBytes bounds the whole spool on disk. Default 1GiB.
	MaxBytes ByteSize `yaml:"maxBytes"`
	// MaxRequests bounds the number of spooled requests. Default 1000000.
	MaxRequests int `yaml:"maxRequests"`
	// Retention is how long a finished request's outcome (and the
	// upstream's response) can be read at /v1/requests/{id}. Default 24h.
	Retention Duration `yaml:"retention"`
	// MaxResponseBytes is the most of an upstream response body kept for
	// /v1/requests/{id} and callbacks; longer bodies are cut and marked so.
	// Default 1MiB.
	MaxResponseBytes ByteSize `yaml:"maxResponseBytes"`
	// Replay tunes delivery of the backlog.
	Replay Replay `yaml:"replay"`
}

// Replay tunes how spooled requests are delivered once a link returns.
type Replay struct {
	// Concurrency is how many deliveries (a request, or a batch with
	// offline.batch) are in flight at once, over all routes; live requests
	// are never queued behind them. Default 16.
	Concurrency int `yaml:"concurrency"`
	// Backoff between attempts after a connection error, 5xx, 408 or 429.
	// Default 1s to 5m, with full jitter.
	Backoff Backoff `yaml:"backoff"`
}

// Defaults of the spool block.
const (
	DefaultSyncInterval      = 100 * time.Millisecond
	DefaultSpoolBytes        = 1 << 30
	DefaultSpoolRequests     = 1000000
	DefaultRetention         = 24 * time.Hour
	DefaultMaxResponseBytes  = 1 << 20
	DefaultReplayConcurrency = 16
	DefaultReplayBackoffMin  = time.Second
	DefaultReplayBackoffMax  = 5 * time.Minute
)

// setDefaults fills the spool block. Dir has no default: a route that
// spools needs it set.
func (s *Spool) setDefaults() {
	setDefault(&s.Sync, SyncAlways)
	setDefault(&s.SyncInterval, Duration(DefaultSyncInterval))
	setDefault(&s.MaxBytes, DefaultSpoolBytes)
	setDefault(&s.MaxRequests, DefaultSpoolRequests)
	setDefault(&s.Retention, Duration(DefaultRetention))
	setDefault(&s.MaxResponseBytes, DefaultMaxResponseBytes)
	setDefault(&s.Replay.Concurrency, DefaultReplayConcurrency)
	setDefault(&s.Replay.Backoff.Initial, Duration(DefaultReplayBackoffMin))
	setDefault(&s.Replay.Backoff.Max, Duration(DefaultReplayBackoffMax))
}

// validate checks the spool block.
func (s Spool) validate(bad report) {
	switch s.Sync {
	case SyncAlways, SyncInterval:
	default:
		bad("spool.sync", "%q is not a policy; use always or interval", s.Sync)
	}
	if s.MaxBytes < 0 || s.MaxRequests < 0 || s.MaxResponseBytes < 0 {
		bad("spool", "maxBytes, maxRequests and maxResponseBytes must not be negative")
	}
	if s.SyncInterval < 0 || s.Retention < 0 {
		bad("spool", "syncInterval and retention must not be negative")
	}
	if s.Replay.Concurrency < 0 {
		bad("spool.replay.concurrency", "must not be negative")
	}
	if s.Replay.Backoff.Max < s.Replay.Backoff.Initial {
		bad("spool.replay.backoff.max", "%v is below backoff.initial %v; raise it", s.Replay.Backoff.Max, s.Replay.Backoff.Initial)
	}
}
