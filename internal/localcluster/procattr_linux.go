package localcluster

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// procAttr makes the kernel kill a cluster process when the process that
// started it dies, so a test or demo killed with SIGKILL leaves no
// controller-manager, scheduler or kwok behind. (The signal follows the
// thread that started the child; Go ends threads only for goroutines that
// locked them, which Start's callers do not.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// guard does the same for etcd and kube-apiserver, which envtest starts
// without a way to set their SysProcAttr: it finds them among this
// process's children by their arguments (etcd's data dir, the API
// server's etcd URL) and starts a shell that the kernel sends SIGTERM when
// this process dies, and that then kills them. Stop ends the guard first.
func guard(env *envtest.Environment) *exec.Cmd {
	etcd := env.ControlPlane.Etcd
	if etcd == nil || etcd.URL == nil {
		return nil
	}
	marks := [][]byte{[]byte("--data-dir=" + etcd.DataDir), []byte("--etcd-servers=" + etcd.URL.String())}
	self := strconv.Itoa(os.Getpid())
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		i := bytes.LastIndexByte(stat, ')')
		if f := strings.Fields(string(stat[i+1:])); i < 0 || len(f) < 2 || f[1] != self {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		for _, arg := range bytes.Split(cmdline, []byte{0}) {
			if bytes.Equal(arg, marks[0]) || bytes.Equal(arg, marks[1]) {
				pids = append(pids, filepath.Base(d))
				break
			}
		}
	}
	if len(pids) == 0 {
		return nil
	}
	cmd := exec.Command("/bin/sh", "-c", `trap 'kill -9 "$@" $! 2>/dev/null; exit 0' TERM; while :; do sleep 3600 & wait $!; done`, "localcluster-guard")
	cmd.Args = append(cmd.Args, pids...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if cmd.Start() != nil {
		return nil
	}
	return cmd
}
