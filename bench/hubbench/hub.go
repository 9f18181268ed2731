package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/misaki-io/misaki/internal/hubclient"
)

// buildHub builds cmd/misaki-hub into dir with go build and returns its
// path. The binary goes to the run's temp dir, not bin/, so a shared
// checkout's bin/misaki-hub is neither used stale nor overwritten. When
// this program was built with -race (the smoke test under make test), so
// is the hub: the build then reuses the race-built packages in the cache.
func buildHub(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "misaki-hub")
	args := []string{"build", "-o", out}
	if raceBuild() {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goTool(), append(args, "github.com/misaki-io/misaki/cmd/misaki-hub")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build misaki-hub: %v\n%s", err, b)
	}
	return out, nil
}

// raceBuild reports whether this program was built with -race.
func raceBuild() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

// moduleDir is the module's root directory (go env GOMOD's directory).
func moduleDir(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the module; run from the repository")
	}
	return filepath.Dir(mod), nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// hubProc is one misaki-hub process.
type hubProc struct {
	Name    string
	URL     string
	DataDir string
	Log     string // its stderr
	cmd     *exec.Cmd
	exited  chan error
}

// startHub runs bin with a data dir and a chosen free port, and waits
// for /readyz.
func startHub(ctx context.Context, bin, name, dataDir string, extra ...string) (*hubProc, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	h := &hubProc{Name: name, URL: "https://127.0.0.1:" + strconv.Itoa(port), DataDir: dataDir, Log: filepath.Join(dataDir, "hub.log")}
	logf, err := os.Create(h.Log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{
		"--data-dir", dataDir,
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--host", "127.0.0.1",
		"--gateway-url", "https://gateway.example.com:15443",
		"--replica", name,
	}, extra...)
	h.cmd = exec.Command(bin, args...)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a terminal's ^C goes to this program, which stops the hub itself
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	h.exited = make(chan error, 1)
	go func() { h.exited <- h.cmd.Wait() }()
	if err := h.waitReady(ctx); err != nil {
		h.Stop()
		return nil, fmt.Errorf("%s: %w\n%s", name, err, tail(h.Log, 20))
	}
	return h, nil
}

func (h *hubProc) waitReady(ctx context.Context) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/readyz", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 60s: %v", err)
		}
		select {
		case err := <-h.exited:
			h.exited <- err
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid is the hub's process ID.
func (h *hubProc) Pid() int { return h.cmd.Process.Pid }

// Stop sends SIGTERM and waits (SIGKILL after 20 s).
func (h *hubProc) Stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exited:
		h.exited <- err
	case <-time.After(20 * time.Second):
		h.cmd.Process.Kill()
		h.exited <- <-h.exited
	}
}

// freePort is a loopback port free now, for a hub to listen on.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// operator is an HTTP client with the admin token and the hub's CA.
type operator struct {
	token  string
	pool   *x509.CertPool
	caPEM  []byte
	client *http.Client
}

func newOperator(dataDir string) (*operator, error) {
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(dataDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("hub CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("hub CA: no certificate in ca.crt")
	}
	return &operator{
		token: strings.TrimSpace(string(tok)), pool: pool, caPEM: ca,
		client: &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool},
			MaxIdleConnsPerHost: 64,
		}},
	}, nil
}

// vehicle is a hubclient.Client for url on the operator's connections
// (the CA, no certificate): for what a vehicle asks before it has one.
func (o *operator) vehicle(url string) *hubclient.Client {
	return &hubclient.Client{URL: url, HTTP: o.client}
}

// do sends a JSON request with the admin token and decodes a 2xx JSON
// answer into out. It fails unless the status is want.
func (o *operator) do(ctx context.Context, want int, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+o.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", method, url, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, bytes.TrimSpace(b))
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, url, err)
		}
	}
	return nil
}

// metrics reads a hub's /metrics into "name{labels}" → value.
func (o *operator) metrics(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}
