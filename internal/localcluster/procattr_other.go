//go:build !linux

package localcluster

import "syscall"

// procAttr is nil: only Linux ties a child's life to its parent's.
func procAttr() *syscall.SysProcAttr { return nil }
