package forward

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindToDevice makes the socket leave by iface (SO_BINDTODEVICE), whatever
// the routing table prefers. It needs CAP_NET_RAW (or root).
func bindToDevice(c syscall.RawConn, iface string) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), iface) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("bind to interface %s (needs CAP_NET_RAW): %w", iface, serr)
	}
	return nil
}
