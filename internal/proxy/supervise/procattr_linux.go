package supervise

import "syscall"

// sysProcAttr makes the kernel send the proxy SIGTERM when the parent dies,
// even by SIGKILL, so that no proxy is left holding the ports. (The signal
// follows the OS thread that started the proxy; start keeps that thread.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
