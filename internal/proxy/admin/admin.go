// Package admin serves the proxy's admin API: health and readiness probes,
// Prometheus metrics, and the JSON endpoints under /v1 that show links,
// routes and the spool, let the vehicle's connectivity manager set a link's
// state, and let apps read (or cancel) their spooled requests. The bodies
// are the types of api/proxy/v1.
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

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
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

// Spool is what the admin API needs of the spool: its state for
// GET /v1/spool, and spooled requests by id for /v1/requests/{id}.
type Spool interface {
	Status() proxyv1.Spool
	// Request returns a request queued or finished within the retention;
	// ErrNotFound (wrapped) for any other id.
	Request(id string) (proxyv1.Request, error)
	// Cancel removes a queued request; ErrNotFound or ErrConflict
	// (wrapped) when there is none or it is being delivered.
	Cancel(id string) error
}

// Options wires the admin API to the rest of the proxy.
type Options struct {
	Links Links
	// Routes lists the routes for GET /v1/routes.
	Routes   func() []proxyv1.Route
	Ready    func() error // nil error means ready
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
	// Spool serves /v1/spool and /v1/requests/{id}; nil when the proxy
	// runs without a spool.
	Spool Spool
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
		writeJSON(w, http.StatusOK, links(o.Links))
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
		writeJSON(w, http.StatusOK, proxyv1.Routes{Routes: o.Routes()})
	})
	spool := o.Spool
	if spool == nil {
		spool = noSpool{}
	}
	mux.HandleFunc("GET /v1/spool", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, spool.Status())
	})
	mux.HandleFunc("GET /v1/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		req, err := spool.Request(r.PathValue("id"))
		if err != nil {
			writeSpoolError(w, r.PathValue("id"), err)
			return
		}
		writeJSON(w, http.StatusOK, req)
	})
	mux.HandleFunc("DELETE /v1/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := spool.Cancel(r.PathValue("id")); err != nil {
			writeSpoolError(w, r.PathValue("id"), err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// links is GET /v1/links: the links, and the node link agent when Links
// knows of one.
func links(l Links) proxyv1.Links {
	out := proxyv1.Links{Links: l.Snapshot()}
	if a, ok := l.(AgentStatuser); ok {
		if addr, connected := a.AgentStatus(); addr != "" {
			out.Agent = &proxyv1.Agent{Address: addr, Connected: connected}
		}
	}
	return out
}

// noSpool is the spool of a proxy that runs without one: disabled, and no
// request to be found.
type noSpool struct{}

func (noSpool) Status() proxyv1.Spool {
	return proxyv1.Spool{Routes: []proxyv1.SpoolRoute{}}
}

func (noSpool) Request(string) (proxyv1.Request, error) { return proxyv1.Request{}, ErrNotFound }

func (noSpool) Cancel(string) error { return ErrNotFound }

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
	writeJSON(w, code, proxyv1.Error{Message: msg})
}
