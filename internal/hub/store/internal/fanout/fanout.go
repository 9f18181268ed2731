// Package fanout hands a store's newest change sequence to every
// subscriber of Store.Changes, coalescing: each subscriber has a channel of
// capacity 1 that holds only the newest value not yet read, so a slow
// reader gets the latest sequence, never a backlog, and a publisher never
// waits for a reader. Both store implementations use it.
package fanout

import (
	"context"
	"sync"
)

// Fanout is one store's set of subscribers. The zero value is ready to use.
type Fanout struct {
	mu     sync.Mutex // guards fields below
	last   int64      // highest sequence published or set as baseline
	subs   map[*sub]struct{}
	closed bool
}

type sub struct {
	c    chan int64
	stop func() bool // unregisters the context.AfterFunc
}

// Subscribe returns a channel that receives every sequence published after
// this call that is above all published before it. It is closed when ctx
// ends or the Fanout is closed.
func (f *Fanout) Subscribe(ctx context.Context) <-chan int64 {
	s := &sub{c: make(chan int64, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || ctx.Err() != nil {
		close(s.c)
		return s.c
	}
	if f.subs == nil {
		f.subs = make(map[*sub]struct{})
	}
	f.subs[s] = struct{}{}
	s.stop = context.AfterFunc(ctx, func() { f.remove(s) })
	return s.c
}

func (f *Fanout) remove(s *sub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.subs[s]; ok {
		delete(f.subs, s)
		close(s.c)
	}
}

// Publish hands seq to every subscriber, replacing a value it has not
// read yet, if seq is above every sequence published before; an older or
// repeated seq (a notification that arrives after the local publish of the
// same write, say) is dropped. It reports whether seq was delivered.
func (f *Fanout) Publish(seq int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq <= f.last || f.closed {
		return false
	}
	f.last = seq
	for s := range f.subs {
		// Only publishers send, and they hold mu: after the drain the
		// channel has room.
		select {
		case <-s.c:
		default:
		}
		s.c <- seq
	}
	return true
}

// Baseline raises the highest sequence seen to seq without delivering it,
// so that only later sequences wake subscribers.
func (f *Fanout) Baseline(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = max(f.last, seq)
}

// Last returns the highest sequence published or set as baseline.
func (f *Fanout) Last() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Close closes every subscriber's channel; later subscriptions get a
// closed channel and Publish does nothing.
func (f *Fanout) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for s := range f.subs {
		s.stop()
		close(s.c)
	}
	f.subs = nil
}
