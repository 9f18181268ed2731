package forward

import (
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// meter counts the bytes of connections made over metered links. It reads
// the kernel's own count (TCP_INFO: bytes sent, retransmissions included,
// and bytes received) when asked and when a connection closes, so the
// count needs no hook on the read and write paths (the HTTP/1.1 fast path
// reads the socket directly, internal/sockio) and is what the link
// carried, not what the application handed over.
type meter struct {
	mu   sync.Mutex // guards fields below
	live map[*meteredConn]struct{}
	done map[string]int64 // bytes of connections closed since the last take
}

type meteredConn struct {
	net.Conn
	m       *meter
	link    string
	tcp     *net.TCPConn
	counted uint64 // bytes already reported; guarded by m.mu
}

// NetConn lets internal/sockio and others find the TCP connection.
func (c *meteredConn) NetConn() net.Conn { return c.Conn }

// Close counts the connection's last bytes, then closes it.
func (c *meteredConn) Close() error {
	c.m.mu.Lock()
	if _, ok := c.m.live[c]; ok {
		delete(c.m.live, c)
		c.m.addLocked(c)
	}
	c.m.mu.Unlock()
	return c.Conn.Close()
}

func (m *meter) track(c net.Conn, link string) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	mc := &meteredConn{Conn: c, m: m, link: link, tcp: tc}
	m.mu.Lock()
	if m.live == nil {
		m.live = map[*meteredConn]struct{}{}
	}
	m.live[mc] = struct{}{}
	m.mu.Unlock()
	return mc
}

func (m *meter) addLocked(c *meteredConn) {
	n := tcpBytes(c.tcp)
	if n <= c.counted {
		return
	}
	if m.done == nil {
		m.done = map[string]int64{}
	}
	m.done[c.link] += int64(n - c.counted)
	c.counted = n
}

func (m *meter) take() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := range m.live {
		m.addLocked(c)
	}
	out := m.done
	m.done = nil
	return out
}

func tcpBytes(tc *net.TCPConn) uint64 {
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var n uint64
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		sent := info.Bytes_sent // Linux 4.19; before it, what the peer acknowledged
		if sent == 0 {
			sent = info.Bytes_acked
		}
		n = sent + info.Bytes_received
	})
	return n
}
