//go:build !linux

package cmd

import (
	"context"
	"errors"
	"io"
)

// Run fails: the agent reads and writes the kernel's routing through
// netlink, which only Linux has.
func Run(context.Context, []string, io.Writer) error {
	return errors.New("the node link agent runs on Linux only")
}
