// Package admin serves the proxy's admin API: health and readiness probes,
// Prometheus metrics, and the JSON endpoints under /v1 that show links,
// routes and the spool, let the vehicle's connectivity manager set a link's
// state, and let apps read (or cancel) their spooled requests.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/misaki-io/misaki/internal/proxy/budget"
	"github.com/misaki-io/misaki/internal/proxy/health"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

// Links is what the admin API needs of the link monitor.
type Links interface {
	Snapshot() []link.State
	Set(name string, o link.Override) (link.State, error)
}

// AgentStatuser is the optional ability of Links to say where the node
// link agent is and whether it is connected; GET /v1/links shows it.
type AgentStatuser interface {
	AgentStatus() (addr string, connected bool)
}

// RouteStatus is one route as shown at GET /v1/routes.
type RouteStatus struct {
	Name     string   `json:"name"`
	Hosts    []string `json:"hosts"`
	Upstream string   `json:"upstream"`
	Usable   bool     `json:"usable"`
	Reason   string   `json:"reason,omitempty"`
	Links    []string `json:"links,omitempty"`
	// Interface is the interface the route's connections are bound to when
	// a link that is up must not carry it; empty when the kernel chooses.
	Interface string `json:"interface,omitempty"`
	// Link is the link the route's connections are steered onto; empty
	// when the kernel chooses.
	Link string `json:"link,omitempty"`
	// Budget is the route's use of its metered allowance, when it has one.
	Budget *budget.Status `json:"budget,omitempty"`
	Hold   string         `json:"hold"`
	Health health.Status  `json:"upstreamHealth"`
	Held   int            `json:"heldRequests"`
	HeldB  int64          `json:"heldBytes"`
}

// Options wires the admin API to the rest of the proxy.
type Options struct {
	Links    Links
	Routes   func() []RouteStatus
	Ready    func() error // nil error means ready
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
	// Spool describes the spool for GET /v1/spool.
	Spool func() any
	// RequestStatus and CancelRequest serve /v1/requests/{id}; they return
	// ErrNotFound or ErrConflict (wrapped) for those answers.
	RequestStatus func(id string) (any, error)
	CancelRequest func(id string) error
}

// Errors the spool endpoints map to 404 and 409.
var (
	ErrNotFound = errors.New("no such request")
	ErrConflict = errors.New("conflict")
)

// Health serves only GET /healthz and /readyz: what the proxy's health
// address exposes beyond the pod, where the admin API must not be reachable.
func Health(ready func() error) http.Handler {
	mux := http.NewServeMux()
	probes(mux, ready)
	return mux
}

func probes(mux *http.ServeMux, ready func() error) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}

// Handler returns the admin API.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	probes(mux, o.Ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/links", func(w http.ResponseWriter, _ *http.Request) {
		body := map[string]any{"links": o.Links.Snapshot()}
		if a, ok := o.Links.(AgentStatuser); ok {
			if addr, connected := a.AgentStatus(); addr != "" {
				body["agent"] = map[string]any{"address": addr, "connected": connected}
			}
		}
		writeJSON(w, http.StatusOK, body)
	})
	mux.HandleFunc("PUT /v1/links/{name}", func(w http.ResponseWriter, r *http.Request) {
		var ov link.Override
		if code, err := decodeJSON(w, r, &ov); err != nil {
			writeError(w, code, fmt.Sprintf(`body must be one JSON object like {"state":"down"} (state up, down or auto; optional metered, roaming): %v`, err))
			return
		}
		st, err := o.Links.Set(r.PathValue("name"), ov)
		switch {
		case errors.Is(err, link.ErrUnknownLink):
			writeError(w, http.StatusNotFound, err.Error())
		case err != nil:
			writeError(w, http.StatusBadRequest, err.Error())
		default:
			o.Log.Info("link set by admin API", "link", st.Name, "state", ov.State, "up", st.Up)
			writeJSON(w, http.StatusOK, st)
		}
	})
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"routes": o.Routes()})
	})
	mux.HandleFunc("GET /v1/spool", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, o.Spool())
	})
	mux.HandleFunc("GET /v1/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, err := o.RequestStatus(r.PathValue("id"))
		if err != nil {
			writeSpoolError(w, r.PathValue("id"), err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("DELETE /v1/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := o.CancelRequest(r.PathValue("id")); err != nil {
			writeSpoolError(w, r.PathValue("id"), err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// MaxBodyBytes is the largest request body the admin API reads.
const MaxBodyBytes = 4096

// decodeJSON reads exactly one JSON object into v: no unknown fields, and
// nothing after it but white space. It returns the status for the error:
// 413 for a body over MaxBodyBytes, 400 otherwise.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) (int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
			if terr != nil {
				err = fmt.Errorf("after the JSON object: %w", terr)
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, errors.New("empty body")
	}
	return http.StatusBadRequest, err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeSpoolError(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("request %q: not queued and no result kept (unknown, or finished longer ago than spool.retention)", id))
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, fmt.Sprintf("request %q: %v", id, err))
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
