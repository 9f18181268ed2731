// Package budget counts the bytes each route carries over metered links
// and tells whether the route is over its daily or monthly allowance.
//
// Counts are kept per route for the current UTC day and month, and are
// written to one small JSON file (written to a temporary file, synced and
// renamed over the old one, the directory synced) by Flush, which the
// proxy calls every few seconds and at shutdown. A crash loses at most
// the bytes counted since the last flush: the route may then spend that
// much again. Counting more would take a write per connection on the
// request path, which the edge does not pay for a cap that is about
// money, not safety.
package budget

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/durable"
)

// Limits are a route's allowance; zero means no limit for the period.
type Limits struct {
	Daily, Monthly int64
}

// Usage is one route's count, as the ledger file (budgets.json) stores it;
// the admin API shows it as proxyv1.Budget.
type Usage struct {
	Day          string `json:"day"`   // UTC date the daily count is for, 2006-01-02
	Month        string `json:"month"` // UTC month the monthly count is for, 2006-01
	DailyBytes   int64  `json:"dailyBytes"`
	MonthlyBytes int64  `json:"monthlyBytes"`
}

// Status is a route's usage against its limits.
type Status struct {
	Usage
	DailyLimit   int64 `json:"dailyLimit,omitempty"`
	MonthlyLimit int64 `json:"monthlyLimit,omitempty"`
	// Exceeded is true while the route may not use metered links.
	Exceeded bool `json:"exceeded"`
	// Resets is when the exhausted period turns, while Exceeded.
	Resets *time.Time `json:"resets,omitempty"`
}

// Ledger is every route's count.
type Ledger struct {
	path  string
	clock clock.Clock

	mu     sync.Mutex // guards fields below
	routes map[string]*Usage
	dirty  bool
}

// Open reads the counts kept at path; a missing file is an empty ledger.
// A damaged file is an error: the caller must not silently start from
// zero and overspend.
func Open(path string, clk clock.Clock) (*Ledger, error) {
	l := &Ledger{path: path, clock: clk, routes: map[string]*Usage{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return l, nil
	case err != nil:
		return nil, fmt.Errorf("budget: %w", err)
	}
	if err := json.Unmarshal(b, &l.routes); err != nil {
		return nil, fmt.Errorf("budget: %s is damaged (%v); move it away to start the counts from zero", path, err)
	}
	if l.routes == nil { // the file held null
		l.routes = map[string]*Usage{}
	}
	for k, u := range l.routes {
		if u == nil {
			delete(l.routes, k)
		}
	}
	return l, nil
}

func periods(t time.Time) (day, month string) {
	t = t.UTC()
	return t.Format("2006-01-02"), t.Format("2006-01")
}

// usageLocked returns the route's usage, rolled over to the current day
// and month.
func (l *Ledger) usageLocked(route string) *Usage {
	day, month := periods(l.clock.Now())
	u := l.routes[route]
	if u == nil {
		u = &Usage{Day: day, Month: month}
		l.routes[route] = u
	}
	if u.Day != day {
		u.Day, u.DailyBytes = day, 0
		l.dirty = true
	}
	if u.Month != month {
		u.Month, u.MonthlyBytes = month, 0
		l.dirty = true
	}
	return u
}

// Add counts n bytes the route carried over a metered link.
func (l *Ledger) Add(route string, n int64) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.usageLocked(route)
	u.DailyBytes += n
	u.MonthlyBytes += n
	l.dirty = true
}

// Status returns the route's usage against lim.
func (l *Ledger) Status(route string, lim Limits) Status {
	l.mu.Lock()
	u := *l.usageLocked(route)
	l.mu.Unlock()
	s := Status{Usage: u, DailyLimit: lim.Daily, MonthlyLimit: lim.Monthly}
	now := l.clock.Now().UTC()
	if lim.Monthly > 0 && u.MonthlyBytes >= lim.Monthly {
		s.Exceeded = true
		r := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		s.Resets = &r
	} else if lim.Daily > 0 && u.DailyBytes >= lim.Daily {
		s.Exceeded = true
		r := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
		s.Resets = &r
	}
	return s
}

// Flush writes the counts if they changed since the last flush.
func (l *Ledger) Flush() error {
	l.mu.Lock()
	if !l.dirty {
		l.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(l.routes)
	l.dirty = false
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	if err := writeFile(l.path, b); err != nil {
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		return err
	}
	return nil
}

func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = durable.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("budget: write %s: %w", path, err)
	}
	return nil
}
