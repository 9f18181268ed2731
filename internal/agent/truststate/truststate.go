// Package truststate is the agent's gate (issue 18, item 3): a desired
// document is applied only after it passed every check internal/trust
// makes (signature chain to the pinned root, vehicle ID, half, expiry, a
// revision above the last one accepted, the digest of the exact bytes) and
// the trust state that records it is on disk, fsynced. The trust state is
// the newest root the agent verified, and per half the last revision
// accepted and its issue time. It lives in one file, written by
// framelog.WriteFile (a checksummed frame, replaced atomically), so a crash
// leaves the old state or the new one whole, never a mix.
//
// Accepting before applying is deliberate: an agent killed during an apply
// never goes back to an older revision, and re-applies the accepted one
// (server-side apply makes that idempotent).
package truststate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/trust"
)

// FileName is the state file in the agent's state directory.
const FileName = "trust-state"

const (
	frameState = 1
	maxState   = 1 << 20
)

// Half is what the agent last accepted for one half.
type Half struct {
	Revision int64     `json:"revision"`
	IssuedAt time.Time `json:"issuedAt"`
	Digest   string    `json:"digest"`
}

// state is the file's content.
type state struct {
	Root   json.RawMessage `json:"root"` // the newest verified root.json
	Halves map[string]Half `json:"halves"`
}

// Gate verifies documents against the persisted trust state. It is safe
// for concurrent use.
type Gate struct {
	path    string
	vehicle string
	fp      framelog.Failpoint

	mu sync.Mutex // guards the fields below
	v  *trust.Verifier
	st state
}

// Open loads the trust state in dir, or starts one from pinned (root
// version 1, or whichever root the agent was installed with) and writes it.
// vehicle is the agent's own ID; documents for another are refused.
func Open(dir, vehicle string, pinned []byte, now time.Time) (*Gate, error) {
	g := &Gate{path: filepath.Join(dir, FileName), vehicle: vehicle}
	payload, err := framelog.ReadRecord(g.path, frameState, maxState)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if len(pinned) == 0 {
			return nil, fmt.Errorf("truststate: no state in %s and no pinned root", dir)
		}
		g.st = state{Root: pinned, Halves: map[string]Half{}}
		if g.v, err = trust.NewVerifier(pinned, now); err != nil {
			return nil, fmt.Errorf("truststate: pinned root: %w", err)
		}
		if err := g.save(g.st); err != nil {
			return nil, err
		}
		return g, nil
	case errors.Is(err, framelog.ErrDamaged):
		// Never fall back to the pinned root: that would forget the
		// revisions accepted and let an old document in again.
		return nil, fmt.Errorf("truststate: %w; restore it or re-install the agent", err)
	case err != nil:
		return nil, fmt.Errorf("truststate: %w", err)
	}
	if err := json.Unmarshal(payload, &g.st); err != nil {
		return nil, fmt.Errorf("truststate: %s: %w", g.path, err)
	}
	if g.st.Halves == nil {
		g.st.Halves = map[string]Half{}
	}
	if g.v, err = trust.NewVerifier(g.st.Root, now); err != nil {
		return nil, fmt.Errorf("truststate: stored root: %w", err)
	}
	return g, nil
}

// RootVersion is the newest verified root's version.
func (g *Gate) RootVersion() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, _ := g.v.Root()
	return v
}

// Accepted is what was last accepted for half (zero if nothing).
func (g *Gate) Accepted(half string) Half {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st.Halves[half]
}

// UpdateRoot verifies next as the root after the current one (TUF's
// rules) and persists it before returning.
func (g *Gate) UpdateRoot(next []byte, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.v.UpdateRoot(next, now); err != nil {
		// The verifier is unchanged on error.
		return err
	}
	_, root := g.v.Root()
	st := g.st
	st.Root = root
	if err := g.save(st); err != nil {
		return err
	}
	g.st = st
	return nil
}

// Check verifies d as the next document of half, as Accept does, without
// recording anything: the agent checks a document before it writes it to
// its own state, and accepts it after.
func (g *Gate) Check(d hubv1.Desired, half string, now time.Time) (*hubv1.DesiredState, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.v.Verify(d, trust.Expect{Vehicle: g.vehicle, Half: half, After: g.st.Halves[half].Revision}, now)
}

// Accept verifies d as the next document of half and, only if it passes,
// records it durably and returns its payload. A refusal is a
// *trust.RefusalError (its Reason is what the agent reports) and changes
// nothing.
func (g *Gate) Accept(d hubv1.Desired, half string, now time.Time) (*hubv1.DesiredState, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	last := g.st.Halves[half]
	s, err := g.v.Verify(d, trust.Expect{Vehicle: g.vehicle, Half: half, After: last.Revision}, now)
	if err != nil {
		return nil, err
	}
	st := state{Root: g.st.Root, Halves: make(map[string]Half, len(g.st.Halves)+1)}
	for k, v := range g.st.Halves {
		st.Halves[k] = v
	}
	st.Halves[half] = Half{Revision: s.Revision, IssuedAt: s.IssuedAt, Digest: d.Digest}
	if err := g.save(st); err != nil {
		return nil, err
	}
	g.st = st
	return s, nil
}

// save writes st (under mu).
func (g *Gate) save(st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("truststate: encode: %w", err)
	}
	if len(b) > maxState {
		return fmt.Errorf("truststate: state of %d bytes is over %d", len(b), maxState)
	}
	if err := framelog.WriteRecord(g.path, g.fp, frameState, b); err != nil {
		return fmt.Errorf("truststate: write %s: %w", g.path, err)
	}
	return nil
}
