//go:build !linux

package sockio

import "syscall"

const supported = false

func rawRead(fd uintptr, p []byte) (int, syscall.Errno)  { panic("sockio: unsupported") }
func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) { panic("sockio: unsupported") }
