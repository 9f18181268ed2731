package ui

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
)

// broker fans the hub's changes out to the open /ui/events streams. Two
// events: "change" when something a page shows may have changed (a new
// desired revision on any replica, or an API write on this one), at most
// one per Options.Debounce to each stream; and "tick" every Options.Tick.
// Pages re-fetch their live parts on them (hx-trigger="sse:change").
type broker struct {
	n        Notifier
	clk      clock.Clock
	tick     time.Duration
	debounce time.Duration
	pokes    chan struct{} // API writes on this replica; buffered, coalescing

	mu     sync.Mutex // guards subs and done
	subs   map[*subscriber]struct{}
	done   bool
	closed chan struct{} // closed when run ends
}

type subscriber struct {
	change chan struct{} // buffered 1: pending or not
	tick   chan struct{}
}

func newBroker(n Notifier, o Options) *broker {
	return &broker{n: n, clk: o.Clock, tick: o.Tick, debounce: o.Debounce, pokes: make(chan struct{}, 1),
		subs: map[*subscriber]struct{}{}, closed: make(chan struct{})}
}

// poke says an API write happened.
func (b *broker) poke() {
	select {
	case b.pokes <- struct{}{}:
	default:
	}
}

func (b *broker) run(ctx context.Context) error {
	defer func() {
		b.mu.Lock()
		b.done = true
		close(b.closed)
		b.mu.Unlock()
	}()
	t := b.clk.NewTimer(b.tick)
	defer func() { t.Stop() }()
	never := make(chan struct{})
	for {
		vc, cc := (<-chan struct{})(never), (<-chan struct{})(never)
		if b.n != nil {
			vc, cc = b.n.Changed(hubv1.HalfVehicle), b.n.Changed(hubv1.HalfCloud)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-vc:
			b.send(func(s *subscriber) chan struct{} { return s.change })
		case <-cc:
			b.send(func(s *subscriber) chan struct{} { return s.change })
		case <-b.pokes:
			b.send(func(s *subscriber) chan struct{} { return s.change })
		case <-t.C():
			t = b.clk.NewTimer(b.tick)
			b.send(func(s *subscriber) chan struct{} { return s.tick })
		}
	}
}

func (b *broker) send(which func(*subscriber) chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case which(s) <- struct{}{}:
		default: // one is pending already
		}
	}
}

// subscribe adds a stream; ok is false once run has ended.
func (b *broker) subscribe() (s *subscriber, cancel func(), ok bool) {
	s = &subscriber{change: make(chan struct{}, 1), tick: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil, nil, false
	}
	b.subs[s] = struct{}{}
	return s, func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}, true
}

// serveEvents is GET /ui/events, the server-sent event stream.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request, _ *session) error {
	rc := http.NewResponseController(w)
	sub, cancel, ok := s.events.subscribe()
	if !ok {
		http.Error(w, "the hub is stopping", http.StatusServiceUnavailable)
		return nil
	}
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	n := 0
	write := func(event string) bool {
		n++
		if event != "" {
			fmt.Fprintf(w, "event: %s\ndata: %d\n\n", event, n)
		} else {
			fmt.Fprint(w, "retry: 3000\n: connected\n\n")
		}
		return rc.Flush() == nil
	}
	if !write("") {
		return nil
	}
	b := s.events
	var last time.Time
	var later <-chan time.Time // a change held back by the debounce
	var laterT clock.Timer
	defer func() {
		if laterT != nil {
			laterT.Stop()
		}
	}()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-b.closed:
			return nil
		case <-sub.tick:
			if !write("tick") {
				return nil
			}
		case <-sub.change:
			if later != nil {
				continue // already held back; it goes out then
			}
			if wait := b.debounce - b.clk.Now().Sub(last); wait > 0 {
				laterT = b.clk.NewTimer(wait)
				later = laterT.C()
				continue
			}
			last = b.clk.Now()
			if !write("change") {
				return nil
			}
		case <-later:
			later, laterT = nil, nil
			last = b.clk.Now()
			if !write("change") {
				return nil
			}
		}
	}
}
