package localcluster

import "syscall"

// procAttr makes the kernel kill a cluster process when the process that
// started it dies, so a test or demo killed with SIGKILL leaves no API
// server or etcd behind. (The signal follows the thread that started the
// child; Go ends threads only for goroutines that locked them, which
// Start's callers do not.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
