package hold

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
)

type waitResult struct {
	o   Outcome
	err error
	i   int
}

// testRoute is a route whose queue is tested: usable or not, as the test
// sets it.
type testRoute struct {
	usable atomic.Bool
	queue  *Queue
}

// setUsable is what a route does when its state changes.
func (r *testRoute) setUsable(ok bool) {
	r.usable.Store(ok)
	if ok {
		r.queue.Release()
	}
}

func newTestRoute(b *Budget, route Limit, clk clock.Clock) *testRoute {
	r := &testRoute{}
	r.queue = NewQueue(b, route, clk, r.usable.Load)
	return r
}

// newTestQueue is the queue of a route that is not usable.
func newTestQueue(global, route Limit) (*testRoute, *Budget, *clock.Fake) {
	clk := clock.NewFake(time.Unix(0, 0))
	b := NewBudget(global)
	return newTestRoute(b, route, clk), b, clk
}

func waitHeld(t *testing.T, q *Queue, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := q.Held(); got == n {
			return
		}
		if time.Now().After(deadline) {
			got, _ := q.Held()
			t.Fatalf("held %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReleaseAll(t *testing.T) {
	r, b, _ := newTestQueue(Limit{}, Limit{})
	q := r.queue
	res := make(chan waitResult, 5)
	for i := range 5 {
		go func() {
			o, err := q.Wait(context.Background(), 10, time.Hour)
			res <- waitResult{o, err, i}
		}()
		waitHeld(t, q, i+1) // arrival order is i
	}
	if n, by := b.Held(); n != 5 || by != 50 {
		t.Fatalf("budget holds %d requests, %d bytes", n, by)
	}
	r.setUsable(true)
	for range 5 {
		r := <-res
		if r.o != Released || r.err != nil {
			t.Fatalf("waiter %d: %v %v", r.i, r.o, r.err)
		}
	}
	if n, by := b.Held(); n != 0 || by != 0 {
		t.Fatalf("budget not returned: %d, %d", n, by)
	}
}

func TestExpiry(t *testing.T) {
	r, _, clk := newTestQueue(Limit{}, Limit{})
	q := r.queue
	res := make(chan Outcome, 1)
	go func() {
		o, _ := q.Wait(context.Background(), 1, 30*time.Second)
		res <- o
	}()
	waitHeld(t, q, 1)
	for clk.Timers() == 0 {
		time.Sleep(time.Millisecond)
	}
	clk.Advance(29 * time.Second)
	select {
	case o := <-res:
		t.Fatalf("ended early: %v", o)
	default:
	}
	clk.Advance(time.Second)
	if o := <-res; o != Expired {
		t.Fatalf("outcome %v, want expired", o)
	}
	if n, _ := q.Held(); n != 0 {
		t.Fatalf("still holds %d", n)
	}
}

func TestCancelAndClose(t *testing.T) {
	r, _, _ := newTestQueue(Limit{}, Limit{})
	q := r.queue
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan Outcome, 2)
	go func() { o, _ := q.Wait(ctx, 1, time.Hour); res <- o }()
	waitHeld(t, q, 1)
	cancel()
	if o := <-res; o != Canceled {
		t.Fatalf("outcome %v, want canceled", o)
	}
	go func() { o, _ := q.Wait(context.Background(), 1, time.Hour); res <- o }()
	waitHeld(t, q, 1)
	q.Close()
	if o := <-res; o != Closed {
		t.Fatalf("outcome %v, want closed", o)
	}
	if o, _ := q.Wait(context.Background(), 1, time.Hour); o != Closed {
		t.Fatalf("wait after close: %v", o)
	}
}

func TestImmediateOutcomes(t *testing.T) {
	r, _, _ := newTestQueue(Limit{}, Limit{})
	q := r.queue
	if o, _ := q.Wait(context.Background(), 1, 0); o != Expired {
		t.Errorf("zero window: %v, want expired", o)
	}
	// Usable, and Release not called yet: the queue asks the route, so
	// a request arriving in between is not held.
	r.usable.Store(true)
	if o, _ := q.Wait(context.Background(), 1, time.Hour); o != Released {
		t.Errorf("usable: %v, want released", o)
	}
}

func TestLimits(t *testing.T) {
	for _, tt := range []struct {
		name          string
		global, route Limit
		size          int64
		fits          int
	}{
		{"route count", Limit{}, Limit{Requests: 2}, 1, 2},
		{"route bytes", Limit{}, Limit{Bytes: 25}, 10, 2},
		{"global count", Limit{Requests: 3}, Limit{}, 1, 3},
		{"global bytes", Limit{Bytes: 10}, Limit{}, 5, 2},
		{"too big alone", Limit{Bytes: 4}, Limit{}, 5, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _, _ := newTestQueue(tt.global, tt.route)
			q := r.queue
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range tt.fits {
				go q.Wait(ctx, tt.size, time.Hour)
				waitHeld(t, q, i+1)
			}
			if _, err := q.Wait(ctx, tt.size, time.Hour); !errors.Is(err, ErrFull) {
				t.Fatalf("request past the limit: %v, want ErrFull", err)
			}
		})
	}
}

func TestBudgetIsShared(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	b := NewBudget(Limit{Requests: 1})
	q1, q2 := newTestRoute(b, Limit{}, clk).queue, newTestRoute(b, Limit{}, clk).queue
	ctx, cancel := context.WithCancel(context.Background())
	go q1.Wait(ctx, 1, time.Hour)
	waitHeld(t, q1, 1)
	if _, err := q2.Wait(ctx, 1, time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("second queue admitted past the shared budget: %v", err)
	}
	cancel()
	waitHeld(t, q1, 0)
	if n, _ := b.Held(); n != 0 {
		t.Fatalf("budget holds %d after cancel", n)
	}
}

func TestFits(t *testing.T) {
	r, _, _ := newTestQueue(Limit{Bytes: 100}, Limit{Requests: 1})
	q := r.queue
	if !q.Fits(100) || q.Fits(101) {
		t.Fatal("global byte limit not applied")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Wait(ctx, 10, time.Hour)
	waitHeld(t, q, 1)
	if q.Fits(1) {
		t.Fatal("route request limit not applied")
	}
	if n, _ := q.Held(); n != 1 {
		t.Fatal("Fits reserved something")
	}
}
