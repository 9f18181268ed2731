package config

import "time"

// Limits bound what one client may send.
type Limits struct {
	// MaxHeaderBytes caps the request line plus headers; larger gets 431. Default 64KiB.
	MaxHeaderBytes ByteSize `yaml:"maxHeaderBytes"`
	// MaxBodyBytes caps a request body unless the route sets its own; larger gets 413.
	// Default 64MiB.
	MaxBodyBytes ByteSize `yaml:"maxBodyBytes"`
	// ReadHeaderTimeout cuts clients that do not finish their headers in time. Default 10s.
	ReadHeaderTimeout Duration `yaml:"readHeaderTimeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default 120s.
	IdleTimeout Duration `yaml:"idleTimeout"`
	// MaxConnections caps concurrent client connections; more are answered 503
	// and closed. Default 4096.
	MaxConnections int `yaml:"maxConnections"`
	// Memory is a soft limit on the process's memory (Go's GOMEMLIMIT): the
	// garbage collector works harder as it is approached. Default 0: none
	// (or GOMEMLIMIT from the environment).
	Memory ByteSize `yaml:"memory"`
	// GCPercent is Go's GOGC: how far the heap may grow past what is live
	// before the collector runs. -1 turns the collector off until Memory
	// is reached (Memory must then be set). Default 0: GOGC from the
	// environment if set, else 100 for the edge and DefaultGatewayGCPercent
	// for the gateway, which trades memory for CPU.
	GCPercent int `yaml:"gcPercent"`
	// HTTP2 bounds what one HTTP/2 connection may make the server do
	// besides requests (http2.go).
	HTTP2 HTTP2Limits `yaml:"http2"`
}

// DefaultGatewayGCPercent is the gateway's GOGC unless set: a cloud
// process, where memory is cheaper than CPU. It took the batched drain
// from 6,845 to 8,728 requests a second (docs/benchmarks.md).
const DefaultGatewayGCPercent = 400

// HoldLimit bounds held requests in count and bytes (headers plus body).
type HoldLimit struct {
	// Requests is the maximum number held at once. Default 10000 globally,
	// unlimited (within the global limit) per route.
	Requests int `yaml:"requests,omitempty"`
	// Bytes is the maximum memory held at once. Default 64MiB globally,
	// unlimited (within the global limit) per route.
	Bytes ByteSize `yaml:"bytes,omitempty"`
}

// Defaults of the limits and holdLimit blocks.
const (
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 64 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxConnections    = 4096
	DefaultHoldRequests      = 10000
	DefaultHoldBytes         = 64 << 20
)

func (l *Limits) setDefaults() {
	setDefault(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&l.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&l.ReadHeaderTimeout, Duration(DefaultReadHeaderTimeout))
	setDefault(&l.IdleTimeout, Duration(DefaultIdleTimeout))
	setDefault(&l.MaxConnections, DefaultMaxConnections)
	l.HTTP2.setDefaults()
}

func (l Limits) validate(bad report) {
	if l.MaxConnections < 0 {
		bad("limits.maxConnections", "must not be negative")
	}
	if g := l.GCPercent; g < -1 || g > 10000 {
		bad("limits.gcPercent", "%d must be between 1 and 10000, or -1 (collect only at limits.memory), or 0 for the default", g)
	} else if g == -1 && l.Memory == 0 {
		bad("limits.gcPercent", "-1 turns the collector off until limits.memory is reached, and limits.memory is not set")
	}
	if l.Memory < 0 || (l.Memory > 0 && l.Memory < 16<<20) {
		bad("limits.memory", "%d bytes is too little to run in; set 16MiB or more, or 0 for no limit", l.Memory)
	}
	l.HTTP2.validate(bad)
	notNegative("limits", bad, durationField{"readHeaderTimeout", l.ReadHeaderTimeout}, durationField{"idleTimeout", l.IdleTimeout})
}

// setGlobalDefaults fills the global holdLimit; a route's has no
// defaults of its own (only the global limit applies).
func (h *HoldLimit) setGlobalDefaults() {
	setDefault(&h.Requests, DefaultHoldRequests)
	setDefault(&h.Bytes, DefaultHoldBytes)
}

// validate checks a hold limit whose YAML path is field.
func (h HoldLimit) validate(field string, bad report) {
	if h.Requests < 0 || h.Bytes < 0 {
		bad(field, "requests and bytes must not be negative")
	}
}
