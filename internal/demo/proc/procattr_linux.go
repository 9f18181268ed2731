package proc

import "syscall"

// SysProcAttr makes the kernel send SIGTERM to a child when the demo dies,
// even by SIGKILL, so no proxy or app outlives it. (The signal follows the
// OS thread that started the child; the Go runtime does not end threads of
// goroutines that are not locked to them, so it is not sent early.)
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
