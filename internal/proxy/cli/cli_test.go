package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --http1-server and --http1-upstream override the config's http1Server
// and http1Upstream, and are validated as they are.
func TestHTTP1Flags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte("http1Server: lean\nhttp1Upstream: lean\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ flag, value, err string }{
		{"--http1-server", "stdlib", ""},
		{"--http1-server", "lean", ""},
		{"--http1-server", "nginx", `--http1-server: http1Server: "nginx" is not an HTTP/1.1 server; use lean or stdlib`},
		{"--http1-upstream", "stdlib", ""},
		{"--http1-upstream", "lean", ""},
		{"--http1-upstream", "curl", `--http1-upstream: http1Upstream: "curl" is not an HTTP/1.1 client; use lean or stdlib`},
	} {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Run(context.Background(), []string{"--config", path, tc.flag, tc.value, "--check"}, &out, &errOut)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("got %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %v, want %q", err, tc.err)
			}
		})
	}
}

// The supervisor starts the proxy with its own arguments, less --supervise.
func TestWithoutSupervise(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"--supervise --config a.yaml", "--config a.yaml"},
		{"-config a.yaml -supervise", "-config a.yaml"},
		{"--supervise=true --log-format text", "--log-format text"},
		{"--config a.yaml -- --supervise", "--config a.yaml -- --supervise"},
		{"--config supervise", "--config supervise"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := strings.Join(withoutSupervise(strings.Fields(tc.in)), " "); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// xds.node defaults to $POD_NAMESPACE/$POD_NAME, which the injected
// sidecar sets; a node in the file wins, and without either the config is
// refused, naming the variables.
func TestXDSNodeFromEnv(t *testing.T) {
	const base = "spool: {dir: /tmp/x}\nxds: {server: \"127.0.0.1:1\""
	for _, tc := range []struct {
		name, xds, pod, ns, err string
	}{
		{"from the environment", "}", "p1", "apps", ""},
		// The environment alone would give "/p1", which is refused: only
		// the file's node can make this pass.
		{"from the file", ", node: apps/p2}", "p1", "", ""},
		{"pod without namespace", "}", "p1", "", `xds.node: "/p1" is not namespace/pod; set it, or POD_NAMESPACE and POD_NAME`},
		{"neither", "}", "", "apps", `xds.node: "" is not namespace/pod; set it, or POD_NAMESPACE and POD_NAME`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(PodNameEnv, tc.pod)
			t.Setenv(PodNamespaceEnv, tc.ns)
			t.Setenv(ConfigEnv, base+tc.xds+"\n")
			var out, errOut bytes.Buffer
			err := Run(context.Background(), []string{"--check"}, &out, &errOut)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("got %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %v, want %q", err, tc.err)
			}
		})
	}
}

// --version names the program it runs as: misaki-gateway is the same
// program under its own name.
func TestVersionNamesTheProgram(t *testing.T) {
	for _, program := range []string{"misaki-proxy", "misaki-gateway"} {
		var out, errOut strings.Builder
		if err := RunAs(context.Background(), program, []string{"--version"}, &out, &errOut); err != nil {
			t.Fatalf("%s --version: %v", program, err)
		}
		if got, want := out.String(), program+" "+Version+"\n"; got != want {
			t.Errorf("%s --version printed %q, want %q", program, got, want)
		}
	}
}

// --check refuses what the start would: misaki-proxy links no PostgreSQL,
// so a gateway on the shared store is not ok here (misaki-gateway's test
// binary links it).
func TestCheckRefusesTheSharedStoreWithoutIt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	yaml := "role: gateway\ngateway:\n  tls: {certFile: c.pem, keyFile: k.pem, clientCAFile: ca.pem}\n  idempotency: {postgres: {dsn: \"postgres://gw@db/keys\"}}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := Run(context.Background(), []string{"--config", path, "--check"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "misaki-gateway") {
		t.Fatalf("--check: %v (printed %q), want the error that names misaki-gateway", err, out.String())
	}
	local := strings.Replace(yaml, `{postgres: {dsn: "postgres://gw@db/keys"}}`, "{dir: "+dir+"}", 1)
	if err := os.WriteFile(path, []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), []string{"--config", path, "--check"}, &out, &errOut); err != nil {
		t.Fatalf("--check of a local store: %v", err)
	}
}
