package server

import (
	"net"
	"sync"
	"time"
)

// limitListener caps concurrent connections. Unlike x/net's LimitListener,
// which stops accepting and leaves clients hanging in the backlog, it accepts
// one connection past the cap, answers 503 with Retry-After, and closes it, so
// an app learns at once why it was refused.
type limitListener struct {
	net.Listener
	sem      chan struct{}
	onReject func()
}

func newLimitListener(l net.Listener, n int, onReject func()) net.Listener {
	if n <= 0 {
		return l
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, n), onReject: onReject}
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
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			if l.onReject != nil {
				l.onReject()
			}
			go func() {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte(overloadResponse))
				c.Close()
			}()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// NetConn returns the accepted connection.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
