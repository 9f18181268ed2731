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
// random in the range, with SO_REUSEADDR so that ports of connections in
// TIME_WAIT can be taken again; a port another connection to the same
// destination holds fails the connect, which is rare with the range's
// thousand ports and costs one dial.
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

func bindInRange(fd int, network string, ports [2]uint16) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("steer: SO_REUSEADDR: %w", err)
	}
	n := int(ports[1]-ports[0]) + 1
	start := rand.IntN(n)
	var err error
	for i := 0; i < min(n, 64); i++ {
		port := int(ports[0]) + (start+i)%n
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port}
		if network == "tcp6" {
			sa = &unix.SockaddrInet6{Port: port}
		}
		if err = unix.Bind(fd, sa); !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("steer: bind a source port in %d-%d: %w", ports[0], ports[1], err)
	}
	return nil
}
