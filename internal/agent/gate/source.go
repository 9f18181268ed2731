package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
)

// Source reads the vehicle's state.
type Source interface {
	Read(ctx context.Context) (State, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context) (State, error)

// Read calls f.
func (f SourceFunc) Read(ctx context.Context) (State, error) { return f(ctx) }

var (
	_ Source = (*File)(nil)
	_ Source = (*HTTP)(nil)
	_ Source = SourceFunc(nil)
)

// maxState bounds a state document: a vehicle's state is a few dozen
// scalars.
const maxState = 1 << 20

// ErrStale is wrapped by the error of a state older than its source's
// maximum age.
var ErrStale = errors.New("vehicle state is stale")

// File reads the state from a JSON file that the vehicle's integrator
// writes (best replaced whole: written to a temporary file and renamed
// over it, so that a read never sees half of it). The state's age is its
// "updated" member (RFC 3339) if it has one, else the file's modification
// time.
type File struct {
	Path string
	// MaxAge is how old the state may be; 0: any age.
	MaxAge time.Duration
	// Clock tells the time the age is counted to (nil: the wall clock).
	Clock clock.Clock
}

// Read reads and decodes the file.
func (f *File) Read(ctx context.Context) (State, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: %w", err)
	}
	b, err := readLimited(fh)
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: %s: %w", f.Path, err)
	}
	vals, updated, err := decode(b)
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: %s: %w", f.Path, err)
	}
	if updated.IsZero() {
		updated = fi.ModTime()
	}
	if err := fresh(updated, f.MaxAge, f.Clock); err != nil {
		return State{}, err
	}
	return State{Values: vals}, nil
}

// HTTP reads the state with a GET of a URL on the vehicle (a
// connectivity or vehicle-bus service), which answers 200 and a JSON
// object. The state's age is its "updated" member (RFC 3339); without
// one it is not checked.
type HTTP struct {
	URL string
	// MaxAge is how old the state may be; 0: any age.
	MaxAge time.Duration
	// Clock tells the time the age is counted to (nil: the wall clock).
	Clock clock.Clock
	// Client makes the request (nil: one with a 5 s timeout).
	Client *http.Client
}

var defaultClient = &http.Client{Timeout: 5 * time.Second}

// Read fetches and decodes the state.
func (h *HTTP) Read(ctx context.Context) (State, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	c := h.Client
	if c == nil {
		c = defaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxState))
		return State{}, fmt.Errorf("vehicle state: GET %s: %s", h.URL, resp.Status)
	}
	b, err := readLimited(resp.Body)
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: GET %s: %w", h.URL, err)
	}
	vals, updated, err := decode(b)
	if err != nil {
		return State{}, fmt.Errorf("vehicle state: GET %s: %w", h.URL, err)
	}
	if !updated.IsZero() {
		if err := fresh(updated, h.MaxAge, h.Clock); err != nil {
			return State{}, err
		}
	}
	return State{Values: vals}, nil
}

// Open returns the source spec names (the agent's --vehicle-state): an
// http:// or https:// URL, or else a file path. Empty: nil, no source. It
// does no I/O.
func Open(spec string, maxAge time.Duration, clk clock.Clock) (Source, error) {
	switch {
	case spec == "":
		return nil, nil
	case maxAge < 0:
		return nil, fmt.Errorf("vehicle state: max age %s is negative", maxAge)
	case strings.HasPrefix(spec, "http://") || strings.HasPrefix(spec, "https://"):
		req, err := http.NewRequest(http.MethodGet, spec, nil)
		if err != nil {
			return nil, fmt.Errorf("vehicle state: %w", err)
		}
		if req.URL.Host == "" {
			return nil, fmt.Errorf("vehicle state: %q has no host", spec)
		}
		return &HTTP{URL: spec, MaxAge: maxAge, Clock: clk}, nil
	case strings.Contains(spec, "://"):
		return nil, fmt.Errorf("vehicle state: %q: want an http:// or https:// URL, or a file path", spec)
	}
	return &File{Path: spec, MaxAge: maxAge, Clock: clk}, nil
}

func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxState+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxState {
		return nil, fmt.Errorf("over %d bytes", maxState)
	}
	return b, nil
}

// decode reads a JSON object, and its "updated" member if it has one.
func decode(b []byte) (map[string]any, time.Time, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, time.Time{}, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, time.Time{}, errors.New("not one JSON object: more follows it")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, time.Time{}, fmt.Errorf("not a JSON object but %s", kind(v))
	}
	var updated time.Time
	if u, ok := m["updated"]; ok && u != nil {
		s, _ := u.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("updated %s is not an RFC 3339 time (2026-12-04T21:00:00Z)", show(u))
		}
		updated = t
	}
	return m, updated, nil
}

// fresh is an ErrStale error if updated is more than maxAge before now.
func fresh(updated time.Time, maxAge time.Duration, clk clock.Clock) error {
	if maxAge <= 0 {
		return nil
	}
	if clk == nil {
		clk = clock.Real{}
	}
	age := clk.Now().Sub(updated)
	if age <= maxAge {
		return nil
	}
	return fmt.Errorf("%w (updated %s, %s ago; max age %s)", ErrStale, updated.UTC().Format(time.RFC3339), age.Round(time.Second), maxAge)
}
