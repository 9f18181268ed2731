package localcluster

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The child half of TestKilledParentLeavesNoCluster: start a cluster in
// the directory given, write its processes' PIDs, and wait to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("MISAKI_LOCALCLUSTER_CHILD"); dir != "" {
		c, err := Start(DefaultAssets(), dir)
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		var pids []string
		for _, p := range c.procs {
			pids = append(pids, strconv.Itoa(p.Process.Pid))
		}
		// The guard's arguments: sh -c script name pid...
		if c.guard == nil || len(c.guard.Args) != 6 {
			os.Stderr.WriteString("no guard for exactly etcd and kube-apiserver\n")
			os.Exit(1)
		}
		pids = append(pids, c.guard.Args[len(c.guard.Args)-2:]...) // etcd and kube-apiserver
		os.WriteFile(filepath.Join(dir, "pids"), []byte(strings.Join(pids, " ")), 0o644)
		select {}
	}
	os.Exit(m.Run())
}

// A process that started a cluster and is killed with SIGKILL leaves no
// API server, etcd or other part of it running.
func TestKilledParentLeavesNoCluster(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux ties a child's life to its parent's")
	}
	if m := Missing(DefaultAssets()); m != "" {
		t.Skipf("no %s in %s: run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh and set KUBEBUILDER_ASSETS", m, DefaultAssets())
	}
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "MISAKI_LOCALCLUSTER_CHILD="+dir)
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	deadline := time.Now().Add(2 * time.Minute)
	for len(pids) == 0 {
		if b, err := os.ReadFile(filepath.Join(dir, "pids")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				pid, _ := strconv.Atoi(f)
				pids = append(pids, pid)
			}
		}
		if time.Now().After(deadline) {
			child.Process.Kill()
			t.Fatal("the child did not start its cluster")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	for _, pid := range pids {
		for {
			err := syscall.Kill(pid, 0)
			if errors.Is(err, syscall.ESRCH) {
				break
			}
			// A killed child of a dead parent is reaped by init; until
			// then it is a zombie, which is dead enough.
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(b), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("process %d outlived the process that started it", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
