package system

import (
	"errors"
	"io"
	"net"
	"sync"
)

// relay is a vehicle's link to the hub: a TCP relay on loopback between
// its agent and the hub. Cut closes every connection through it and
// refuses new ones, as a vehicle in a tunnel would see its link; Restore
// lets them through again. The TLS inside is the agent's with the hub,
// end to end.
type relay struct {
	ln     net.Listener
	target string // the hub's host:port

	mu    sync.Mutex // guards cut and conns
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newRelay listens on a free loopback port for connections to target.
func newRelay(target string) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	r.wg.Go(r.serve)
	return r, nil
}

// Addr is the address the agent dials.
func (r *relay) Addr() string { return r.ln.Addr().String() }

// Cut drops the link: open connections are closed, new ones refused.
func (r *relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = true
	for c := range r.conns {
		c.Close()
	}
}

// Restore brings the link back.
func (r *relay) Restore() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = false
}

// IsCut reports whether the link is cut.
func (r *relay) IsCut() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cut
}

// Close stops the relay and closes every connection.
func (r *relay) Close() {
	r.ln.Close()
	r.Cut()
	r.wg.Wait()
}

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		r.wg.Go(func() { r.pipe(c) })
	}
}

// track adds c to the open connections, or reports false when the link
// is cut.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

func (r *relay) pipe(c net.Conn) {
	defer c.Close()
	if !r.track(c) {
		return
	}
	defer r.untrack(c)
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer up.Close()
	if !r.track(up) {
		return
	}
	defer r.untrack(up)
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.Close(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.Close(); done <- struct{}{} }()
	<-done
	<-done
}
