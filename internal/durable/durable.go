//go:build linux

// Package durable holds the two system calls the proxy's on-disk stores
// make their writes durable with (framelog, which the spool, replay
// results, the gateway's key log and the DNS cache are written through,
// calls them), and the crash-safe replacement of a whole file built on
// them, for the kept xDS config.
package durable

import (
	"io"
	"os"
	"path/filepath"

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

// SyncDir fsyncs a directory, making the files created or removed in it
// so far durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFile replaces path, crash-safely, with what write writes: a
// temporary file in the same directory, fdatasynced, renamed over path,
// and the directory fsynced. A crash leaves the old file or the new one
// whole, never a mix. The directory is made if it is missing.
func WriteFile(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	err = write(tmp)
	if err == nil {
		err = Fdatasync(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = SyncDir(dir)
	}
	return err
}
