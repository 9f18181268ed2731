//go:build !linux

package proc

import "syscall"

// SysProcAttr returns nil: only Linux can tie a child's life to its parent.
// Elsewhere the demo's own cleanup stops its children.
func SysProcAttr() *syscall.SysProcAttr { return nil }
