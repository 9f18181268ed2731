// Package hold keeps requests waiting in memory while their route has no
// usable link, and releases them, oldest first, the moment it has one.
//
// A Queue belongs to one route; a Budget bounds all queues together. Both
// limit the number of held requests and their bytes (headers plus buffered
// body); a request that would exceed either is refused with ErrFull and the
// caller answers 503 at once. Waiting ends in one of four ways: the route
// became usable (Released), the window passed (Expired), the client went away
// (Canceled) or the queue was closed for shutdown or reconfiguration (Closed).
//
// Whether the route is usable is the route's to know, not the queue's: the
// queue asks (the ready function given to NewQueue) when a request arrives,
// and the route calls Release when it becomes usable:
//
//	route becomes usable:  ready() turns true, then Release()
//	request arrives:       ready()? forward at once : wait for Release
//
// ready is read under the queue's lock and Release takes it, so a request
// that arrives between the two is either not held or released.
//
// Lock order: Queue.mu, then Budget.mu.
package hold

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
)

// Limit bounds held requests; a zero field means no limit of that kind.
type Limit struct {
	Requests int
	Bytes    int64
}

func (l Limit) admits(requests int, bytes int64) bool {
	return (l.Requests == 0 || requests <= l.Requests) && (l.Bytes == 0 || bytes <= l.Bytes)
}

// ErrFull means admitting the request would exceed a hold limit.
var ErrFull = errors.New("hold: limit reached")

// Outcome says how a wait ended.
type Outcome int

const (
	Released Outcome = iota // the route became usable: forward now
	Expired                 // the hold window passed
	Canceled                // the client went away: never forward
	Closed                  // the queue was closed: answer at once
)

var outcomeNames = [...]string{"released", "expired", "canceled", "closed"}

func (o Outcome) String() string { return outcomeNames[o] }

// Budget is the limit shared by all queues.
type Budget struct {
	limit Limit

	mu       sync.Mutex // guards fields below
	requests int
	bytes    int64
}

// NewBudget returns a shared budget.
func NewBudget(l Limit) *Budget { return &Budget{limit: l} }

// Held returns what all queues hold now.
func (b *Budget) Held() (requests int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.requests, b.bytes
}

func (b *Budget) take(size int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.limit.admits(b.requests+1, b.bytes+size) {
		return false
	}
	b.requests++
	b.bytes += size
	return true
}

func (b *Budget) give(size int64) {
	b.mu.Lock()
	b.requests--
	b.bytes -= size
	b.mu.Unlock()
}

// Queue holds one route's requests.
type Queue struct {
	budget *Budget
	limit  Limit
	clock  clock.Clock
	ready  func() bool // whether the route is usable now

	mu       sync.Mutex // guards fields below
	waiters  list.List  // of *waiter, oldest first
	requests int
	bytes    int64
	closed   bool
}

type waiter struct {
	size  int64
	elem  *list.Element
	ready chan struct{} // closed on release or close
	// outcome is set under Queue.mu before ready is closed.
	outcome Outcome
	done    bool
}

// NewQueue returns a route's queue, under the shared budget b and the
// route's own limit l. ready reports whether the route is usable now; a
// request that arrives while it is, is not held.
func NewQueue(b *Budget, l Limit, clk clock.Clock, ready func() bool) *Queue {
	return &Queue{budget: b, limit: l, clock: clk, ready: ready}
}

// Release ends every wait with Released, in arrival order. The route calls
// it after it became usable (after ready turned true).
func (q *Queue) Release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.finishAllLocked(Released)
}

// Close ends every wait with Closed; later waits return Closed at once.
func (q *Queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.finishAllLocked(Closed)
}

func (q *Queue) finishAllLocked(o Outcome) {
	for e := q.waiters.Front(); e != nil; e = q.waiters.Front() {
		w := q.waiters.Remove(e).(*waiter)
		w.outcome, w.done = o, true
		q.releaseLocked(w)
		close(w.ready)
	}
}

func (q *Queue) releaseLocked(w *waiter) {
	q.requests--
	q.bytes -= w.size
	q.budget.give(w.size)
}

// Fits reports whether a request of size bytes would be admitted now. It
// reserves nothing (Wait decides); callers use it to refuse a request whose
// declared length cannot fit before reading its body.
func (q *Queue) Fits(size int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.limit.admits(q.requests+1, q.bytes+size) {
		return false
	}
	q.budget.mu.Lock()
	defer q.budget.mu.Unlock()
	return q.budget.limit.admits(q.budget.requests+1, q.budget.bytes+size)
}

// Held returns what the queue holds now.
func (q *Queue) Held() (requests int, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.requests, q.bytes
}

// Wait holds a request of size bytes until Release, max passes, or ctx
// ends. It returns Released at once if the route is usable (ready), and
// ErrFull if a limit refuses the request.
func (q *Queue) Wait(ctx context.Context, size int64, max time.Duration) (Outcome, error) {
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return Closed, nil
	case q.ready():
		q.mu.Unlock()
		return Released, nil
	case max <= 0:
		q.mu.Unlock()
		return Expired, nil
	case !q.limit.admits(q.requests+1, q.bytes+size) || !q.budget.take(size):
		q.mu.Unlock()
		return 0, ErrFull
	}
	w := &waiter{size: size, ready: make(chan struct{})}
	w.elem = q.waiters.PushBack(w)
	q.requests++
	q.bytes += size
	q.mu.Unlock()

	t := q.clock.NewTimer(max)
	defer t.Stop()
	var o Outcome
	select {
	case <-w.ready:
	case <-t.C():
		o = Expired
	case <-ctx.Done():
		o = Canceled
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.done {
		// Released or closed, possibly racing with the timer: the release
		// wins unless the client has gone.
		if ctx.Err() != nil {
			return Canceled, nil
		}
		return w.outcome, nil
	}
	q.waiters.Remove(w.elem)
	q.releaseLocked(w)
	return o, nil
}
