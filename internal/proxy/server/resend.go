package server

import (
	"maps"
	"net/http"
	"strconv"
	"time"

	"github.com/misaki-io/misaki/internal/forward"
)

// inFlightCatcher stands between a re-sent request and the app. A request
// is re-sent with the Idempotency-Key of the attempt that got no response,
// and that attempt may still be running at the cloud gateway, which then
// answers 409 with Misaki-Idempotency: in-flight and Retry-After. That 409
// is about the proxy's own retry, not the app's request: it is kept from the
// app, and the handler waits and asks again (the gateway then answers from
// its store).
type inFlightCatcher struct {
	http.ResponseWriter
	before     http.Header // the app's response headers as they were before the attempt
	caught     bool
	retryAfter time.Duration
}

func newInFlightCatcher(w http.ResponseWriter) *inFlightCatcher {
	return &inFlightCatcher{ResponseWriter: w, before: maps.Clone(w.Header())}
}

func (c *inFlightCatcher) WriteHeader(code int) {
	h := c.ResponseWriter.Header()
	if code != http.StatusConflict || h.Get(forward.HeaderIdempotency) != forward.IdempotencyInFlight {
		c.ResponseWriter.WriteHeader(code)
		return
	}
	c.caught = true
	c.retryAfter = time.Second
	if n, err := strconv.Atoi(h.Get("Retry-After")); err == nil && n > 0 {
		c.retryAfter = time.Duration(n) * time.Second
	}
	clear(h)
	maps.Copy(h, c.before)
}

func (c *inFlightCatcher) Write(p []byte) (int, error) {
	if c.caught {
		return len(p), nil
	}
	return c.ResponseWriter.Write(p)
}

func (c *inFlightCatcher) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok && !c.caught {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (c *inFlightCatcher) Unwrap() http.ResponseWriter { return c.ResponseWriter }
