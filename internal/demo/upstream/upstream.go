// Package upstream is the demo's cloud service: a tiny HTTP server that
// answers every request with 200 and counts requests by their X-Request-Seq
// header, so the demo can tell whether each request arrived exactly once.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// SeqHeader carries the vehicle app's request number.
const SeqHeader = "X-Request-Seq"

// Stats is what GET /stats returns.
type Stats struct {
	// Received counts requests that carried a sequence number.
	Received int64 `json:"received"`
	// Unique counts distinct sequence numbers.
	Unique int64 `json:"unique"`
	// Duplicates is Received - Unique: requests that arrived more than once.
	Duplicates int64 `json:"duplicates"`
}

// Reply is the JSON body answered to each request.
type Reply struct {
	Seq string `json:"seq"`
	// Count is how many times this seq has arrived, this time included.
	Count int `json:"count"`
}

// Server counts requests by sequence number. The zero value is not usable;
// call New.
type Server struct {
	mu    sync.Mutex // guards the fields below
	seen  map[string]int
	stats Stats
}

// New returns a server with no requests counted.
func New() *Server { return &Server{seen: make(map[string]int)} }

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Handler serves GET /stats and answers every other request.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("/", s.serveRequest)
	return mux
}

func (s *Server) serveRequest(w http.ResponseWriter, r *http.Request) {
	// Read the whole body, as a real service would before acting on it.
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	seq := r.Header.Get(SeqHeader)
	if seq == "" {
		http.Error(w, "missing "+SeqHeader+" header", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.seen[seq]++
	n := s.seen[seq]
	s.stats.Received++
	if n == 1 {
		s.stats.Unique++
	} else {
		s.stats.Duplicates++
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, Reply{Seq: seq, Count: n})
}

// Run serves on addr until ctx ends.
func Run(ctx context.Context, log *slog.Logger, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("upstream: listen: %w", err)
	}
	return Serve(ctx, log, ln, New())
}

// Serve serves s on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, log *slog.Logger, ln net.Listener, s *Server) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Info("upstream listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("upstream: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("upstream: shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("upstream: serve: %w", err)
	}
	st := s.Stats()
	log.Info("upstream stopped", "received", st.Received, "unique", st.Unique, "duplicates", st.Duplicates)
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
