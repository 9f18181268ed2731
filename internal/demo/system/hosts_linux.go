package system

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// hostsSysProcAttr starts a child in a mount namespace of its own (and,
// for a user other than root, a user namespace in which it is root), so
// that ExecWithHosts can give it its own /etc/hosts; the kernel still
// sends it SIGTERM when the demo dies.
func hostsSysProcAttr() (*syscall.SysProcAttr, error) {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Cloneflags: syscall.CLONE_NEWNS}
	if uid := os.Geteuid(); uid != 0 {
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		a.GidMappingsEnableSetgroups = false
	}
	return a, nil
}

// mountNamespace names the caller's mount namespace, like "mnt:[4026531841]".
func mountNamespace() (string, error) { return os.Readlink("/proc/self/ns/mnt") }

// ExecWithHosts is misaki-demo with-hosts: in the mount namespace its
// parent made for it (hostsSysProcAttr), it binds hosts over /etc/hosts
// and executes argv. It refuses to run in parentNS, the parent's mount
// namespace, where the bind would change the machine's /etc/hosts.
func ExecWithHosts(hosts, parentNS string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("with-hosts: no command")
	}
	self, err := mountNamespace()
	if err != nil {
		return fmt.Errorf("with-hosts: mount namespace: %w", err)
	}
	if parentNS == "" || self == parentNS {
		return errors.New("with-hosts: not in a mount namespace of its own; misaki-demo system starts it in one")
	}
	// Private first, so that the bind does not propagate to the parent's
	// namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("with-hosts: make mounts private: %w", err)
	}
	if err := syscall.Mount(hosts, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("with-hosts: bind %s over /etc/hosts: %w", hosts, err)
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("with-hosts: %w", err)
	}
	return fmt.Errorf("with-hosts: exec %s: %w", bin, syscall.Exec(bin, argv, os.Environ()))
}
