package link

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// watchNetlink subscribes to link and address changes and sends on events
// (without blocking) for each batch of messages until ctx ends.
func watchNetlink(ctx context.Context, events chan<- struct{}) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("link: netlink socket: %w", err)
	}
	sa := &unix.SockaddrNetlink{
		Family: unix.AF_NETLINK,
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR,
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return fmt.Errorf("link: netlink bind: %w", err)
	}
	// os.NewFile puts the non-blocking socket on the runtime poller, so Close
	// from another goroutine unblocks Read.
	f := os.NewFile(uintptr(fd), "netlink")
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			// ENOBUFS means events were dropped: a rescan is exactly right.
			// Any other error ends the watch; polling carries on.
			if _, err := f.Read(buf); err != nil && !errors.Is(err, unix.ENOBUFS) {
				return
			}
			select {
			case events <- struct{}{}:
			default:
			}
		}
	}()
	return nil
}
