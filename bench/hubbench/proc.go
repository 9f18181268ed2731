package main

import "syscall"

// raiseNoFile raises RLIMIT_NOFILE for this process and the hub and
// PostgreSQL processes it starts (they inherit it): 10,000 vehicles are
// 10,000 sockets here and 10,000 in the hub. Calling Setrlimit also stops
// os/exec from giving children back the soft limit the process started
// with.
func raiseNoFile(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < want {
		// Raising the hard limit needs CAP_SYS_RESOURCE (root); else keep it.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return want, nil
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}
