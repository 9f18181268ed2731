//go:build !linux

package forward

import (
	"fmt"
	"syscall"
)

func bindToDevice(_ syscall.RawConn, iface string) error {
	return fmt.Errorf("steering onto interface %s is supported on Linux only", iface)
}
