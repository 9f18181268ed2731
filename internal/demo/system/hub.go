package system

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/misaki-io/misaki/internal/cli"
	"github.com/misaki-io/misaki/internal/demo/proc"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// hub is the running misaki-hub: its URL, the admin token and CA it wrote
// on first start, and an API client with them.
type hub struct {
	URL       string // https://127.0.0.1:port
	Addr      string // 127.0.0.1:port
	Token     string // the admin operator token
	CAFile    string
	CLIConfig string // the misaki.yaml the hub wrote
	Proc      *proc.Proc

	api *hubclient.Client // with the admin token
}

// hubFlags are the gateway settings the hub writes into the vehicles'
// Routes to cloud components.
type hubFlags struct {
	GatewayURL                             string
	GatewayCAFile, GatewayCert, GatewayKey string // paths in the vehicle proxy's working directory
}

// startHub runs misaki-hub with SQLite in dir on a free loopback port and
// waits until it serves.
func startHub(ctx context.Context, ps *proc.Group, bin, dir string, f hubFlags) (*hub, error) {
	p, err := ps.Start("hub", bin,
		"--data-dir", dir, "--listen", "127.0.0.1:0", "--host", "127.0.0.1",
		"--gateway-url", f.GatewayURL, "--gateway-ca-file", f.GatewayCAFile,
		"--gateway-cert-file", f.GatewayCert, "--gateway-key-file", f.GatewayKey)
	if err != nil {
		return nil, err
	}
	h := &hub{CLIConfig: filepath.Join(dir, "misaki.yaml"), Proc: p}
	// The hub writes misaki.yaml (its URL, the admin token, the CA) on
	// first start, before it serves.
	err = poll(ctx, 20*time.Second, p, func() error {
		b, err := os.ReadFile(h.CLIConfig)
		if err != nil {
			return err
		}
		var c cli.Config
		if err := yaml.Unmarshal(b, &c); err != nil {
			return err
		}
		if c.Hub == "" || c.Token == "" {
			return errors.New("misaki.yaml is not complete yet")
		}
		h.URL, h.Token, h.CAFile = c.Hub, c.Token, c.CAFile
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	u, err := url.Parse(h.URL)
	if err != nil {
		return nil, fmt.Errorf("hub: URL %q: %w", h.URL, err)
	}
	h.Addr = u.Host
	ca, err := os.ReadFile(h.CAFile)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	h.api = hubclient.New(h.URL, pool, nil)
	h.api.Token, h.api.HTTP.Timeout = h.Token, 10*time.Second
	err = poll(ctx, 20*time.Second, p, func() error {
		resp, err := h.api.HTTP.Get(h.URL + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	return h, nil
}

func (h *hub) get(ctx context.Context, path string, v any) error {
	return h.api.Do(ctx, http.MethodGet, path, nil, v)
}

// misaki runs the misaki CLI in this process, as an operator would in a
// shell, with the hub's misaki.yaml. The command is printed (with a $);
// its output too unless secret (tokens), and returned.
func (h *hub) misaki(ctx context.Context, con *console, secret bool, args ...string) (string, error) {
	con.printf("  $ misaki %s\n", shellJoin(args))
	var out, errb bytes.Buffer
	code := cli.Run(ctx, append([]string{"--config", h.CLIConfig}, args...), &out, &errb)
	if !secret {
		for l := range strings.Lines(out.String()) {
			con.printf("    %s", l)
		}
	}
	if code != 0 {
		return "", fmt.Errorf("misaki %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// shellJoin quotes the arguments that need it for a shell.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\()|&;<>*?[]{}!#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
