package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Result is a finished spooled request as the app sees it at
// GET /v1/requests/{id}.
type Result struct {
	ID    string `json:"id"`
	Route string `json:"route"`
	// State is delivered (the upstream answered 1xx–3xx), failed (a final
	// 4xx, or a request that could not be read back), expired (its TTL
	// passed first), cancelled or evicted.
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	Finished time.Time `json:"finished"`
	Attempts int       `json:"attempts"`
	// Response is the upstream's answer, when there was one.
	Response *Response `json:"response,omitempty"`
	// Callback is where the result is POSTed; CallbackDone says it was
	// accepted (2xx).
	Callback     string `json:"callback,omitempty"`
	CallbackDone bool   `json:"callbackDone,omitempty"`
}

// Response is an upstream answer kept for the app.
type Response struct {
	Status int         `json:"status"`
	Header http.Header `json:"headers"`
	// Body is the body, cut at spool.maxResponseBytes (Truncated says so).
	Body      []byte `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Results keeps finished requests' outcomes, one small file each, for the
// retention period. A file is written to a temporary name and renamed, so a
// crash leaves either the old state or the new one. Put does not fsync:
// Flush, run by the spool before each of its fsyncs (spool.Options.
// BeforeSync), makes every result written so far durable with one
// syncfs(2), so that a request's done frame is never on disk before its
// result. One syncfs per group costs far less than one fsync per result; it
// also flushes other files on the same file system, which on the pod's own
// volume are the spool's.
type Results struct {
	dir       string
	retention time.Duration
	now       func() time.Time

	mu    sync.Mutex // guards dirty
	dirty bool       // results written since the last Flush
}

// NewResults keeps results in dir (created if missing).
func NewResults(dir string, retention time.Duration, now func() time.Time) (*Results, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	return &Results{dir: dir, retention: retention, now: now}, nil
}

// ErrNoResult means no result is kept under that id.
var ErrNoResult = errors.New("results: no such request")

func (rs *Results) path(id string) (string, error) {
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", ErrNoResult
	}
	return filepath.Join(rs.dir, id+".json"), nil
}

// Put stores r durably.
func (rs *Results) Put(r *Result) error {
	p, err := rs.path(r.ID)
	if err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("results: %w", err)
	}
	rs.mu.Lock()
	rs.dirty = true
	rs.mu.Unlock()
	return nil
}

// Flush makes every result whose Put returned before Flush was called
// durable. Puts may go on meanwhile; they are for the next Flush.
func (rs *Results) Flush() error {
	rs.mu.Lock()
	dirty := rs.dirty
	rs.dirty = false
	rs.mu.Unlock()
	if !dirty {
		return nil
	}
	err := func() error {
		d, err := os.Open(rs.dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return syncfs(d)
	}()
	if err != nil {
		rs.mu.Lock()
		rs.dirty = true
		rs.mu.Unlock()
		return fmt.Errorf("results: syncfs: %w", err)
	}
	return nil
}

// Get returns the result stored under id.
func (rs *Results) Get(id string) (*Result, error) {
	p, err := rs.path(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoResult
	}
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("results: %s: %w", id, err)
	}
	return &r, nil
}

// Sweep removes results older than the retention, and temporary files a
// crash left, and returns the results whose callback is still owed.
func (rs *Results) Sweep() (owed []*Result) {
	des, err := os.ReadDir(rs.dir)
	if err != nil {
		return nil
	}
	cutoff := rs.now().Add(-rs.retention)
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(rs.dir, name))
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			continue
		}
		r, err := rs.Get(id)
		if err != nil {
			continue
		}
		if r.Finished.Before(cutoff) {
			os.Remove(filepath.Join(rs.dir, name))
			continue
		}
		if r.Callback != "" && !r.CallbackDone {
			owed = append(owed, r)
		}
	}
	return owed
}
