package config

import "github.com/misaki-io/misaki/internal/h2guard"

// HTTP2Limits bound, per HTTP/2 connection, the work a client can make the
// server do with frames that are not requests: resets, SETTINGS, PINGs and
// CONTINUATIONs. A connection over one gets GOAWAY(ENHANCE_YOUR_CALM) and
// is closed (docs/proxy.md, "HTTP/2 abuse"). The defaults are far above
// what browsers, Go, curl and gRPC clients send.
type HTTP2Limits struct {
	// MaxConcurrentStreams is how many requests one connection may have
	// in progress. Default 250 (Go's).
	MaxConcurrentStreams int `yaml:"maxConcurrentStreams"`
	// Resets counts streams the client cancels (RST_STREAM) within a
	// second of opening them, and streams the server must reset because
	// the client broke the protocol on them. Default burst 500, 100 a
	// second. Cancelling a stream older than a second is free.
	Resets Rate `yaml:"resets"`
	// Settings counts SETTINGS frames. Default burst 100, 10 a second.
	Settings Rate `yaml:"settings"`
	// Pings counts PING frames sent while the server has answered nothing
	// (no HEADERS or DATA) since the previous one. Default burst 100, 10
	// a second.
	Pings Rate `yaml:"pings"`
	// MaxContinuationFrames bounds the CONTINUATION frames in one header
	// block: a block of limits.maxHeaderBytes needs a few. Default 64;
	// -1 is no limit.
	MaxContinuationFrames int `yaml:"maxContinuationFrames"`
}

// Rate is a token bucket: Burst frames at once, then PerSecond. Burst -1
// is no limit; 0 is the default.
type Rate struct {
	Burst     int     `yaml:"burst"`
	PerSecond float64 `yaml:"perSecond"`
}

// The defaults of limits.http2.
const (
	DefaultHTTP2MaxStreams       = 250
	DefaultHTTP2MaxContinuations = 64
)

// The default rates of limits.http2.
var (
	DefaultHTTP2Resets   = Rate{Burst: 500, PerSecond: 100}
	DefaultHTTP2Settings = Rate{Burst: 100, PerSecond: 10}
	DefaultHTTP2Pings    = Rate{Burst: 100, PerSecond: 10}
)

func (h *HTTP2Limits) setDefaults() {
	setDefault(&h.MaxConcurrentStreams, DefaultHTTP2MaxStreams)
	setDefault(&h.MaxContinuationFrames, DefaultHTTP2MaxContinuations)
	for _, r := range []struct{ p, def *Rate }{
		{&h.Resets, &DefaultHTTP2Resets}, {&h.Settings, &DefaultHTTP2Settings}, {&h.Pings, &DefaultHTTP2Pings},
	} {
		setDefault(&r.p.Burst, r.def.Burst)
		setDefault(&r.p.PerSecond, r.def.PerSecond)
	}
}

func (h *HTTP2Limits) validate(bad report) {
	if h.MaxConcurrentStreams < 0 || h.MaxConcurrentStreams > 1<<20 {
		bad("limits.http2.maxConcurrentStreams", "%d must be between 1 and 1048576", h.MaxConcurrentStreams)
	}
	if h.MaxContinuationFrames < -1 {
		bad("limits.http2.maxContinuationFrames", "%d must be positive, or -1 for no limit", h.MaxContinuationFrames)
	}
	for _, r := range []struct {
		field string
		rate  Rate
	}{{"limits.http2.resets", h.Resets}, {"limits.http2.settings", h.Settings}, {"limits.http2.pings", h.Pings}} {
		if r.rate.Burst < -1 {
			bad(r.field+".burst", "%d must be positive, or -1 for no limit", r.rate.Burst)
		}
		if r.rate.PerSecond < 0 {
			bad(r.field+".perSecond", "must not be negative")
		}
	}
}

// Guard is the limits as package h2guard takes them.
func (h HTTP2Limits) Guard() h2guard.Limits {
	rate := func(r Rate) h2guard.Rate {
		if r.Burst < 0 {
			return h2guard.Rate{}
		}
		return h2guard.Rate{Burst: r.Burst, PerSecond: r.PerSecond}
	}
	return h2guard.Limits{
		Resets: rate(h.Resets), Settings: rate(h.Settings), Pings: rate(h.Pings),
		MaxContinuations: max(h.MaxContinuationFrames, 0), MaxStreams: h.MaxConcurrentStreams,
	}
}
