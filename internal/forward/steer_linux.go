package forward

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// markDenied remembers that SO_MARK needs a capability this proxy lacks
// (CAP_NET_ADMIN): an injected sidecar has none, and steers by source
// port alone.
var markDenied atomic.Bool

// steer sets what the node link agent's policy routing reads: the firewall
// mark (only where the proxy may set it, which is when it shares the
// host's network namespace) and a source port from the link's range,
// which is what reaches the host's routing decision from a pod (the mark
// is cleared when a packet crosses the veth). The port is bound here, at
// random in the range (bindInRange).
func steer(c syscall.RawConn, network string, mark uint32, ports [2]uint16, log *slog.Logger) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if mark != 0 && !markDenied.Load() {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); e != nil {
				if !errors.Is(e, unix.EPERM) {
					serr = fmt.Errorf("set mark %#x: %w", mark, e)
					return
				}
				if markDenied.CompareAndSwap(false, true) && log != nil {
					log.Info("no CAP_NET_ADMIN for SO_MARK: steering by source port only (as in a pod)")
				}
			}
		}
		if ports[0] == 0 || ports[1] < ports[0] {
			return
		}
		serr = bindInRange(int(fd), network, ports)
	})
	return errors.Join(err, serr)
}

// bindInRange binds the socket to a port of the range, at random. It
// takes a port no socket holds first, not even one in TIME_WAIT: a port
// bound with SO_REUSEADDR beside a live connection to the same destination
// binds but fails the connect (EADDRNOTAVAIL), as does one in TIME_WAIT
// towards the same destination off loopback. Only when every port is held
// does it take one with SO_REUSEADDR, which serves when the port's other
// connections are in TIME_WAIT or go elsewhere. Every socket gets
// SO_REUSEADDR once bound, so that later ones may share its port then.
func bindInRange(fd int, network string, ports [2]uint16) error {
	n := int(ports[1]-ports[0]) + 1
	err := bindFrom(fd, network, ports, n)
	reuse := func() error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("steer: SO_REUSEADDR: %w", err)
		}
		return nil
	}
	switch {
	case err == nil:
		return reuse()
	case errors.Is(err, unix.EADDRINUSE):
		if err := reuse(); err != nil {
			return err
		}
		err = bindFrom(fd, network, ports, min(n, 64))
	}
	if err != nil {
		return fmt.Errorf("steer: bind a source port in %d-%d: %w", ports[0], ports[1], err)
	}
	return nil
}

// bindFrom tries up to tries ports of the range, from a random one on,
// until a bind does not fail with EADDRINUSE.
func bindFrom(fd int, network string, ports [2]uint16, tries int) error {
	n := int(ports[1]-ports[0]) + 1
	start := rand.IntN(n)
	var err error
	for i := 0; i < tries; i++ {
		port := int(ports[0]) + (start+i)%n
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port}
		if network == "tcp6" {
			sa = &unix.SockaddrInet6{Port: port}
		}
		if err = unix.Bind(fd, sa); !errors.Is(err, unix.EADDRINUSE) {
			return err
		}
	}
	return err
}
