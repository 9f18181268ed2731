// Package depstest lists what a package links, for the tests that hold a
// binary or a shared package to what it may import (as Tailscale's
// tstest/deptest does): the sidecar without Kubernetes or SQL, the agent's
// packages without the hub, the gateway without the edge's servers.
package depstest

import (
	"os/exec"
	"strings"
	"testing"
)

// Of returns the import paths of pkgs and of every package they depend on
// (`go list -deps`), run in the test's package directory; no pkgs means
// the test's own package. It fails t when go list cannot answer: a check
// of imports that skips itself would pass with any import.
func Of(t testing.TB, pkgs ...string) []string {
	t.Helper()
	if len(pkgs) == 0 {
		pkgs = []string{"."}
	}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps %s: %v\n%s", strings.Join(pkgs, " "), err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", strings.Join(pkgs, " "), err)
	}
	return strings.Fields(string(out))
}
