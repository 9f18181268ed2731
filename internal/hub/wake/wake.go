// Package wake wakes the hub's long-polls. A vehicle's GET .../desired
// registers a waiter for its (vehicle, half) before it reads the store;
// Run follows the store's change sequence (store.Store.Changes, fed by
// every hub replica sharing the store) and, for each change DesiredSince
// lists, closes the waiters of that (vehicle, half), and the channel
// Changed handed out for that half (the change feed, GET /v1/changes,
// waits on it). One query serves any number of changed vehicles and
// waiting requests; a replica that falls behind by more than a page reads
// the next page at once.
package wake

import (
	"context"
	"log/slog"
	"sync"

	"github.com/misaki-io/misaki/internal/hub/store"
)

// page is how many changes one DesiredSince call reads.
const page = 1000

type key struct{ vehicle, half string }

// Waker fans store changes out to waiting long-polls.
type Waker struct {
	st  store.Store
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	waiters map[key]map[*waiter]struct{}
	n       int
	// halves are the channels Changed handed out, by half, each closed
	// (and dropped) at the next change of that half.
	halves map[string]chan struct{}
}

type waiter struct{ ch chan struct{} }

// New returns a Waker over st. It does no I/O.
func New(st store.Store, log *slog.Logger) *Waker {
	return &Waker{st: st, log: log.With("component", "wake"), waiters: map[key]map[*waiter]struct{}{}, halves: map[string]chan struct{}{}}
}

// Wait registers interest in the next change of (vehicle, half). The
// returned channel closes when one is written (by any replica); cancel
// must be called when the caller stops waiting.
func (w *Waker) Wait(vehicle, half string) (ch <-chan struct{}, cancel func()) {
	wt := &waiter{ch: make(chan struct{})}
	k := key{vehicle, half}
	w.mu.Lock()
	set := w.waiters[k]
	if set == nil {
		set = map[*waiter]struct{}{}
		w.waiters[k] = set
	}
	set[wt] = struct{}{}
	w.n++
	w.mu.Unlock()
	return wt.ch, func() {
		w.mu.Lock()
		if set, ok := w.waiters[k]; ok {
			if _, ok := set[wt]; ok {
				delete(set, wt)
				w.n--
				if len(set) == 0 {
					delete(w.waiters, k)
				}
			}
		}
		w.mu.Unlock()
	}
}

// Changed returns a channel that closes at the next change of half on any
// vehicle (written by any replica). Every caller until then gets the same
// channel, so there is nothing to cancel. As with Wait, call it before
// reading the store, so a write between the read and the wait still
// closes it.
func (w *Waker) Changed(half string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.halves[half]
	if ch == nil {
		ch = make(chan struct{})
		w.halves[half] = ch
	}
	return ch
}

// Waiting is the number of registered waiters.
func (w *Waker) Waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Run follows the store's changes until ctx ends.
func (w *Waker) Run(ctx context.Context) error {
	changes, err := w.st.Changes(ctx)
	if err != nil {
		return err
	}
	seq, err := w.st.Sequence(ctx)
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case newest, ok := <-changes:
			if !ok {
				return nil
			}
			for seq < newest {
				cs, err := w.st.DesiredSince(ctx, seq, page)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					// The next notification retries from the same seq; a
					// long-poll that misses a wake answers at its wait.
					w.log.Warn("read changes", "after", seq, "err", err)
					break
				}
				if len(cs) == 0 {
					seq = newest
					break
				}
				w.wake(cs)
				seq = cs[len(cs)-1].Seq
			}
		}
	}
}

func (w *Waker) wake(cs []store.Change) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range cs {
		k := key{c.Vehicle, c.Half}
		set := w.waiters[k]
		for wt := range set {
			close(wt.ch)
			w.n--
		}
		delete(w.waiters, k)
		if ch, ok := w.halves[c.Half]; ok {
			close(ch)
			delete(w.halves, c.Half)
		}
	}
}
