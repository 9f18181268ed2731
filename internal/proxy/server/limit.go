package server

import (
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// limitListener caps concurrent connections. Unlike x/net's LimitListener,
// which stops accepting and leaves clients hanging in the backlog, it accepts
// one connection past the cap, answers 503 with Retry-After, and closes it, so
// an app learns at once why it was refused.
type limitListener struct {
	net.Listener
	sem      chan struct{}      // a token per connection open
	rejected prometheus.Counter // connections refused
}

// newLimitListener caps l at n connections (none when n is 0), counting
// those it refuses in rejected.
func newLimitListener(l net.Listener, n int, rejected prometheus.Counter) net.Listener {
	if n <= 0 {
		return l
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, n), rejected: rejected}
}

const overloadResponse = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 41\r\n\r\nmisaki: too many connections; retry soon\n"

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, sem: l.sem}, nil
		default:
			l.rejected.Inc()
			go func() {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte(overloadResponse))
				c.Close()
			}()
		}
	}
}

// limitConn gives its token back to the listener's sem when closed.
type limitConn struct {
	net.Conn
	once sync.Once
	sem  chan struct{}
}

// NetConn returns the accepted connection.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.sem })
	return err
}
