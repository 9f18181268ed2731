//go:build linux

// Package durable makes writes durable: Fdatasync and SyncDir, the calls
// the proxy's on-disk stores rely on (framelog, which the spool, replay
// results, the gateway's key log, the DNS cache and the kept xDS config are
// written through, calls them), and WriteNew, the write-once file the
// hub's trust roots, signing keys and fleet CA are created with.
package durable

import (
	"os"

	"golang.org/x/sys/unix"
)

// Fdatasync flushes f's data and the metadata needed to read it back (its
// size), not its times: what an append needs, for less than fsync.
func Fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
