package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/testbin"
)

// binDir holds the binaries built once for the whole package.
var binDir string

// TestMain puts misaki-proxy and misaki-linkd in binDir: from testbin's
// cache when they were built from the same packages before (about 1 s),
// else built (a link of both took 17–18 s on the shared test VM).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "misaki-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if err := testbin.Build(dir, nil, "github.com/misaki-io/misaki/cmd/misaki-proxy", "github.com/misaki-io/misaki/cmd/misaki-linkd"); err != nil {
		fmt.Fprintln(os.Stderr, "build misaki-proxy and misaki-linkd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runningProxy is a misaki-proxy process started from a config string.
type runningProxy struct {
	cmd              *exec.Cmd
	mesh, admin, dns string
	logs             *logBuffer
}

// logBuffer collects a process's log lines; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (l *logBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProxyBinary writes cfg (which should listen on port 0) and starts the
// binary, reading the bound addresses from its "listening" log line.
func startProxyBinary(t *testing.T, cfg string, wrap ...string) *runningProxy {
	t.Helper()
	return startProxyBinaryArgs(t, cfg, wrap, nil)
}

// startProxyBinaryArgs is startProxyBinary with more arguments for the
// binary (a container's args).
func startProxyBinaryArgs(t *testing.T, cfg string, wrap, more []string) *runningProxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(append(wrap, filepath.Join(binDir, "misaki-proxy")), more...)
	if cfg != "" {
		args = append(args, "--config", path)
	} // else the wrapper sets $MISAKI_PROXY_CONFIG
	cmd := exec.Command(args[0], args[1:]...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &runningProxy{cmd: cmd, logs: &logBuffer{}}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("proxy logs:\n%s", p.logs.String())
		}
	})
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		announced := false
		for sc.Scan() {
			line := sc.Text()
			p.logs.WriteString(line + "\n")
			if announced {
				continue
			}
			var rec struct {
				Msg   string `json:"msg"`
				Mesh  string `json:"mesh"`
				Addr  string `json:"addr"` // the gateway's
				Admin string `json:"admin"`
				DNS   string `json:"dns"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				p.mesh, p.admin, p.dns = rec.Mesh, rec.Admin, rec.DNS
				if p.mesh == "" {
					p.mesh = rec.Addr
				}
				announced = true
				close(found)
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case <-found:
	case <-time.After(20 * time.Second):
		t.Fatalf("proxy did not start; logs:\n%s", p.logs.String())
	}
	return p
}
