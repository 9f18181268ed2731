//go:build !linux

package link

import (
	"context"
	"errors"
)

func watchNetlink(context.Context, chan<- struct{}) error {
	return errors.New("netlink is Linux only")
}
