// Package ledger is what the agent remembers about one half between runs
// (issue 18, items 5 and 6): the verified document it is applying, the
// manifests it last applied, the last revision that was healthy, and the
// inventory of objects it may have put on the cluster.
//
// The record is one file per half, written by framelog.WriteFile (a
// checksummed frame in a temporary file, fsynced, renamed over the old
// one, directory fsynced), so a crash leaves the previous record or the
// new one. A damaged file is an error that stops the agent: starting from
// nothing would forget the inventory, and with it the objects a later
// revision must prune.
//
// The inventory is a superset while an apply is in flight: before a set
// is applied, its refs are added; only after the apply and the prune
// succeed does the inventory become exactly that set. An agent killed in
// between finds every object it may have created listed, so none is
// orphaned.
package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/apply"
	"github.com/misaki-io/misaki/internal/framelog"
)

const (
	frameRecord = 1
	// maxRecord bounds the file: a record holds up to three copies of a
	// half's manifests (the document, the applied set, the last healthy
	// set); 64 MiB is far above a vehicle's few hundred objects.
	maxRecord = 64 << 20
)

// Record is one half's persisted state.
type Record struct {
	// Pending is a document that passed verification and is being
	// accepted: written before the trust state records it, so an agent
	// killed between the two finishes the acceptance on restart (or drops
	// the document if it no longer verifies).
	Pending *hubv1.Desired `json:"pending,omitempty"`
	// Target is the newest accepted document: what the cluster is being
	// brought to. While it waits for its vehicle-state gates (Phase
	// Waiting) nothing of it is applied yet: Applied, AppliedRevision and
	// AppliedDeployments are still an older revision's.
	Target *hubv1.Desired `json:"target,omitempty"`
	// Phase is Target's phase (hubv1.Phase*).
	Phase string `json:"phase,omitempty"`
	// Applied are the manifests last applied: Target's objects, with
	// failed deployments rolled back. Drift passes re-apply them.
	Applied         []json.RawMessage `json:"applied,omitempty"`
	AppliedRevision int64             `json:"appliedRevision,omitempty"`
	// AppliedDeployments are the deployment list of the revision
	// AppliedRevision names, as reported. With RolledBack and
	// LastHealthy it is what a new revision is compared with to find the
	// vehicle-state gates it must pass. Records written before it have
	// none (the agent fills it from Target).
	AppliedDeployments []hubv1.DeploymentRevision `json:"appliedDeployments,omitempty"`
	// RolledBack names the deployments of AppliedDeployments whose
	// objects in Applied are LastHealthy's, after a failure's rollback.
	RolledBack []string `json:"rolledBack,omitempty"`
	// LastHealthy is the last revision whose every object was ready, and
	// its manifests: what a failed deployment rolls back to.
	LastHealthy *Snapshot `json:"lastHealthy,omitempty"`
	// Failure is why Target failed.
	Failure *hubv1.Failure `json:"failure,omitempty"`
	// FailedContent is ContentHash of the objects of the revision that
	// failed: a refresh of the same objects under a new revision number
	// is not applied again.
	FailedContent string `json:"failedContent,omitempty"`
	// Inventory is every object this half may have on the cluster.
	Inventory []apply.Ref `json:"inventory,omitempty"`
}

// Snapshot is a revision's manifests.
type Snapshot struct {
	Revision int64             `json:"revision"`
	Objects  []json.RawMessage `json:"objects"`
	// Deployments are the revision's deployment generations (none in
	// records written before they were kept).
	Deployments []hubv1.DeploymentRevision `json:"deployments,omitempty"`
}

// Ledger is one half's record file.
type Ledger struct {
	path string
	fp   framelog.Failpoint
}

// Open reads the record of half in dir; a missing file is an empty
// record.
func Open(dir, half string) (*Ledger, Record, error) {
	l := &Ledger{path: filepath.Join(dir, "ledger-"+half)}
	payload, err := framelog.ReadRecord(l.path, frameRecord, maxRecord)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return l, Record{}, nil
	case errors.Is(err, framelog.ErrDamaged):
		return nil, Record{}, fmt.Errorf("ledger: %w; restore it, or remove it and the objects it listed will no longer be pruned", err)
	case err != nil:
		return nil, Record{}, fmt.Errorf("ledger: %w", err)
	}
	var r Record
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, Record{}, fmt.Errorf("ledger: %s: %w", l.path, err)
	}
	return l, r, nil
}

// Path is the record file.
func (l *Ledger) Path() string { return l.path }

// SetFailpoint makes the next writes fail as fp says (tests).
func (l *Ledger) SetFailpoint(fp framelog.Failpoint) { l.fp = fp }

// Save replaces the record durably.
func (l *Ledger) Save(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("ledger: encode: %w", err)
	}
	if len(b) > maxRecord {
		return fmt.Errorf("ledger: record of %d bytes is over %d", len(b), maxRecord)
	}
	if err := framelog.WriteRecord(l.path, l.fp, frameRecord, b); err != nil {
		return fmt.Errorf("ledger: write %s: %w", l.path, err)
	}
	return nil
}

// Union is the inventory with refs added (by identity, ignoring the
// version; the newer version wins), sorted by ID.
func Union(inv []apply.Ref, refs []apply.Ref) []apply.Ref {
	m := make(map[string]apply.Ref, len(inv)+len(refs))
	for _, r := range inv {
		m[r.ID()] = r
	}
	for _, r := range refs {
		m[r.ID()] = r
	}
	return sorted(m)
}

// Minus is the refs of inv that keep does not list.
func Minus(inv []apply.Ref, keep []apply.Ref) []apply.Ref {
	k := make(map[string]bool, len(keep))
	for _, r := range keep {
		k[r.ID()] = true
	}
	var out []apply.Ref
	for _, r := range inv {
		if !k[r.ID()] {
			out = append(out, r)
		}
	}
	return out
}

// Set is refs as an inventory: de-duplicated and sorted.
func Set(refs []apply.Ref) []apply.Ref { return Union(nil, refs) }

func sorted(m map[string]apply.Ref) []apply.Ref {
	out := make([]apply.Ref, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b apply.Ref) int {
		switch {
		case a.ID() < b.ID():
			return -1
		case a.ID() > b.ID():
			return 1
		}
		return 0
	})
	return out
}

// ContentHash identifies a list of manifests by their bytes.
func ContentHash(objs []json.RawMessage) string {
	h := sha256.New()
	for _, o := range objs {
		fmt.Fprintf(h, "%d:", len(o))
		h.Write(o)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
