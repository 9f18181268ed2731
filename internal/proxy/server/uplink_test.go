package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Relay modes: how the uplink in front of the upstream misbehaves.
const (
	relayPass      = iota // bytes pass both ways
	relayClose            // connections are accepted and closed at once
	relayRefuse           // nothing listens: connections are refused
	relayBlackhole        // connections are accepted and never answered
)

var relayModeNames = map[int32]string{relayPass: "pass", relayClose: "close", relayRefuse: "refuse", relayBlackhole: "blackhole"}

// relay is a TCP middlebox in front of an upstream that can close, refuse
// or swallow connections, as a modem moving in and out of coverage or a NAT
// dropping its state does. Changing mode cuts every open connection.
type relay struct {
	addr, target string
	mode         atomic.Int32
	accepted     [4]atomic.Int64 // connections accepted, by the mode they met

	mu    sync.Mutex // guards fields below
	ln    net.Listener
	conns map[net.Conn]struct{}
	done  bool
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	r.serve(ln)
	t.Cleanup(func() {
		r.mu.Lock()
		r.done = true
		r.mu.Unlock()
		r.set(t, relayPass)
		r.mu.Lock()
		if r.ln != nil {
			r.ln.Close()
		}
		r.mu.Unlock()
	})
	return r
}

func (r *relay) serve(ln net.Listener) {
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.handle(c)
		}
	}()
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) forget(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *relay) handle(c net.Conn) {
	mode := r.mode.Load()
	r.accepted[mode].Add(1)
	if !r.track(c) {
		c.Close()
		return
	}
	defer r.forget(c)
	switch mode {
	case relayClose:
		return
	case relayBlackhole:
		io.Copy(io.Discard, c)
		return
	}
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	if !r.track(up) {
		up.Close()
		return
	}
	defer r.forget(up)
	go func() {
		io.Copy(up, c)
		up.Close()
	}()
	io.Copy(c, up)
}

// set switches mode, cutting every connection open now.
func (r *relay) set(t *testing.T, mode int32) {
	old := r.mode.Swap(mode)
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = map[net.Conn]struct{}{}
	ln := r.ln
	r.mu.Unlock()
	switch {
	case mode == relayRefuse && old != relayRefuse:
		ln.Close()
	case mode != relayRefuse && old == relayRefuse:
		ln, err := net.Listen("tcp", r.addr)
		if err != nil {
			t.Errorf("relay: listen again on %s: %v", r.addr, err)
			return
		}
		r.serve(ln)
	}
}

// TestUplinkFaults: an app sends steadily through a route whose uplink, on
// a schedule, closes connections at once, refuses them, swallows them, and
// drops the state of connections in the pool. The app sees the route's
// offline behaviour (delivered, or held and then 202 because the route
// spools) and never an error; every acknowledged request reaches the
// upstream; none reaches it under two keys (which the gateway could not
// de-duplicate).
func TestUplinkFaults(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		type delivery struct {
			keys  map[string]int
			count int
		}
		var (
			mu   sync.Mutex
			seen = map[string]*delivery{}
		)
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if id := r.Header.Get("X-Req-Id"); id != "" {
				mu.Lock()
				d := seen[id]
				if d == nil {
					d = &delivery{keys: map[string]int{}}
					seen[id] = d
				}
				d.count++
				d.keys[r.Header.Get("Idempotency-Key")]++
				mu.Unlock()
			}
			fmt.Fprintf(w, "ok %s", r.Header.Get("X-Req-Id"))
		})
		rl := newRelay(t, up.Listener.Addr().String())
		cfg := fmt.Sprintf(`spool: {dir: %s, replay: {backoff: {initial: 20ms, max: 100ms}}}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: http://%s
    timeouts: {responseHeader: 300ms}
    probe: {type: http, path: /healthz, interval: 200ms, timeout: 300ms, backoff: {initial: 50ms, max: 200ms}}
    offline: {hold: 400ms, spool: true}
`, t.TempDir(), rl.addr)
		p := srv.start(t, cfg, false)

		schedule := []struct {
			mode int32
			for_ time.Duration
		}{
			{relayPass, 700 * time.Millisecond},
			{relayClose, time.Second},
			{relayPass, 700 * time.Millisecond},
			{relayRefuse, time.Second},
			{relayPass, 700 * time.Millisecond},
			{relayBlackhole, 1200 * time.Millisecond},
			{relayPass, 700 * time.Millisecond},
			// Pass again: the switch cuts the pooled connections (a NAT
			// that forgot them), so the next requests meet dead ones.
			{relayPass, 700 * time.Millisecond},
		}
		stop := make(chan struct{})
		go func() {
			defer close(stop)
			for _, s := range schedule {
				rl.set(t, s.mode)
				t.Logf("uplink %s for %v", relayModeNames[s.mode], s.for_)
				time.Sleep(s.for_) // the fault schedule itself, not synchronisation
			}
		}()

		type outcome struct {
			id       string
			status   int
			err      error
			location string
			delivery string
		}
		var (
			outMu    sync.Mutex
			outcomes []outcome
			wg       sync.WaitGroup
		)
		for g := range 4 {
			wg.Go(func() {
				tick := time.NewTicker(25 * time.Millisecond) // 40 requests a second from each app
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					id := fmt.Sprintf("app%d-%d", g, i)
					r := p.send(context.Background(), "telemetry.cloud.misaki", id, nil, []byte("reading "+id))
					outMu.Lock()
					outcomes = append(outcomes, outcome{id, r.status, r.err, r.header.Get("Location"), r.header.Get("Misaki-Delivery")})
					outMu.Unlock()
				}
			})
		}
		wg.Wait()
		rl.set(t, relayPass)

		byStatus := map[int]int{}
		byDelivery := map[string]int{}
		var spooled []outcome
		for _, o := range outcomes {
			if o.err != nil {
				t.Errorf("%s: %v", o.id, o.err)
				continue
			}
			byStatus[o.status]++
			byDelivery[o.delivery]++
			switch o.status {
			case http.StatusOK:
			case http.StatusAccepted:
				spooled = append(spooled, o)
			default:
				t.Errorf("%s: status %d (%s): the app must see delivery, or the route's hold then 202", o.id, o.status, o.delivery)
			}
		}
		// Spooled requests are replayed once the uplink passes again.
		for _, o := range spooled {
			waitState(t, o.location, "delivered")
		}
		mu.Lock()
		defer mu.Unlock()
		lost, dups := 0, 0
		for _, o := range outcomes {
			if o.status != http.StatusOK && o.status != http.StatusAccepted {
				continue
			}
			d := seen[o.id]
			if d == nil {
				lost++
				t.Errorf("%s: acknowledged with %d, never reached the upstream", o.id, o.status)
				continue
			}
			if len(d.keys) != 1 || d.keys[""] > 0 {
				dups++
				t.Errorf("%s: reached the upstream %d times under keys %v", o.id, d.count, d.keys)
			}
		}
		t.Logf("%d requests: statuses %v, deliveries %v; lost %d, duplicates the gateway could not catch %d; relay accepted %d passing, %d closed at once, %d swallowed",
			len(outcomes), byStatus, byDelivery, lost, dups, rl.accepted[relayPass].Load(), rl.accepted[relayClose].Load(), rl.accepted[relayBlackhole].Load())
		// The faults happened and were met: without them the test proves nothing.
		if rl.accepted[relayClose].Load() == 0 || rl.accepted[relayBlackhole].Load() == 0 {
			t.Errorf("the relay closed %d and swallowed %d connections; the schedule did not reach the proxy", rl.accepted[relayClose].Load(), rl.accepted[relayBlackhole].Load())
		}
		if byDelivery["held"]+byDelivery["spooled"] == 0 {
			t.Errorf("no request was held or spooled: the faults were not seen")
		}
	})
}
