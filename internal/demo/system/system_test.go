package system_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/demo/system"
	"github.com/misaki-io/misaki/internal/localcluster"
	"github.com/misaki-io/misaki/internal/testbin"
)

// binDir holds the binaries once built; TestMain removes it.
var binDir string

// binaries builds the story's five commands once, for the tests that need
// them (from testbin's cache when nothing they link changed).
var binaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "misaki-system-demo-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	var pkgs []string
	for _, c := range []string{"misaki-hub", "misaki-agent", "misaki-proxy", "misaki-controller", "misaki-demo"} {
		pkgs = append(pkgs, "github.com/misaki-io/misaki/cmd/"+c)
	}
	return dir, testbin.Build(dir, nil, pkgs...)
})

// Environment of the test binary re-executed as misaki-demo with-hosts
// (hosts_linux_test.go).
const (
	envWithHosts = "MISAKI_DEMO_TEST_WITH_HOSTS"
	envParentNS  = "MISAKI_DEMO_TEST_PARENT_NS"
)

func TestMain(m *testing.M) {
	if hosts := os.Getenv(envWithHosts); hosts != "" {
		err := system.ExecWithHosts(hosts, os.Getenv(envParentNS), []string{"cat", "/etc/hosts"})
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// assets is the directory of the clusters' binaries: $KUBEBUILDER_ASSETS,
// else hack/kube-tools.sh's. The test is skipped without them, and with an
// etcd too old for kwok's watches, with which the story takes minutes.
func assets(t *testing.T) string {
	t.Helper()
	dirs := []string{localcluster.DefaultAssets()}
	for _, d := range dirs {
		if localcluster.Missing(d) == "" {
			if etcdOld(d) {
				t.Skipf("the etcd in %s is older than 3.4.31/3.5.13: kwok's watches fail and the story takes minutes; run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh (it builds etcd 3.6)", d)
			}
			return d
		}
	}
	t.Skipf("no kube binaries (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok) in %s: run KUBE_TOOLS_CLUSTER=1 hack/kube-tools.sh and set KUBEBUILDER_ASSETS to the directory it prints", strings.Join(dirs, " or "))
	return ""
}

func etcdOld(dir string) bool {
	out, err := exec.Command(filepath.Join(dir, "etcd"), "--version").Output()
	return err != nil || regexp.MustCompile(`etcd Version: 3\.(4\.([0-9]|[12][0-9]|30)|5\.([0-9]|1[0-2]))\b`).Match(out)
}

// demo returns the command that runs misaki-demo system with its temporary
// directory under tmp, and the context that kills it after timeout. The
// clock starts once the binaries are built: on a fresh machine, building
// them under the race detector can take longer than the story.
func demo(t *testing.T, timeout time.Duration, tmp string, args ...string) (*exec.Cmd, context.Context) {
	t.Helper()
	as := assets(t)
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	crd, err := filepath.Abs("../../../config/crd/mesh.misaki.io_routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "misaki-demo"), append([]string{"system",
		"--bin-dir", dir, "--assets", as, "--crd", crd}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.WaitDelay = 30 * time.Second
	return cmd, ctx
}

// TestSystemDemo runs the whole demo: three clusters, the hub, the agents,
// the gateway, the controller and the proxies, the story and the data
// plane's scenarios (faster), and wants every check passed, every process
// gone and the temporary directory empty.
func TestSystemDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three clusters and the whole story for about a minute and a half")
	}
	tmp := t.TempDir()
	var out bytes.Buffer
	cmd, _ := demo(t, 5*time.Minute, tmp, "--speed", "0.4")
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("the demo took %v; output:\n%s", time.Since(start).Round(time.Second), out.String())
	if err != nil {
		t.Fatalf("demo failed: %v", err)
	}
	report := out.String()
	if i := strings.LastIndex(report, "== checks =="); i < 0 {
		t.Fatal("no final checks")
	} else if s := report[i:]; strings.Contains(s, "FAIL") || !regexp.MustCompile(`all \d+ checks passed`).MatchString(s) {
		t.Errorf("not every check passed")
	}
	for _, want := range []string{
		"car-lo's uploader reached inference by its cluster DNS name through the edge proxy and the gateway",
		"car-lo converged to the newest revision when its link returned, never an intermediate one",
		"data plane, offline spool through a crash: lost == 0",
	} {
		if !strings.Contains(report, "PASS  "+want) {
			t.Errorf("no PASS for %q", want)
		}
	}
	assertGone(t, tmp)
}

// TestSystemDemoInterrupt interrupts the demo once its story has begun:
// it must stop every process it started, the clusters' included, and
// remove its temporary directory.
func TestSystemDemoInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three clusters")
	}
	tmp := t.TempDir()
	cmd, ctx := demo(t, 3*time.Minute, tmp, "--skip-mesh")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		lines   []string
		scanned sync.WaitGroup
	)
	begun := make(chan struct{})
	scanned.Go(func() {
		var once sync.Once
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "== step 1") {
				once.Do(func() { close(begun) })
			}
		}
	})
	select {
	case <-begun:
	case <-ctx.Done():
		scanned.Wait()
		t.Fatalf("the story never began:\n%s\n%s", strings.Join(lines, "\n"), stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = cmd.Wait()
	scanned.Wait()
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the demo took %v to stop", took)
	}
	if err == nil {
		t.Errorf("an interrupted demo exited 0")
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr does not say the demo was interrupted:\n%s", stderr.String())
	}
	if t.Failed() {
		t.Logf("output:\n%s", strings.Join(lines, "\n"))
	}
	assertGone(t, tmp)
}

// assertGone checks that no process runs from tmp (the demo's directory
// is under it) and that tmp is empty.
func assertGone(t *testing.T, tmp string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(tmp)) {
			t.Errorf("process %s still runs: %s", e.Name(), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in the temporary directory: %s", e.Name())
	}
}
