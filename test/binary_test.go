package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/depstest"
)

func TestBinaryRejectsBadConfigNamingTheField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("routes:\n  - name: r\n    hosts: [a.mesh]\n    upstrem: http://x:1\n"), 0o600)
	out, err := exec.Command(filepath.Join(binDir, "misaki-proxy"), "--config", path).CombinedOutput()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{path, "routes[0].upstrem: unknown field (line 4)", `did you mean "upstream"?`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output %q does not contain %q", out, want)
		}
	}
}

func TestBinaryCheckFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ok.yaml")
	os.WriteFile(path, []byte("routes: [{name: r, hosts: [a.mesh], upstream: \"http://x:1\"}]\n"), 0o600)
	out, err := exec.Command(filepath.Join(binDir, "misaki-proxy"), "--config", path, "--check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok (1 routes, 0 links)") {
		t.Fatalf("--check: %v %s", err, out)
	}
}

// TestEdgeImportsNoHeavyDependencies keeps the sidecar small: its binary must
// not link Kubernetes, Helm or SQL drivers (as Tailscale's deptest does).
func TestEdgeImportsNoHeavyDependencies(t *testing.T) {
	banned := []string{"k8s.io/", "sigs.k8s.io/", "helm.sh/", "database/sql", "github.com/jackc/", "github.com/lib/pq", "modernc.org/sqlite", "github.com/mattn/go-sqlite3",
		// The xDS client speaks gRPC through net/http and decodes Envoy's
		// messages with its own subsets (internal/proxy/xds explains).
		"google.golang.org/grpc", "github.com/envoyproxy/",
		// Netlink is the node link agent's (misaki-linkd); the proxy's own
		// link monitor reads it with x/sys.
		"github.com/vishvananda/"}
	for _, pkg := range depstest.Of(t, "github.com/misaki-io/misaki/cmd/misaki-proxy") {
		for _, b := range banned {
			if strings.HasPrefix(pkg, b) {
				t.Errorf("misaki-proxy depends on %s", pkg)
			}
		}
	}
}
