package system

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestWithHosts runs this test binary as misaki-demo with-hosts does (its
// TestMain turns into ExecWithHosts running cat /etc/hosts) in the mount
// namespace hostsSysProcAttr makes: cat must see the demo's file, and
// this process the machine's /etc/hosts, unchanged.
func TestWithHosts(t *testing.T) {
	before, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Skipf("no /etc/hosts: %v", err)
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	want := "127.0.0.1 inference.misaki-v-car-lo.svc.cluster.local\n"
	if err := os.WriteFile(hosts, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	ns, err := mountNamespace()
	if err != nil {
		t.Fatal(err)
	}
	attr, err := hostsSysProcAttr()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "MISAKI_DEMO_TEST_WITH_HOSTS="+hosts, "MISAKI_DEMO_TEST_PARENT_NS="+ns)
	cmd.SysProcAttr = attr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// The kernel may refuse the namespaces (a user without user
		// namespaces): the demo then uses a static route instead.
		if strings.Contains(stderr.String(), "operation not permitted") || strings.Contains(err.Error(), "operation not permitted") {
			t.Skipf("no private mount namespace here: %v: %s", err, stderr.String())
		}
		t.Fatalf("with-hosts: %v: %s", err, stderr.String())
	}
	if string(out) != want {
		t.Errorf("the child's /etc/hosts = %q, want %q", out, want)
	}
	if after, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(after, before) {
		t.Errorf("this process's /etc/hosts changed: %q", after)
	}
}

// TestWithHostsRefusesParentNamespace checks that ExecWithHosts does not
// bind over /etc/hosts in the namespace its parent runs in.
func TestWithHostsRefusesParentNamespace(t *testing.T) {
	ns, err := mountNamespace()
	if err != nil {
		t.Fatal(err)
	}
	for _, parent := range []string{ns, ""} {
		err := ExecWithHosts(filepath.Join(t.TempDir(), "hosts"), parent, []string{"true"})
		if err == nil || !strings.Contains(err.Error(), "not in a mount namespace of its own") {
			t.Errorf("parent namespace %q: err = %v, want a refusal", parent, err)
		}
	}
}
