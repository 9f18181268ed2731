//go:build !linux

package demo

import "syscall"

// sysProcAttr returns nil: only Linux can tie a child's life to its parent.
// Elsewhere the demo's own cleanup stops its children.
func sysProcAttr() *syscall.SysProcAttr { return nil }
