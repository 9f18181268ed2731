package system

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/demo/upstream"
	"github.com/misaki-io/misaki/internal/gateway"
)

// InferenceStats is what the inference server's GET /stats answers: the
// upstream's counts by sequence number, and what the gateway told it about
// each request: the calling vehicle (its identity header), the namespace
// the vehicle's app named, and the Host the gateway dialled.
type InferenceStats struct {
	upstream.Stats
	VehicleIDs       map[string]int64 `json:"vehicleIds"`
	OriginNamespaces map[string]int64 `json:"originNamespaces"`
	Hosts            map[string]int64 `json:"hosts"`
}

// inference stands for the cloud-placed inference component: kwok runs
// no containers, so the demo runs this process where the component's
// Service would be, and the gateway forwards the vehicle's calls here.
type inference struct {
	up *upstream.Server

	mu    sync.Mutex // guards stats
	stats InferenceStats
}

func newInference() *inference {
	return &inference{up: upstream.New(), stats: InferenceStats{
		VehicleIDs: map[string]int64{}, OriginNamespaces: map[string]int64{}, Hosts: map[string]int64{},
	}}
}

func (s *inference) handler() http.Handler {
	up := s.up.Handler()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		st := InferenceStats{Stats: s.up.Stats(), VehicleIDs: maps.Clone(s.stats.VehicleIDs),
			OriginNamespaces: maps.Clone(s.stats.OriginNamespaces), Hosts: maps.Clone(s.stats.Hosts)}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.stats.VehicleIDs[r.Header.Get("Misaki-Vehicle-Id")]++
		s.stats.OriginNamespaces[r.Header.Get(gateway.HeaderOriginNamespace)]++
		s.stats.Hosts[r.Host]++
		s.mu.Unlock()
		w.Header().Set("Inference-Result", "pedestrian 0.97")
		up.ServeHTTP(w, r)
	})
	return mux
}

// RunInference serves the inference stand-in on addr until ctx ends
// (misaki-demo inference).
func RunInference(ctx context.Context, log *slog.Logger, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("inference: listen: %w", err)
	}
	s := newInference()
	hs := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Info("inference listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("inference: %w", err)
	case <-ctx.Done():
		return hs.Close()
	}
}
