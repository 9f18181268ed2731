//go:build !linux

package forward

import (
	"fmt"
	"log/slog"
	"syscall"
)

func steer(_ syscall.RawConn, _ string, mark uint32, _ [2]uint16, _ *slog.Logger) error {
	return fmt.Errorf("steering by the node link agent's routing (mark %#x) is supported on Linux only", mark)
}
