// Package v1 is the wire format of the edge proxy's admin API: the JSON
// bodies of the endpoints under /v1 on the proxy's admin address, as the
// proxy serves them and as the vehicle's connectivity manager, apps and
// tools read them.
//
//	GET    /v1/links            Links
//	PUT    /v1/links/{name}     LinkOverride in, Link out
//	GET    /v1/routes           Routes
//	GET    /v1/spool            Spool
//	GET    /v1/requests/{id}    Request
//	DELETE /v1/requests/{id}    no body (204)
//
// A request the proxy spooled is answered 202 with an Accepted body, and
// the callback an app asked for (Misaki-Callback) is POSTed a Request. Every
// error answer of the admin API is an Error.
//
// The package imports nothing of the proxy, so that clients can import it
// without the proxy's code.
package v1

import (
	"net/http"
	"time"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
)

// Links is GET /v1/links: the links the proxy knows and their state.
type Links struct {
	// Agent is the node link agent the proxy takes links from; only with
	// linkAgent.address.
	Agent *Agent `json:"agent,omitempty"`
	Links []Link `json:"links"`
}

// Agent is where the node link agent is and whether its stream is
// connected now.
type Agent struct {
	Address   string `json:"address"`
	Connected bool   `json:"connected"`
}

// Link is one link, as GET /v1/links lists it and PUT /v1/links/{name}
// answers it.
type Link struct {
	Name string `json:"name"`
	// Class is ethernet, wifi, cellular, satellite or a class of the
	// integrator's own.
	Class   string `json:"class"`
	Metered bool   `json:"metered"`
	Roaming bool   `json:"roaming"`
	Up      bool   `json:"up"`
	// Source says what decided Up: kernel, admin (an override) or config
	// (a link with no interface glob); for the node link agent's links,
	// agent or agent-override.
	Source     string      `json:"source"`
	Interfaces []Interface `json:"interfaces,omitempty"`
	// Steer is how a connection leaves by the link, for the node link
	// agent's links.
	Steer *linkv1.Steer `json:"steer,omitempty"`
	// Reason says why the node link agent holds the link down.
	Reason string `json:"reason,omitempty"`
	// Agent marks a link of the node, reported by the node link agent.
	Agent bool      `json:"agent,omitempty"`
	Since time.Time `json:"since"`
}

// Interface is a network interface of a link.
type Interface struct {
	Name    string   `json:"name"`
	Up      bool     `json:"up"`
	Running bool     `json:"running"`
	Addrs   []string `json:"addrs,omitempty"`
}

// LinkOverride is the body of PUT /v1/links/{name}, which the vehicle's
// connectivity manager sends.
type LinkOverride struct {
	// State is up, down or auto (back to what the proxy sees itself).
	State string `json:"state"`
	// Metered and Roaming, when present, replace the configured flags.
	Metered *bool `json:"metered,omitempty"`
	Roaming *bool `json:"roaming,omitempty"`
}

// Routes is GET /v1/routes.
type Routes struct {
	Routes []Route `json:"routes"`
}

// Route is one route and whether it is usable now.
type Route struct {
	Name     string   `json:"name"`
	Hosts    []string `json:"hosts"`
	Upstream string   `json:"upstream"`
	// Usable is true while the route has a link it may use and its
	// upstream is reachable: requests go out at once.
	Usable bool `json:"usable"`
	// Reason says why the route is not usable.
	Reason string `json:"reason,omitempty"`
	// Links are the link classes the route may use (offline.links).
	Links []string `json:"links,omitempty"`
	// Interface is the interface the route's connections are bound to when
	// a link that is up must not carry it; empty when the kernel chooses.
	Interface string `json:"interface,omitempty"`
	// Link is the link the route's connections are steered onto; empty
	// when the kernel chooses.
	Link string `json:"link,omitempty"`
	// Budget is the route's use of its metered allowance, when it has one.
	Budget *Budget `json:"budget,omitempty"`
	// Hold is the route's hold window (offline.hold), as a Go duration.
	Hold           string `json:"hold"`
	UpstreamHealth Health `json:"upstreamHealth"`
	// HeldRequests and HeldBytes are what the route holds in memory now,
	// waiting for a usable link (headers and bodies read).
	HeldRequests int   `json:"heldRequests"`
	HeldBytes    int64 `json:"heldBytes"`
}

// Health is whether a route's upstream is reachable.
type Health struct {
	Reachable bool      `json:"reachable"`
	Since     time.Time `json:"since"`
	// LastError is the most recent probe or dial failure while unreachable.
	LastError string `json:"lastError,omitempty"`
	// Source says what set the state: start, probe or request.
	Source string `json:"source"`
}

// Budget is a route's use of its allowance on metered links
// (offline.budget), in bytes, by UTC day and month.
type Budget struct {
	Day          string `json:"day"`   // 2006-01-02
	Month        string `json:"month"` // 2006-01
	DailyBytes   int64  `json:"dailyBytes"`
	MonthlyBytes int64  `json:"monthlyBytes"`
	DailyLimit   int64  `json:"dailyLimit,omitempty"`
	MonthlyLimit int64  `json:"monthlyLimit,omitempty"`
	// Exceeded is true while the route may not use metered links.
	Exceeded bool `json:"exceeded"`
	// Resets is when the exhausted period turns, while Exceeded.
	Resets *time.Time `json:"resets,omitempty"`
}

// Spool is GET /v1/spool: the backlog per route and the spool's counters.
type Spool struct {
	// Enabled is false when the proxy runs without a spool (no route
	// spools); Routes is then empty and Stats zero.
	Enabled bool         `json:"enabled"`
	Dir     string       `json:"dir,omitempty"`
	Routes  []SpoolRoute `json:"routes"`
	Stats   SpoolStats   `json:"stats"`
}

// SpoolRoute is one route's spooled requests.
type SpoolRoute struct {
	Route    string `json:"route"`
	Priority int    `json:"priority"`
	// Depth is how many requests wait or are being delivered, Bytes what
	// they take on disk.
	Depth      int64   `json:"depth"`
	Bytes      int64   `json:"bytes"`
	Delivering int     `json:"delivering"`
	OldestAge  float64 `json:"oldestAgeSeconds"`
}

// SpoolStats are the spool's counters since the proxy started. Unlike the
// rest of the API, its keys are capitalised.
type SpoolStats struct {
	Enqueued  int64 `json:"Enqueued"`
	Delivered int64 `json:"Delivered"`
	Failed    int64 `json:"Failed"`
	Expired   int64 `json:"Expired"`
	Cancelled int64 `json:"Cancelled"`
	Evicted   int64 `json:"Evicted"`
	// Rejected counts requests refused for a quota.
	Rejected int64 `json:"Rejected"`
	// DamagedSpans is how many damaged byte ranges recovery skipped at
	// start (copied to quarantine, or a frame whose payload does not
	// decode), plus the requests found unreadable later, on delivery.
	// DamagedBytes is the size of the ranges recovery skipped.
	DamagedSpans int64 `json:"DamagedSpans"`
	DamagedBytes int64 `json:"DamagedBytes"`
	// TornBytes is how many bytes of an unfinished last write were cut
	// from the end of the newest segment at start (also copied to
	// quarantine).
	TornBytes int64 `json:"TornBytes"`
	// MissingBodies counts requests whose body file could not be opened.
	// A damaged body file is not counted: its checksum fails the read at
	// the body's end, and the delivery is tried again like any other that
	// got no answer, until the request's TTL.
	MissingBodies int64 `json:"MissingBodies"`
	Fsyncs        int64 `json:"Fsyncs"`
	Segments      int   `json:"Segments"`
}

// States of a spooled request (Request.State, Accepted.State).
const (
	StateQueued     = "queued"     // waiting for a usable link
	StateDelivering = "delivering" // being sent now
	StateDelivered  = "delivered"  // the upstream answered 1xx–3xx
	StateFailed     = "failed"     // a final 4xx, or not readable back from the spool
	StateExpired    = "expired"    // its TTL passed first
	StateCancelled  = "cancelled"  // DELETE /v1/requests/{id}
	StateEvicted    = "evicted"    // dropped for newer ones (offline.eviction: drop-oldest)
)

// Accepted is the body of the 202 that answers a request the proxy
// spooled. Its Location header is the request's /v1/requests/{id}.
type Accepted struct {
	ID    string `json:"id"`
	State string `json:"state"` // queued
	Route string `json:"route"`
}

// Request is GET /v1/requests/{id}: a spooled request, while it waits
// (state queued or delivering: ID, Route, State and Attempts) and after
// it finished (the rest), for spool.retention. The callback an app asked
// for is POSTed the finished Request.
type Request struct {
	ID    string `json:"id"`
	Route string `json:"route"`
	State string `json:"state"`
	// Reason says why a request failed, expired or was evicted or
	// cancelled.
	Reason   string    `json:"reason,omitempty"`
	Finished time.Time `json:"finished,omitzero"`
	// Attempts is how many deliveries were tried.
	Attempts int `json:"attempts"`
	// Response is the upstream's answer, when there was one.
	Response *Response `json:"response,omitempty"`
	// Callback is where the result is POSTed; CallbackDone says the app
	// accepted it (2xx).
	Callback     string `json:"callback,omitempty"`
	CallbackDone bool   `json:"callbackDone,omitempty"`
}

// Response is an upstream's answer, kept for the app.
type Response struct {
	Status int         `json:"status"`
	Header http.Header `json:"headers"`
	// Body is cut at spool.maxResponseBytes (Truncated says so); in JSON
	// it is base64.
	Body      []byte `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Error is the body of every error answer of the admin API.
type Error struct {
	Message string `json:"error"`
}
